"""QAT on a preset's own topology: do the learned ranges reach the converted int8 graph?

    .venv/bin/python -m mobilebert_mobile.benchmarks.qat_preset [--preset mobilebert-relu6] [--steps 40]
        [--out benchmarks/results/int8]

No MobileBERT weights ship offline, so the model is the preset at random init with trained-like
norms and biases (as bench-host builds it), QAT-fine-tuned for a few steps on Rotten Tomatoes. The
point is the mechanism on the real topology (24 layers, ReLU6 fused into FULLY_CONNECTED, the
original QAT variant), not accuracy: how many QAT points find their tensor in the converted
graph, whether the int8 model stays one XNNPACK partition with no fallback, and how far its
probabilities are from its own float model's (label agreement of a barely trained model says
little, so the max abs difference is reported beside it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from mobilebert_mobile.converters.quantize import DEFAULT_FLOAT_OPS  # float inside the one partition


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mobilebert-relu6")
    ap.add_argument("--layers", type=int, help="override the preset's layer count")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--observe-steps", type=int, default=10)
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "int8"))
    args = ap.parse_args(argv)

    import torch

    from mobilebert_mobile import demo
    from .charts import save  # STEM.md (linking the chart), STEM.json and STEM.png
    from mobilebert_mobile._machine import describe, machine
    from mobilebert_mobile.converters import verify
    from mobilebert_mobile.converters.pipeline import convert
    from mobilebert_mobile.converters.tflite import run_tflite
    from mobilebert_mobile.distill import finetune
    from mobilebert_mobile.distill.data import LabelledData
    from mobilebert_mobile.distill.api import predict_logits
    from mobilebert_mobile.tokenizer import Tokenizer

    from .host import build_checkpoint

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    train, test = demo.split_rotten_tomatoes()
    texts = [t for t, _ in test[:args.held_out]]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ck = build_checkpoint(args.preset, args.layers, os.path.join(tmp, "init"))
        data = LabelledData([t for t, _ in train], [y for _, y in train], None, ["negative", "positive"])
        s = finetune(ck, None, os.path.join(tmp, "qat"), data=data, steps=args.steps, lr=5e-5, seq_len=64,
                     batch_size=32, progress=False, qat=True, qat_observe_steps=args.observe_steps)
        qat_s = time.time() - t0
        # the learned ranges imposed (as --ranges-from does): what is measured is whether they reach the graph,
        # so they must not lose to calibration the way convert's automatic choice may let them
        rep = convert(s["model"], os.path.join(tmp, "bundle"), precisions=("int8",), seq_len=128, quiet=True,
                      include_checkpoint=False, metadata=False, ranges_from=s["model"])
        st = next(x for x in rep["stages"] if x.get("precision") == "int8")
        feeds = Tokenizer.from_file(os.path.join(s["model"], "vocab.txt"), max_length=128)(texts).model_inputs()
        ref = torch.softmax(predict_logits(s["model"], texts, seq_len=128), -1).numpy()
        got = run_tflite(os.path.join(tmp, "bundle", st["file"]), feeds)["probabilities"]
    cal, fb, inv = st["calibration"], st["fallback"], st["inventory"]
    fid = verify.compare("classification", {"probabilities": got}, {"probabilities": ref})  # as the converter scores
    row = {"preset": args.preset, "layers": args.layers, "qat_steps": args.steps, "qat_s": round(qat_s, 1),
           "points": cal.get("points"), "points_matched": cal.get("points_matched"), "source": cal.get("source"),
           "fused": inv.get("fused_activations"), "standalone_activations": inv.get("standalone_activations"),
           "xnnpack_partitions": (st.get("xnnpack") or {}).get("partitions"),
           "float_fallback": [o for o in fb.get("float_ops", []) if o not in DEFAULT_FLOAT_OPS]
           + fb.get("float_layers", []),
           **{k: fid[k] for k in ("label_agreement", "near_ties", "decided_label_agreement", "max_abs_diff")},
           "conversion_s": rep.get("total_time_s")}
    m = machine()
    doc = {"command": "python -m mobilebert_mobile.benchmarks.qat_preset " + " ".join(argv or sys.argv[1:]),
           "machine": m, **row, "wall_s": round(time.time() - t0, 1)}
    lines = [f"# QAT on the {args.preset} preset's topology (issue 11)", "",
             f"{describe(m)} Random init with trained-like norms, QAT-fine-tuned {args.steps} steps on Rotten Tomatoes "
             f"(ranges observed {args.observe_steps} steps; {row['qat_s']} s), converted to int8 with the learned "
             f"ranges imposed (`ranges_from`, {row['conversion_s']} s), compared with its own float model on {len(texts)} held-out "
             f"sentences. Command: `{doc['command']}`", "",
             "| QAT points matched | fused activations | standalone activations | XNNPACK partitions | float fallback "
             "| label agreement | max abs diff (probabilities) |", "|---|---|---|---:|---|---:|---:|",
             f"| {row['points_matched']}/{row['points']} ({row['source']}) | {row['fused']} | "
             f"{row['standalone_activations'] or 'none'} | {row['xnnpack_partitions']} | "
             f"{', '.join(row['float_fallback']) or 'none'} | {row['label_agreement']:.3f} | {row['max_abs_diff']:.4f} |"]
    save(args.out, f"qat_preset_{args.preset}", "\n".join(lines) + "\n", doc)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
