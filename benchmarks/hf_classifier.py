"""A MobileBERT classifier made and fine-tuned by transformers, converted by us: is int8 faithful?

    .venv/bin/python -m mobilebert_mobile.benchmarks.hf_classifier [--epochs 1] [--lr 3e-4] [--base distilled|finetuned]
        [--out benchmarks/results/int8]

No MobileBERT weights ship offline (offline-assets.md), so the start is the default model's
distilled student (real weights: all-MiniLM-L6-v2 distilled into a NoNorm/ReLU bottleneck
student) under a fresh classifier head, or with ``--base finetuned`` the default model's float
classifier; everything after that is transformers' own code, as a user of transformers would do it:

1. ``transformers.MobileBertForSequenceClassification.from_pretrained(start, num_labels=2,
   id2label=...)``, fine-tuned on the Rotten Tomatoes training sentences with a plain
   ``torch.optim.AdamW`` loop over transformers' forward and loss (warm-up, linear decay,
   clipping), tokenized by transformers' ``AutoTokenizer`` from the folder's vocabulary;
2. ``save_pretrained`` (safetensors, transformers' config.json) plus the tokenizer files;
3. our ``convert`` of that folder: dynamic-int8, int8 (calibrated, no learned ranges: this model
   has none) and int8-full; no layer-level float fallback is allowed to hide a miss (the table
   lists anything kept float besides attention's BATCH_MATMUL/SOFTMAX);
4. the 1,000 held-out sentences: accuracy and label agreement of every .tflite with the
   transformers model's own float labels (transformers forward at seq 128); latency interleaved.

Writes ``OUT/hf_classifier.md`` / ``.json``. The fine-tuned model is cached (its settings in
record.json) under the cache directory, so a rerun only converts and scores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _hf_finetune(base: str, out: str, train: list, *, epochs: float, lr: float, batch: int, seq_len: int,
                 seed: int, log) -> float:
    import torch
    from transformers import AutoTokenizer, MobileBertForSequenceClassification

    torch.manual_seed(seed)
    # AutoTokenizer from the folder's vocab.txt (transformers 5 ignores BertTokenizerFast(vocab_file=...) and
    # builds a 4-token vocabulary: every word became [UNK] and the loss stayed at 0.69)
    tok = AutoTokenizer.from_pretrained(base)
    model = MobileBertForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    steps = max(1, int(epochs * len(train) / batch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) *
                                              max(0.0, (steps - s) / steps))
    order = rng.permutation(len(train))
    t0 = time.time()
    for step in range(steps):
        if (step * batch) % len(train) + batch > len(train):
            order = rng.permutation(len(train))
        i = (step * batch) % len(train)
        idx = order[i:i + batch]
        enc = tok([train[j][0] for j in idx], padding=True, truncation=True, max_length=seq_len,
                  return_tensors="pt")
        res = model(**enc, labels=torch.tensor([train[j][1] for j in idx]))
        res.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            log(f"  transformers fine-tuning step {step + 1}/{steps}: loss {res.loss.item():.4f}")
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return time.time() - t0


def _hf_probs(model_dir: str, texts: list[str]) -> np.ndarray:
    """transformers' own class probabilities (its tokenizer, its model), seq 128."""
    import torch
    from transformers import AutoTokenizer, MobileBertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = MobileBertForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), 64):
            enc = tok(texts[s:s + 64], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits, -1).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=1.0, help="transformers fine-tuning epochs")
    ap.add_argument("--lr", type=float, default=3e-4, help="as the default model's own fine-tuning")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", choices=("distilled", "finetuned"), default="distilled",
                    help="start from the default model's distilled backbone under a fresh head (default) or from "
                         "its float classifier (head kept)")
    ap.add_argument("--precision", default="dynamic-int8,int8,int8-full")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per model and round")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "int8"))
    args = ap.parse_args(argv)
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())

    import torch

    from mobilebert_mobile import assets, demo
    from .charts import save  # STEM.md (linking the chart), STEM.json and STEM.png
    from mobilebert_mobile._machine import describe, machine
    from mobilebert_mobile.tokenizer import Tokenizer

    from ._int8_eval import convert_and_score, table, time_interleaved

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    log = lambda s: print(s, flush=True)  # noqa: E731
    rec = demo.build(say=log, progress=False)
    if args.base == "distilled":  # (a record from before this key: beside the fine-tuned model)
        base = rec.get("distilled_model") or os.path.join(os.path.dirname(os.path.dirname(rec["float_model"])),
                                                          "distill", "model")
    else:
        base = rec["float_model"]
    train, test = demo.split_rotten_tomatoes()
    settings = {"epochs": args.epochs, "lr": args.lr, "batch": args.batch, "seed": args.seed, "base": base,
                "start": args.base,
                "seq_len": 64}
    work = assets.cache_dir("hf-classifier")
    model_dir = os.path.join(work, "model")
    rec_path = os.path.join(work, "record.json")
    t0 = time.time()
    cached = os.path.isfile(rec_path) and json.load(open(rec_path)).get("settings") == settings
    if not cached:
        log(f"fine-tuning transformers' MobileBertForSequenceClassification from {base} "
            f"({args.epochs} epoch(s), lr {args.lr}) ...")
        secs = _hf_finetune(base, model_dir, train, epochs=args.epochs, lr=args.lr, batch=args.batch, seq_len=64,
                            seed=args.seed, log=log)
        with open(rec_path, "w") as fh:
            json.dump({"settings": settings, "seconds": round(secs, 1)}, fh)
    hrec = json.load(open(rec_path))
    texts, gold = [t for t, _ in test], np.array([y for _, y in test])
    float_probs = _hf_probs(model_dir, texts)
    float_labels = float_probs.argmax(-1)
    # transformers 5 saves tokenizer.json, no vocab.txt
    feeds = Tokenizer.from_file(model_dir, max_length=128)(texts).model_inputs()
    rows = [{"model": "transformers fine-tuned", "precision": "float (transformers)",
             "accuracy": float(np.mean(float_labels == gold)), "agreement": 1.0}]
    with tempfile.TemporaryDirectory() as tmp:
        got, paths = convert_and_score("transformers fine-tuned", model_dir, precisions, feeds, gold, float_probs,
                                       tmp, log=log)
        rows += got
        lat = time_interleaved(paths, args.runs)
    for r in rows:
        r["median_ms"] = lat.get(f"{r['model']} {r['precision']}")
    m = machine()
    doc = {"command": "python -m mobilebert_mobile.benchmarks.hf_classifier " + " ".join(argv or sys.argv[1:]),
           "machine": m, "settings": settings, "finetune_seconds": hrec.get("seconds"), "held_out": len(texts),
           "rows": rows, "load_average": os.getloadavg(), "wall_s": round(time.time() - t0, 1)}
    lines = ["# A transformers-made fine-tuned MobileBERT classifier, converted to int8 (issue 11)", "",
             f"{describe(m)} Load average at the end {doc['load_average'][0]:.1f} (latencies: interleaved "
             f"medians, 2 threads, XNNPACK). Model: transformers' MobileBertForSequenceClassification from the "
             f"default model's {'distilled student' if args.base == 'distilled' else 'float classifier'}, "
             f"fine-tuned by transformers for {args.epochs} epoch(s) (lr "
             f"{args.lr}, batch {args.batch}, seq 64; {hrec.get('seconds')} s) and saved with save_pretrained. "
             f"Held-out: the 1,000 Rotten Tomatoes sentences at seq 128; 'agreement' is label agreement with "
             f"the transformers model's own float labels. Command: `{doc['command']}`", "", *table(rows)]
    save(args.out, "hf_classifier", "\n".join(lines) + "\n", doc)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
