"""Convert every preset (random weights) at every precision and print one table.

    .venv/bin/python -m mobilebert_mobile.benchmarks.convert_presets [--layers N] [--out DIR]

A documented command, not a test (the full run takes tens of minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="mobilebert,mobilebert-tiny,mobilebert-no-opt,mobilebert-relu6,"
                                         "all-MiniLM-L6-v2,ib-bert-teacher",
                    help="preset names; all-MiniLM-L6-v2 is the real checkpoint (embedding task)")
    ap.add_argument("--precision", default="all")
    ap.add_argument("--layers", type=int, help="override the layer count (default: the preset's)")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "presets"))
    args = ap.parse_args(argv)
    from mobilebert_mobile.converters import convert

    from .host import build_checkpoint

    os.makedirs(args.out, exist_ok=True)
    rows = []
    jsonl = os.path.join(args.out, "presets.jsonl")
    for preset in args.presets.split(","):
        work = os.path.join(args.out, "work", preset)
        t = time.perf_counter()
        try:
            if preset == "all-MiniLM-L6-v2":
                from mobilebert_mobile import assets
                ck, task = assets.minilm_dir(), "embedding"
            else:
                ck, task = build_checkpoint(preset, args.layers, os.path.join(work, "checkpoint")), None
            rep = convert(ck, os.path.join(work, "bundle"), task=task, precisions=args.precision,
                          include_checkpoint=False, metadata=False, calibration_size=64, heldout_size=64)
        except Exception as e:  # report and go on with the next preset
            rows.append({"preset": preset, "error": f"{type(e).__name__}: {e}"})
            continue
        for s in rep["stages"]:
            if s["stage"].startswith("tflite"):
                row = {"preset": preset, "precision": s["precision"], "size_mb": s["size_mb"],
                       "max_rel_diff": s["max_rel_diff"], "metric": rep["target"]["metric"],
                       "score": s.get(rep["target"]["metric"]),
                       "meets_target": s["meets_target"], "partitions": s["xnnpack"].get("partitions"),
                       "ops_outside": s["xnnpack"].get("ops_outside_xnnpack"),
                       "ms": s["latency_ms_median_2threads"], "conversion_s": rep["total_time_s"]}
                rows.append(row)
                with open(jsonl, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        print(f"{preset}: converted in {time.perf_counter() - t:.0f}s", flush=True)
    lines = ["| preset | precision | size MB | max rel diff | agreement (label / cosine) | target met | partitions | "
             "ops outside | ms (2 thr) | conversion s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | error: {r['error'][:100]} | | | | | | | | |")
        else:
            lines.append(f"| {r['preset']} | {r['precision']} | {r['size_mb']} | {r['max_rel_diff']:.2g} | "
                         f"{r['score']:.3f} | {r['meets_target']} | {r['partitions']} | {r['ops_outside']} | "
                         f"{r['ms']} | {r['conversion_s']} |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "presets.md"), "w", encoding="utf-8") as fh:
        fh.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
