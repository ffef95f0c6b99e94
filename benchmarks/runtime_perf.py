"""Predictor overheads for a bundle: tokenization + pre/post-processing vs inference, load time, first
call, peak RSS, and throughput on 256 real sentences per backend. Each backend runs in its own process.

    .venv/bin/python -m mobilebert_mobile.benchmarks.runtime_perf BUNDLE [--threads 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from mobilebert_mobile._io import atomic_write_text

def child(path: str, backend: str, model: str | None, threads: int, n: int) -> dict:
    """Runs in its own process (``--child``), so each backend's load time and peak RSS are its own."""
    import numpy as np

    t0 = time.perf_counter()
    from mobilebert_mobile import Predictor, assets

    p = Predictor.load(path, backend=backend, num_threads=threads, model=model)
    load_s = time.perf_counter() - t0
    texts = assets.sample_sentences(n, offset=3000)
    t = time.perf_counter()
    p.predict(texts[:1])
    first_s = time.perf_counter() - t
    tok_t, run_t, all_t = [], [], []  # per sentence: tokenization, the model call alone, predict() whole
    for s in texts[:64]:
        a = time.perf_counter()
        feeds = p.encode([s])
        b = time.perf_counter()
        p.run(feeds)
        c = time.perf_counter()
        p.predict([s])
        d = time.perf_counter()
        tok_t.append(b - a)
        run_t.append(c - b)
        all_t.append(d - c)
    t = time.perf_counter()
    p.predict(texts)
    batch_s = time.perf_counter() - t
    rss = 0
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) * 1024
    run_med, all_med = float(np.median(run_t)), float(np.median(all_t))
    return {"backend": backend, "load_s": load_s, "first_call_s": first_s,
            "tokenize_ms": float(np.median(tok_t)) * 1e3, "inference_ms": run_med * 1e3, "predict_ms": all_med * 1e3,
            "overhead_share": (all_med - run_med) / run_med, "throughput_per_s": n / batch_s, "batch": n,
            "peak_rss_mb": rss / 2**20}


def measure(bundle: str, backend: str, model: str | None, threads: int, n: int) -> dict:
    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.benchmarks.runtime_perf", "--child", bundle,
                        backend, model or "", str(threads), str(n)], capture_output=True, text=True, timeout=1800)
    for line in r.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"backend": backend, "error": (r.stderr.strip().splitlines() or ["no output"])[-1]}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        path, backend, model, threads, n = argv[1:6]
        print("@@" + json.dumps(child(path, backend, model or None, int(threads), int(n))), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "runtime"))
    args = ap.parse_args(argv)
    from mobilebert_mobile.bundle import read_bundle

    b = read_bundle(args.bundle)
    runs = [("litert", m) for m in b.tflite_models()] + [("onnxruntime", None), ("torch", None)]
    rows = []
    for backend, model in runs:
        r = measure(args.bundle, backend, model, args.threads, args.sentences)
        r["model"] = model or ("model.onnx" if backend == "onnxruntime" else "checkpoint")
        path = b.model_path(model) if backend == "litert" else (b.path("model.onnx") if backend == "onnxruntime"
                                                                 else b.path("checkpoint/model.safetensors"))
        r["model_mb"] = os.path.getsize(path) / 2**20 if os.path.isfile(path) else None
        rows.append(r)
        print(json.dumps(r), flush=True)
    lines = [f"# Predictor overheads: {b.task} bundle, seq {b.max_seq_length}, {args.threads} threads", "",
             "| backend | model | model MB | load s | first call s | tokenize ms | inference ms | predict ms | "
             "overhead vs inference | peak RSS MB | RSS - model MB | sentences/s (batch of %d) |" % args.sentences,
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['model']} | error: {r['error'][:80]} | | | | | | | | | |")
            continue
        lines.append(f"| {r['backend']} | {r['model']} | {r['model_mb']:.1f} | {r['load_s']:.2f} | "
                     f"{r['first_call_s']:.3f} | {r['tokenize_ms']:.3f} | {r['inference_ms']:.2f} | "
                     f"{r['predict_ms']:.2f} | {r['overhead_share']:.1%} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] - r['model_mb']:.0f} | {r['throughput_per_s']:.1f} |")
    table = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, "runtime.md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
