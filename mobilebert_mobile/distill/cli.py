"""``distill`` and ``finetune`` subcommands (torch is imported only when they run).

Data parallel: the same command runs under torchrun, e.g.
    torchrun --nproc_per_node 2 "$(command -v mobilebert-mobile)" distill --teacher T --corpus C --out D
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def register(sub) -> None:
    s = sub.add_parser("distill", help="layer-wise + pre-training distillation of a MobileBERT student",
                       description="Distill a teacher (checkpoint dir: our family or BERT layout, or a preset) "
                                   "into a MobileBERT student on a text corpus, the paper's way. Runs unchanged "
                                   "under torchrun (DistributedDataParallel).")
    s.add_argument("--teacher", required=True, help="teacher checkpoint directory or preset (e.g. ib-bert-teacher)")
    s.add_argument("--corpus", required=True, nargs="+", help=".txt (one text per line), .csv/.tsv or .jsonl files")
    s.add_argument("--text-column", help="text column of CSV/TSV/JSONL corpora (default: text/sentence/...)")
    s.add_argument("--out", required=True, help="output directory (model/, state.pt, metrics.jsonl)")
    s.add_argument("--student", help="student preset, config/checkpoint directory (default: matched to the teacher)")
    s.add_argument("--strategy", default="progressive", choices=["auxiliary", "joint", "progressive"])
    s.add_argument("--steps", type=int, default=1000, help="total steps (all stages)")
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--batch-size", type=int, default=32, help="global batch (split over processes)")
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--optimizer", default="lamb", choices=["lamb", "adamw"])
    s.add_argument("--mapping", action="store_true", help="learned linear maps when widths/layers/heads differ")
    s.add_argument("--lower", default="freeze", choices=["freeze", "reduced"],
                   help="progressive: lower layers frozen or at --lower-rate")
    s.add_argument("--lower-rate", type=float, default=0.1)
    s.add_argument("--current-rate", type=float, default=1.0,
                   help="progressive: learning-rate multiplier of the layer being trained (original code: 3)")
    s.add_argument("--freeze-embeddings", action="store_true")
    s.add_argument("--no-copy", action="store_true", help="do not copy/initialise embeddings from the teacher")
    s.add_argument("--alpha", type=float, default=0.5, help="MLM target: alpha one-hot + (1 - alpha) teacher")
    s.add_argument("--sop", action="store_true", help="add the sentence-order objective")
    s.add_argument("--mean-var", type=float, default=0.0, help="weight of mean/variance matching (0 = off)")
    s.add_argument("--qk-init", default="teacher", choices=["teacher", "scaled", "random"],
                   help="start each layer's Q/K from a least-squares fit to the teacher's attention scores "
                        "(default), at the teacher's scale only, or random (std 0.02)")
    s.add_argument("--fm-weight", type=float, default=100.0, help="feature-map weight (divided by the layers)")
    s.add_argument("--at-weight", type=float, default=1.0, help="attention-transfer weight (divided by the layers)")
    s.add_argument("--no-keep-attention", action="store_true",
                   help="joint/progressive: drop the attention term in the final pre-training distillation stage "
                        "(the paper's plain stage; it undoes the transferred attention, see the README)")
    s.add_argument("--save-every", type=int, default=0)
    s.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"],
                   help="mixed precision: auto = bf16 on a GPU that supports it, off on CPU")
    s.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_distill)

    s = sub.add_parser("finetune", help="fine-tune a checkpoint for classification or QA (optionally distilled)",
                       description="Fine-tune on GLUE-style CSV/TSV/JSONL (text[, text_pair], label) or SQuAD-style "
                                   "rows (question, context, answer_text, answer_start).")
    s.add_argument("checkpoint", help="checkpoint directory (our family or BERT layout)")
    s.add_argument("--train", required=True, help="training file")
    s.add_argument("--eval", help="held-out file: accuracy (classification) or exact match / F1 (qa)")
    s.add_argument("--out", required=True)
    s.add_argument("--task", default="classification", choices=["classification", "qa"])
    s.add_argument("--teacher", help="fine-tuned teacher checkpoint for task distillation")
    s.add_argument("--labels", help="comma-separated label names (default: the sorted labels of --train)")
    s.add_argument("--text-column"), s.add_argument("--pair-column"), s.add_argument("--label-column")
    s.add_argument("--epochs", type=float, default=2.0)
    s.add_argument("--steps", type=int, help="overrides --epochs")
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--optimizer", default="adamw", choices=["adamw", "lamb"])
    s.add_argument("--alpha", type=float, default=0.5, help="weight of the true labels vs the teacher")
    s.add_argument("--temperature", type=float, default=2.0)
    s.add_argument("--save-every", type=int, default=0)
    s.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    s.add_argument("--qat", action="store_true",
                   help="quantization-aware: fake-quant where TFLite int8 quantizes; writes model/qat_ranges.json, "
                        "which convert then uses instead of calibrating")
    s.add_argument("--qat-observe-steps", type=int, default=100,
                   help="steps that only observe activation ranges before the fake-quant is switched on")
    s.add_argument("--resume", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_finetune)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_distill(args: argparse.Namespace) -> int:
    from .api import distill
    from .data import DataError, read_texts
    from .teachers import DistillError
    from .trainer import TrainError

    try:
        texts = []
        for f in args.corpus:
            texts += read_texts(f, args.text_column)
        summary = distill(args.teacher, texts, args.out, strategy=args.strategy, steps=args.steps,
                          student=args.student, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr,
                          optimizer=args.optimizer, mapping=args.mapping, copy_embeddings=not args.no_copy,
                          resume=args.resume, save_every=args.save_every, seed=args.seed, lower=args.lower,
                          lower_rate=args.lower_rate, freeze_embeddings=args.freeze_embeddings, alpha=args.alpha,
                          sop=args.sop, mv_weight=args.mean_var, qk_init=args.qk_init,
                          fm_weight=args.fm_weight, at_weight=args.at_weight, current_rate=args.current_rate, amp=args.amp,
                          keep_attention=not args.no_keep_attention)
    except (DataError, DistillError, TrainError, ValueError, OSError) as e:
        return _fail(str(e))
    _report(summary, args.json, f"student written to {summary['model']} ({summary['steps']} steps, "
                                f"{summary['seconds']} s)")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .api import evaluate, evaluate_qa, finetune
    from .data import DataError, read_labelled, read_qa
    from .teachers import DistillError
    from .trainer import TrainError

    try:
        labels = args.labels.split(",") if args.labels else None
        summary = finetune(args.checkpoint, args.train, args.out, task=args.task, teacher=args.teacher,
                           steps=args.steps, epochs=args.epochs, seq_len=args.seq_len, batch_size=args.batch_size,
                           lr=args.lr, optimizer=args.optimizer, alpha=args.alpha, temperature=args.temperature,
                           label_names=labels, resume=args.resume, save_every=args.save_every, seed=args.seed,
                           text_column=args.text_column, pair_column=args.pair_column,
                           label_column=args.label_column, amp=args.amp, qat=args.qat,
                           qat_observe_steps=args.qat_observe_steps)
        if args.eval and args.task == "classification":
            ev = read_labelled(args.eval, text_column=args.text_column, pair_column=args.pair_column,
                               label_column=args.label_column, label_names=summary["labels"])
            res = evaluate(summary["model"], ev.texts, ev.labels, seq_len=args.seq_len)
            summary["eval"] = {"accuracy": res["accuracy"], "n": res["n"]}
        elif args.eval:
            res = evaluate_qa(summary["model"], read_qa(args.eval), seq_len=args.seq_len)
            summary["eval"] = {"exact_match": res["exact_match"], "f1": res["f1"], "n": res["n"]}
    except (DataError, DistillError, TrainError, ValueError, OSError) as e:
        return _fail(str(e))
    msg = f"model written to {summary['model']} ({summary['steps']} steps, {summary['seconds']} s)"
    if "eval" in summary and "accuracy" in summary["eval"]:
        msg += f"; accuracy {summary['eval']['accuracy']:.4f} on {summary['eval']['n']} examples"
    elif "eval" in summary:
        msg += (f"; exact match {summary['eval']['exact_match']:.4f}, F1 {summary['eval']['f1']:.4f} on "
                f"{summary['eval']['n']} examples")
    _report(summary, args.json, msg)
    return 0


def _report(summary: dict, as_json: bool, msg: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(msg)
