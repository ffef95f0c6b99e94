"""One chart per int8 results file, drawn from its JSON alone.

Each int8 benchmark writes ``STEM.md`` and ``STEM.json``; ``save()`` adds ``STEM.png`` and a link to it
at the end of the markdown. A chart reads nothing but the JSON, so the committed figures of a run can
be redrawn without measuring again::

    python -m mobilebert_mobile.benchmarks.charts benchmarks/results/int8

Kinds, by file stem: ``calibration_*`` (agreement and latency per range method), ``hf_classifier``
and ``qat_default*`` (agreement and latency per model and precision), ``qat_preset_*``,
``floor`` (the shape-aware floor against the measured models), ``op_profile*`` (time per op type)
and ``thread_scaling*`` (1 thread against N, and N single-thread processes at once).
"""
from __future__ import annotations

import os
import sys

from mobilebert_mobile._io import atomic_write_bytes, read_json_bounded, write_results
from mobilebert_mobile.errors import InputError

_MAX_JSON = 32 << 20  # results files are a few hundred KB; refuse anything far larger before reading it


class ChartError(InputError):
    """A results file that cannot be charted."""


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _barh(ax, labels, values, *, color="tab:blue", fmt="{:.3f}"):
    ys = range(len(labels))
    ax.barh(ys, [v or 0 for v in values], color=color)
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    for y, v in zip(ys, values):
        if v is not None:
            ax.text(v, y, " " + fmt.format(v), va="center", fontsize=7)


def _machine(res: dict) -> str:
    m = res.get("machine") or {}
    isa = (m.get("int8_isa") or {}).get("best", "?")
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, int8 ISA {isa}"


def _score_and_ms(plt, title: str, labels: list[str], scores: list, ms: list, metric: str, target: float | None):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.38 * len(labels) + 1.8), sharey=True,
                               gridspec_kw={"width_ratios": [3, 2]})
    known = [s for s in scores if s is not None]
    _barh(a, labels, scores)
    lo = min(known + ([target] if target else [])) if known else 0.0
    a.set_xlim(max(0.0, lo - (1 - lo) * 0.3 - 0.002), 1.0 + (1 - lo) * 0.15 + 0.001)
    if target:
        a.axvline(target, color="tab:red", ls="--", lw=1, label=f"target {target:g}")
        a.legend(loc="lower left", fontsize=7)
    a.set_xlabel(metric)
    _barh(b, labels, ms, color="tab:gray", fmt="{:.2f}")
    b.set_xlabel("median ms (XNNPACK)")
    fig.suptitle(title, fontsize=9)
    return fig


def _calibration(plt, res, label):
    v = res["variants"]
    labels = list(v)
    return _score_and_ms(plt, f"int8 ranges without fallback: {label}"
                         f"\n{_machine(res)}", labels, [v[k].get("score") for k in labels],
                         [v[k].get("median_ms") for k in labels], res.get("metric", "score"), res.get("target"))


def _rows(plt, res, title):
    rows = [r for r in res["rows"] if r.get("median_ms") is not None or r.get("agreement") is not None]
    labels = [f"{r['model']} / {r['precision']}" for r in rows]
    return _score_and_ms(plt, f"{title}\n{_machine(res)}", labels, [r.get("agreement") for r in rows],
                         [r.get("median_ms") for r in rows], "label agreement with the float model", 0.995)


def _qat_preset(plt, res):
    fig, ax = plt.subplots(figsize=(7, 2.4))
    labels = ["QAT points matched", "label agreement"]
    vals = [res["points_matched"] / res["points"] if res.get("points") else None, res.get("label_agreement")]
    _barh(ax, labels, vals)
    ax.set_xlim(0, 1.15)
    ax.set_title(f"QAT on {res.get('preset')} ({res.get('qat_steps')} steps, float fallback: "
                 f"{', '.join(res.get('float_fallback') or []) or 'none'})\n{_machine(res)}", fontsize=9)
    return fig


def _short(op: str) -> str:
    return {"FULLY_CONNECTED": "FC", "BATCH_MATMUL": "BMM"}.get(op, op)


