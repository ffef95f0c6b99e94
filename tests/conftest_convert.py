"""Small checkpoints for converter tests (random weights, perturbed norms so folds are not identities)."""
import torch

from mobilebert_mobile import MobileBertConfig
from mobilebert_mobile.modeling.loading import task_model_class


def make_checkpoint(path, preset="mobilebert", task="classification", layers=2, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = MobileBertConfig.from_preset(preset, num_hidden_layers=layers, **overrides)
    if task == "classification":
        cfg = cfg.with_labels(["negative", "positive"])
    cls = task_model_class(task)
    model = cls(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n or n.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(path)
    return path
