"""Peer: litert-torch's direct PyTorch -> TFLite conversion of our classifier (fp32 and dynamic int8).

Runs inside the peers venv (``bash scripts/setup.sh peers``), called by bench-host as
``.venv-peers/bin/python benchmarks/litert_torch_export.py CKPT OUT SEQ BATCH`` with the repository
on PYTHONPATH. Same contract as ours: int32 inputs, softmax probabilities out.
"""
from __future__ import annotations

import os
import sys


def main(checkpoint: str, out_dir: str, seq_len: int, batch: int) -> None:
    import litert_torch
    import torch
    from litert_torch.generative.quantize import quant_recipes

    from mobilebert_mobile.modeling import MobileBertForSequenceClassification

    model = MobileBertForSequenceClassification.from_pretrained(checkpoint, attention_mask_value=-100.0).eval()

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            logits = self.model(input_ids.long(), attention_mask, token_type_ids.long()).logits
            return torch.softmax(logits, dim=-1)

    args = tuple(torch.ones(batch, seq_len, dtype=torch.int32) for _ in range(3))
    module = Probabilities().eval()
    os.makedirs(out_dir, exist_ok=True)
    litert_torch.convert(module, args).export(os.path.join(out_dir, "litert_torch_fp32.tflite"))
    litert_torch.convert(module, args, quant_config=quant_recipes.full_dynamic_recipe()).export(
        os.path.join(out_dir, "litert_torch_dynamic_int8.tflite"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