def _floor(plt, res):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    shapes = res["shapes"]
    labels = [f"{_short(s['op'])} {s['batch']}x{s['m']}x{s['k']}x{s['n']} (x{s['count']})" for s in shapes]
    ys = range(len(shapes))
    a.barh([y - 0.2 for y in ys], [s["fp32_ms"] * s["count"] for s in shapes], height=0.4, label="fp32")
    a.barh([y + 0.2 for y in ys], [s["int8_ms"] * s["count"] for s in shapes], height=0.4, label="int8")
    a.set_yticks(list(ys), labels, fontsize=7)
    a.invert_yaxis()
    a.set_xlabel("ms in the model (count x one-op median)")
    a.legend(fontsize=7)
    meas = res.get("measured_ms") or {}
    names = list(meas) + ["shape floor fp32", "shape floor int8"]
    vals = list(meas.values()) + [res["fp32_ms"], res["int8_ms"]]
    _barh(b, names, vals, color="tab:gray", fmt="{:.2f}")
    b.set_xlabel("ms")
    fig.suptitle(f"Shape-aware floor ({res.get('threads')} threads): {res.get('title', '')}\n{_machine(res)}",
                 fontsize=9)
    return fig


def _op_profile(plt, res, top: int = 8):
    models = res["models"]
    totals: dict[str, float] = {}
    for m in models.values():
        for k, v in m["by_type"].items():
            totals[k] = totals.get(k, 0.0) + v["total_ms"]
    keep = sorted(totals, key=totals.get, reverse=True)[:top]
    fig, ax = plt.subplots(figsize=(10, 1.0 * len(models) + 2.2))
    for i, (lab, m) in enumerate(models.items()):
        left = 0.0
        for j, k in enumerate(keep + ["other"]):
            w = (m["by_type"].get(k, {}).get("total_ms", 0.0) if k != "other" else
                 sum(v["total_ms"] for kk, v in m["by_type"].items() if kk not in keep))
            ax.barh(i, w, left=left, color=plt.cm.tab20(j), label=k if i == 0 else None)
            left += w
        ax.plot([m["whole_median_ms"]], [i], "k|", ms=22, mew=2, label="whole model" if i == 0 else None)
    ax.set_yticks(range(len(models)), [f"{lab} ({m['ops']} ops)" for lab, m in models.items()])
    ax.invert_yaxis()
    ax.set_xlabel(f"ms: each op type's ops timed alone and summed ({res.get('threads')} threads); bar = whole model")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title(f"Per-op profile: {res.get('title', '')}\n{_machine(res)}", fontsize=9)
    return fig


def _thread_scaling(plt, res):
    th = res["threads"]
    models = res["models"]
    conc = (res.get("concurrent") or {}).get("models", {})
    has_shapes = bool(res.get("shapes"))
    fig, axes = plt.subplots(1, 2 if has_shapes else 1, figsize=(12 if has_shapes else 7, 4.2), squeeze=False)
    a = axes[0][0]
    labs = list(models)
    xs = range(len(labs))
    a.bar([x - 0.27 for x in xs], [models[k]["ms_1"] for k in labs], width=0.27, label="1 thread")
    a.bar(list(xs), [models[k][f"ms_{th}"] for k in labs], width=0.27, label=f"{th} threads")
    if conc:
        a.bar([x + 0.27 for x in xs], [max(conc[k]["together_ms"]) if k in conc else 0 for k in labs], width=0.27,
              label=f"{th} single-thread processes at once (slowest)")
    a.set_xticks(list(xs), labs)
    a.set_ylabel("median ms per sequence")
    a.set_yscale("log")
    a.legend(fontsize=7)
    a.set_title("whole models", fontsize=9)
    if has_shapes:
        b = axes[0][1]
        fcs = [s for s in res["shapes"] if s["op"] == "FULLY_CONNECTED" and s["m"] > 1]
        ys = range(len(fcs))
        b.barh([y - 0.2 for y in ys], [s["fp32_speedup"] or 0 for s in fcs], height=0.4, label="fp32")
        b.barh([y + 0.2 for y in ys], [s["int8_speedup"] or 0 for s in fcs], height=0.4, label="int8")
        b.axvline(1.0, color="k", lw=1)
        b.set_yticks(list(ys), [f"{s['m']}x{s['k']}x{s['n']} (x{s['count']})" for s in fcs], fontsize=7)
        b.invert_yaxis()
        b.set_xlabel(f"speed-up of {th} threads over 1 (one-op FULLY_CONNECTED)")
        b.legend(fontsize=7)
        b.set_title("GEMM shapes", fontsize=9)
    fig.suptitle(f"Thread scaling: {res.get('title', '')}\n{_machine(res)}", fontsize=9)
    return fig


