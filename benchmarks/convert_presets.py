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
    ap.add_argument("--table-only", action="store_true", help="rewrite OUT/presets.md from OUT/presets.jsonl")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of other presets already in OUT/presets.jsonl (re-run only these)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the CLI: quiet, and oneDNN's reordered math off
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from mobilebert_mobile.converters import convert

    from .host import build_checkpoint

    os.makedirs(args.out, exist_ok=True)
    rows = []
    jsonl = os.path.join(args.out, "presets.jsonl")
    if args.table_only:
        return write_table([json.loads(l) for l in open(jsonl, encoding="utf-8")], args.out)
    wanted = args.presets.split(",")
    if args.append and os.path.exists(jsonl):
        names = {w.split(":")[0] for w in wanted}
        rows = [r for r in map(json.loads, open(jsonl, encoding="utf-8")) if r["preset"].split(" ")[0] not in names]
    with open(jsonl, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    for spec in wanted:
        # "name:N" converts the preset with N layers (e.g. the 294M-parameter teacher at reduced depth)
        preset, _, n = spec.partition(":")
        layers = int(n) if n else args.layers
        label = preset + (f" ({layers} layers)" if layers else "")
        work = os.path.join(args.out, "work", preset)
        t = time.perf_counter()
        try:
            if preset == "all-MiniLM-L6-v2":
                from mobilebert_mobile import assets
                ck, task = assets.minilm_dir(), "embedding"
            else:
                ck, task = build_checkpoint(preset, layers, os.path.join(work, "checkpoint")), None
            rep = convert(ck, os.path.join(work, "bundle"), task=task, precisions=args.precision,
                          include_checkpoint=False, metadata=False, calibration_size=64, heldout_size=64)
        except Exception as e:  # report and go on with the next preset
            rows.append({"preset": label, "error": f"{type(e).__name__}: {e}"})
            with open(jsonl, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rows[-1]) + "\n")
            continue
        for s in rep["stages"]:
            if s["stage"].startswith("tflite"):
                row = {"preset": label, "precision": s["precision"], "size_mb": s["size_mb"],
                       "max_rel_diff": s["max_rel_diff"], "metric": rep["target"]["metric"],
                       "score": s.get(rep["target"]["metric"]),
                       "meets_target": s["meets_target"], "partitions": s["xnnpack"].get("partitions"),
                       "ops_outside": s["xnnpack"].get("ops_outside_xnnpack"),
                       "ms": s["latency_ms_median_2threads"], "conversion_s": rep["total_time_s"],
                       "default": s["precision"] == rep.get("default_model"), "machine": rep.get("machine")}
                rows.append(row)
                with open(jsonl, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        print(f"{label}: converted in {time.perf_counter() - t:.0f}s", flush=True)
    return write_table(rows, args.out)


def write_table(rows: list[dict], out: str) -> int:
    lines = ["| preset | precision | size MB | max rel diff | agreement (label / cosine) | target met | partitions | "
             "ops outside | ms (2 thr) | bundle default | conversion s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | error: {r['error'][:100]} | | | | | | | | | |")
        else:
            lines.append(f"| {r['preset']} | {r['precision']} | {r['size_mb']} | {r['max_rel_diff']:.2g} | "
                         f"{r['score']:.3f} | {r['meets_target']} | {r['partitions']} | {r['ops_outside']} | "
                         f"{r['ms']} | {'yes' if r.get('default') else ''} | {r['conversion_s']} |")
    from mobilebert_mobile._machine import describe

    machines = list(dict.fromkeys(describe(r["machine"]) for r in rows if r.get("machine")))
    where = " ".join(machines) if len(machines) == 1 else (
        "Machines: " + "; ".join(machines) if machines else "Machine: not recorded in these rows.")
    table = (where + "\n\nCommand: `python -m mobilebert_mobile.benchmarks.convert_presets` (random weights with trained-like "
             "norms; the real all-MiniLM-L6-v2), every precision, seq 128, batch 1, 64 calibration + 64 held-out "
             "real sentences; ms = median on 2 threads measured during conversion, the models timed side by side; "
             "bundle default = the precision the conversion chose (the fastest that meets the target).\n\n" + "\n".join(lines))
    if _chart(rows, os.path.join(out, "presets.png")):
        table += "\n\n![presets](presets.png)"
    from mobilebert_mobile._io import atomic_write_text

    atomic_write_text(os.path.join(out, "presets.md"), table + "\n")
    print(table)
    return 0


def _chart(rows: list[dict], path: str) -> bool:
    """Latency per preset and precision (2 threads), the bundle default hatched; int16x8 (reference
    kernels, ~1 s) left out of the picture. False when matplotlib is missing or nothing converted."""
    from .charts import pyplot, write_png

    try:
        plt = pyplot()
    except ImportError:
        return False

    ok = [r for r in rows if "error" not in r and r["precision"] != "int16x8" and r.get("ms")]
    presets = list(dict.fromkeys(r["preset"] for r in ok))
    precs = list(dict.fromkeys(r["precision"] for r in ok))
    if not ok:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(presets) + 1.6))
    h = 0.8 / len(precs)
    for j, prec in enumerate(precs):
        for i, pre in enumerate(presets):
            r = next((r for r in ok if r["preset"] == pre and r["precision"] == prec), None)
            if r:
                ax.barh(i + (j - (len(precs) - 1) / 2) * h, r["ms"], height=h, color=plt.cm.tab10(j),
                        hatch="//" if r.get("default") else None, edgecolor="k" if r.get("default") else None)
                ax.text(r["ms"], i + (j - (len(precs) - 1) / 2) * h, f" {r['ms']:.2f}", va="center", fontsize=6)
    ax.set_yticks(range(len(presets)), presets)
    ax.invert_yaxis()
    ax.set_xlabel("median ms, seq 128, batch 1, 2 threads (hatched: the bundle's default model)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=plt.cm.tab10(j), label=p) for j, p in enumerate(precs)]
              + [Patch(facecolor="white", edgecolor="k", hatch="//", label="bundle default")], fontsize=7)
    ax.set_title("Every preset at every precision (int16x8 runs on reference kernels, ~1 s: not drawn)", fontsize=9)
    write_png(fig, path)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
