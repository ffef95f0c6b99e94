"""``mobilebert-mobile convert``: registered by mobilebert_mobile.cli (imports nothing heavy at load)."""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    s = sub.add_parser("convert", help="checkpoint -> verified ONNX + TFLite bundle",
                       description="Convert a checkpoint directory (MobileBERT or BERT layout, transformers files) "
                                   "into a verified bundle: model.onnx, model_<precision>.tflite, vocab, labels, "
                                   "report.json and bundle.json.")
    s.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    s.add_argument("--out", required=True, help="output bundle directory (new or empty; see --force)")
    s.add_argument("--force", action="store_true", help="replace the earlier bundle in a non-empty --out (whole: "
                                                        "no stale files are left)")
    s.add_argument("--task", choices=["classification", "embedding", "qa", "mlm"],
                   help="head to export (default: from the checkpoint's architecture)")
    s.add_argument("--precision", default="fp32,int8",
                   help="comma-separated: fp32, fp16, dynamic-int8, int8, int16x8, or 'all' (default fp32,int8)")
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--batch-size", type=int, default=1)
    s.add_argument("--calibration", help="real text: .txt (one per line, TAB for pairs), .csv/.tsv with a "
                                         "'text' column (+ 'text_pair'), or .jsonl (default: Rotten Tomatoes sample)")
    s.add_argument("--calibration-size", type=int, default=100, help="texts used to calibrate int8")
    s.add_argument("--heldout-size", type=int, default=100, help="held-out texts used to verify every stage")
    s.add_argument("--target", type=float, help="accuracy target of quantized models (default: 0.99 label "
                                                "agreement / mean cosine)")
    s.add_argument("--outputs", help="comma-separated output names (e.g. probabilities,logits)")
    s.add_argument("--mask-value", type=float, default=-100.0, help="attention-mask fill value (int8-safe)")
    s.add_argument("--vocab", help="vocab.txt / tokenizer.json (default: the checkpoint's, else BERT uncased)")
    s.add_argument("--cased", action="store_true", help="do not lower-case (cased vocabularies)")
    s.add_argument("--labels", help="comma-separated label names (default: the config's id2label)")
    s.add_argument("--no-checkpoint", action="store_true", help="do not copy the checkpoint into the bundle")
    s.add_argument("--no-metadata", action="store_true", help="do not attach MediaPipe metadata")
    s.add_argument("--ranges-from", metavar="CKPT",
                   help="int8 activation ranges learned by QAT (finetune --qat): a checkpoint folder or its "
                        "qat_ranges.json (default: the checkpoint's own, when it has one)")
    s.add_argument("--calibrate", action="store_true",
                   help="calibrate int8 ranges even when the checkpoint carries QAT ranges")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .pipeline import convert, summary_markdown

    precisions = "all" if args.precision == "all" else tuple(p.strip() for p in args.precision.split(",") if p.strip())
    report = convert(
        args.checkpoint, args.out, task=args.task, precisions=precisions, seq_len=args.seq_len,
        batch_size=args.batch_size, calibration=args.calibration, calibration_size=args.calibration_size,
        heldout_size=args.heldout_size, outputs=tuple(args.outputs.split(",")) if args.outputs else None,
        target=args.target, mask_value=args.mask_value, vocab=args.vocab, lowercase=False if args.cased else None,
        labels=args.labels.split(",") if args.labels else None, include_checkpoint=not args.no_checkpoint,
        metadata=not args.no_metadata, quiet=args.quiet or args.json, force=args.force,
        ranges_from=args.ranges_from, learned_ranges=not args.calibrate)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(summary_markdown(report))
        print(f"bundle written to {args.out}")
    return 0