def kind(stem: str) -> str | None:
    for prefix, name in (("calibration_", "calibration"), ("hf_classifier", "hf_classifier"),
                         ("qat_default", "qat_default"), ("qat_preset_", "qat_preset"), ("floor", "floor"),
                         ("op_profile", "op_profile"), ("thread_scaling", "thread_scaling")):
        if stem.startswith(prefix):
            return name
    return None


def figure(stem: str, res: dict):
    """The matplotlib figure for results ``res`` of file ``stem``; ChartError when it has no chart
    or lacks what the chart reads."""
    k = kind(stem)
    if k is None:
        raise ChartError(f"{stem}: no chart for this kind of results file")
    plt = pyplot()
    draw = {"calibration": lambda p, r: _calibration(p, r, stem[len("calibration_"):]), "floor": _floor, "op_profile": _op_profile,
            "thread_scaling": _thread_scaling, "qat_preset": _qat_preset,
            "hf_classifier": lambda p, r: _rows(p, r, "transformers-made MobileBERT classifier through our int8"),
            "qat_default": lambda p, r: _rows(p, r, "QAT default student: int8 against its float model")}[k]
    try:
        return draw(plt, res)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        plt.close("all")
        raise ChartError(f"{stem}: the results lack what its chart needs ({type(e).__name__}: {e})") from None


def write_png(fig, path: str) -> None:
    """Lay ``fig`` out, write it to ``path`` as PNG atomically, and close it."""
    import io

    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def render(out_dir: str, stem: str, res: dict) -> str:
    """Draw ``stem``'s chart into ``out_dir/stem.png`` (atomically) and return its path."""
    path = os.path.join(out_dir, f"{stem}.png")
    write_png(figure(stem, res), path)
    return path


def is_plain_stem(stem: str) -> bool:
    """A results file stem names STEM.md/.json/.png inside their folder: letters, digits, '-' and '_'
    only, so never a path. The one rule for every benchmark's --label/--name and for ``save``."""
    return bool(stem) and stem.replace("_", "").replace("-", "").isalnum()


def _link(stem: str) -> str:
    return f"![{stem}]({stem}.png)"


def with_link(markdown: str, stem: str) -> str:
    link = _link(stem)
    return markdown if link in markdown else markdown.rstrip("\n") + f"\n\n{link}\n"


def save(out_dir: str, stem: str, markdown: str, res: dict) -> None:
    """``write_results`` plus the chart: STEM.md (with the chart linked), STEM.json and STEM.png."""
    if not is_plain_stem(stem):
        raise ChartError(f"results file stem {stem!r} must be a plain file name (it names files in {out_dir})")
    os.makedirs(out_dir, exist_ok=True)
    try:
        render(out_dir, stem, res)
    except ImportError:  # matplotlib is in the dev extra; the figures matter more than the picture
        print(f"{stem}: matplotlib is not installed, so no {stem}.png (pip install matplotlib, then "
              f"python -m mobilebert_mobile.benchmarks.charts {out_dir})", file=sys.stderr)
        write_results(out_dir, stem, markdown, res)
        return
    write_results(out_dir, stem, with_link(markdown, stem), res)


def redraw(folder: str) -> list[str]:
    """Chart every results JSON in ``folder`` that has a chart kind; link each from its markdown."""
    from mobilebert_mobile._io import atomic_write_text

    done = []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext != ".json" or kind(stem) is None:
            continue
        res = read_json_bounded(os.path.join(folder, name), _MAX_JSON, ChartError, name)
        done.append(render(folder, stem, res))
        md = os.path.join(folder, stem + ".md")
        if os.path.isfile(md):
            with open(md, encoding="utf-8") as fh:
                text = fh.read()
            if _link(stem) not in text:
                atomic_write_text(md, with_link(text, stem))
    return done


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mobilebert_mobile.benchmarks.charts",
                                 description="redraw the charts of a folder of int8 results files from their JSON")
    ap.add_argument("folder", nargs="?", default=os.path.join("benchmarks", "results", "int8"))
    a = ap.parse_args(argv)
    if not os.path.isdir(a.folder):
        print(f"charts: no folder at {a.folder}", file=sys.stderr)
        return 2
    try:
        for p in redraw(a.folder):
            print(p)
    except ChartError as e:
        print(f"charts: {e}", file=sys.stderr)
        return 2
    except ImportError:
        print("charts: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
