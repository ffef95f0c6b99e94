"""``bench-report``: a results JSONL file -> Markdown table + PNG charts across devices and configurations."""
from __future__ import annotations

import json
import os

from .._io import atomic_path, atomic_write_text
from .bench import Results
from mobilebert_mobile.errors import InputError


class ReportError(InputError):
    pass


def _device_label(d: dict) -> str:
    return f"{d.get('model') or '?'} ({d.get('serial')})"


def latest(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The newest ok record per key, and the failures not superseded by a later success."""
    ok: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    for r in records:
        k = r.get("key")
        if not k:
            continue
        if r.get("status") == "ok":
            ok[k] = r
            failed.pop(k, None)
        elif k not in ok:
            failed[k] = r
    return list(ok.values()), list(failed.values())


def _fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def rows(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        f, c, d, m = r.get("figures") or {}, r["config"], r["device"], r["model"]
        th = r.get("thermal") or {}
        flags = []
        if th.get("rose"):
            flags.append("thermal rose")
        if th.get("cooldown_timed_out"):
            flags.append("started warm")
        out.append({"device": _device_label(d), "soc": d.get("soc") or d.get("platform"), "model": m["name"],
                    "precision": m.get("precision"), "threads": c["threads"], "delegate": c["delegate"],
                    "runs": f.get("count"), "mean_ms": f.get("mean_ms"), "std_ms": f.get("std_ms"),
                    "min_ms": f.get("min_ms"), "max_ms": f.get("max_ms"), "p50_ms": f.get("p50_ms"),
                    "p90_ms": f.get("p90_ms"), "p95_ms": f.get("p95_ms"), "init_ms": f.get("init_ms"),
                    "first_ms": f.get("first_inference_ms"), "warmup_ms": f.get("warmup_ms"),
                    "peak_mb": f.get("peak_memory_mb"), "cores": (r.get("affinity") or {}).get("cores"),
                    "flags": ", ".join(flags), "tool": (r.get("tool") or {}).get("version"),
                    "time": r.get("time")})
    out.sort(key=lambda x: (x["device"], x["model"], x["delegate"], x["threads"]))
    return out


def markdown(table: list[dict], failures: list[dict], source: str) -> str:
    lines = ["# Phone latency (TFLite benchmark_model over adb)", "",
             f"Source: `{source}`. Times in ms; mean/std/min/max over the measured runs after warm-up, "
             "pinned (taskset) to the n fastest cores for n threads; p50/p95 where the tool prints percentiles.", "",
             "| device | SoC | model | threads | delegate | runs | mean | std | min | max | p50 | p95 | init | "
             "first | peak MB | flags |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in table:
        lines.append(f"| {r['device']} | {r['soc'] or ''} | {r['model']} | {r['threads']} | {r['delegate']} | "
                     f"{r['runs'] if r['runs'] is not None else '–'} | {_fmt(r['mean_ms'])} | {_fmt(r['std_ms'])} | "
                     f"{_fmt(r['min_ms'])} | {_fmt(r['max_ms'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | "
                     f"{_fmt(r['init_ms'], 1)} | {_fmt(r['first_ms'])} | {_fmt(r['peak_mb'], 1)} | {r['flags']} |")
    if not table:
        lines.append("| (no successful runs) |||||||||||||||")
    if failures:
        lines += ["", "## Failed runs", "", "| device | model | threads | delegate | error |", "|---|---|---:|---|---|"]
        for f in failures:
            err = (f.get("error") or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {_device_label(f['device'])} | {f['model']['name']} | {f['config']['threads']} | "
                         f"{f['config']['delegate']} | {err} |")
    lines += ["", "![latency](latency.png)", ""]
    return "\n".join(lines)


def _chart(table: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in table})
    fig, axes = plt.subplots(len(models), 1, figsize=(max(6, 1.6 * len(table) / max(1, len(models)) + 4),
                                                      3.6 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        sub = [r for r in table if r["model"] == model and r["mean_ms"] is not None]
        configs = sorted({(r["delegate"], r["threads"]) for r in sub})
        devices = sorted({r["device"] for r in sub})
        width = 0.8 / max(1, len(devices))
        for j, dev in enumerate(devices):
            xs, ys, lo, hi = [], [], [], []
            for i, cfg in enumerate(configs):
                r = next((x for x in sub if x["device"] == dev and (x["delegate"], x["threads"]) == cfg), None)
                if r is None:
                    continue
                xs.append(i + (j - (len(devices) - 1) / 2) * width)
                ys.append(r["mean_ms"])
                lo.append(r["mean_ms"] - (r["min_ms"] if r["min_ms"] is not None else r["mean_ms"]))
                hi.append((r["max_ms"] if r["max_ms"] is not None else r["mean_ms"]) - r["mean_ms"])
            ax.bar(xs, ys, width=width * 0.95, yerr=[lo, hi], capsize=3, label=dev)
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels([f"{d}\n{t} thread{'s' if t > 1 else ''}" for d, t in configs])
        ax.set_ylabel("latency (ms), mean with min–max")
        ax.set_title(model)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(results_path: str, out_dir: str) -> dict:
    if not os.path.isfile(results_path):
        raise ReportError(f"results file not found: {results_path}")
    records = Results.load(results_path)
    records = [r for r in records if isinstance(r.get("config"), dict) and isinstance(r.get("device"), dict)
               and isinstance(r.get("model"), dict)]
    if not records:
        raise ReportError(f"{results_path} holds no benchmark results")
    ok, failed = latest(records)
    table = rows(ok)
    os.makedirs(out_dir, exist_ok=True)
    files = {"markdown": os.path.join(out_dir, "report.md"), "json": os.path.join(out_dir, "report.json")}
    atomic_write_text(files["markdown"], markdown(table, failed, os.path.abspath(results_path)))
    if table:
        files["chart"] = os.path.join(out_dir, "latency.png")
        _chart(table, files["chart"])
    summary = {"results": os.path.abspath(results_path), "rows": table, "failures": len(failed),
               "devices": sorted({r["device"] for r in table}), "files": files}
    atomic_write_text(files["json"], json.dumps(summary, indent=2, default=str) + "\n")
    return summary
