"""What more threads buy each GEMM kernel and each whole model, and whether the cores are independent.

The 24-layer full int8 model is ahead of dynamic-int8 on one thread and level on two. This module
measures why, in three parts, each timed interleaved (LiteRT + XNNPACK, the same interpreter the
rest of the project uses):

1. every distinct GEMM shape of a model (``--shapes-from``), cut out as a one-op .tflite (fp32, and
   int8 with int8 I/O, as ``floor`` builds them), timed on 1 thread and on ``--threads``; the fixed
   cost of one ``invoke()`` (a 1-element ADD) is subtracted at each thread count;
2. whole models on 1 thread and on ``--threads``;
3. the same whole models run by ``--threads`` single-thread processes at once (started together on
   a barrier): if each keeps its solo speed, the cores do not share their execution units, and what
   a model fails to gain from more threads is lost in the threading of its kernels, not in the
   hardware.

Command (the results file records it)::

    python -m mobilebert_mobile.benchmarks.thread_scaling int8=W/model_int8.tflite \\
        dynamic-int8=W/model_dynamic-int8.tflite --shapes-from W/model_fp32.tflite --out benchmarks/results/int8
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import tempfile
import time

import numpy as np

from mobilebert_mobile.errors import InputError

from .charts import is_plain_stem
from .floor import _one_gemm_tflite, gemm_shapes
from .op_profile import _null_model, _Timed, model_feeds, run_interleaved


class ScalingError(InputError):
    """A bad argument to the thread-scaling benchmark."""


def _median_ms(t: _Timed) -> float:
    return float(np.median(t.times) * 1e3)


def scaling(models: dict[str, str], *, shapes_from: str | None = None, threads: int = 2, runs: int = 40,
            rounds: int = 5, seq_len: int = 128, log=lambda s: None) -> dict:
    """Medians on 1 thread and on ``threads`` of every GEMM shape of ``shapes_from`` (fp32 and int8,
    one-op models) and of every whole model in ``models`` ({label: .tflite}), all timed interleaved."""
    counts = (1, threads)
    shapes = []
    if shapes_from:
        with open(shapes_from, "rb") as fh:
            shapes = gemm_shapes(fh.read())
    with tempfile.TemporaryDirectory() as d:
        null_p = os.path.join(d, "null.tflite")
        with open(null_p, "wb") as fh:
            fh.write(_null_model())
        timed = {("null", th): _Timed(null_p, th) for th in counts}
        for j, s in enumerate(shapes):
            for kind in ("fp32", "int8"):
                p = os.path.join(d, f"{j}_{kind}.tflite")
                with open(p, "wb") as fh:
                    fh.write(_one_gemm_tflite(s, kind == "int8"))
                for th in counts:
                    timed[(j, kind, th)] = _Timed(p, th)
        for lab, p in models.items():
            feeds = model_feeds(p, seq_len)
            for th in counts:
                timed[("model", lab, th)] = _Timed(p, th, feeds)
        log(f"timing {len(shapes)} GEMM shape(s) x (fp32, int8) and {len(models)} model(s) on {counts} threads")
        run_interleaved(timed.values(), max(1, runs // rounds), rounds)
        null_ms = {th: _median_ms(timed[("null", th)]) for th in counts}
        for j, s in enumerate(shapes):
            for kind in ("fp32", "int8"):
                for th in counts:
                    s[f"{kind}_ms_{th}"] = max(_median_ms(timed[(j, kind, th)]) - null_ms[th], 0.0)
                s[f"{kind}_speedup"] = _ratio(s[f"{kind}_ms_1"], s[f"{kind}_ms_{threads}"])
                s[f"{kind}_xnnpack"] = timed[(j, kind, 1)].delegated
        whole = {lab: {f"ms_{th}": _median_ms(timed[("model", lab, th)]) for th in counts} for lab in models}
    for w in whole.values():
        w["speedup"] = _ratio(w["ms_1"], w[f"ms_{threads}"])
    # count-weighted sums. int8 BATCH_MATMUL has no XNNPACK kernel (the reference kernel is ~20x slower
    # than fp32), so our int8 graphs run attention's matmuls in fp32: "int8 graph" sums them that way.
    sums = {"fp32 FULLY_CONNECTED": lambda s: ("fp32" if s["op"] == "FULLY_CONNECTED" else None),
            "int8 FULLY_CONNECTED": lambda s: ("int8" if s["op"] == "FULLY_CONNECTED" else None),
            "fp32 graph": lambda s: "fp32",
            "int8 graph (attention matmuls fp32)": lambda s: ("int8" if s["op"] == "FULLY_CONNECTED" else "fp32")}
    gemms = {}
    for name, pick in sums.items() if shapes else ():
        row = {f"ms_{th}": sum(s["count"] * s[f"{pick(s)}_ms_{th}"] for s in shapes if pick(s)) for th in counts}
        row["speedup"] = _ratio(row["ms_1"], row[f"ms_{threads}"])
        gemms[name] = row
    return {"threads": threads, "runs": runs, "rounds": rounds, "invoke_overhead_ms": null_ms,
            "shapes": shapes, "gemms": gemms, "models": whole}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _solo_worker(path: str, feeds: dict, seconds: float, barrier, queue) -> None:
    """One single-thread process: wait for the others, then time ``path`` for ``seconds``."""
    try:
        t = _Timed(path, 1, feeds)
        t.warm_up()
        barrier.wait(timeout=120)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t.run(1)
        queue.put(("ok", _median_ms(t), len(t.times)))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        queue.put(("error", f"{type(e).__name__}: {e}", 0))


def _run_solo(path: str, feeds: dict, seconds: float, procs: int) -> list[tuple[float, int]]:
    ctx = mp.get_context("spawn")  # LiteRT and its thread pools are not fork-safe
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_solo_worker, args=(path, feeds, seconds, barrier, queue)) for _ in range(procs)]
    for p in ps:
        p.start()
    try:
        got = [queue.get(timeout=seconds + 300) for _ in ps]
    except queue_mod.Empty:
        raise RuntimeError(f"a timing process on {path} ended without a result (exit codes "
                           f"{[p.exitcode for p in ps]})") from None
    finally:
        for p in ps:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [g[1] for g in got if g[0] != "ok"]
    if errors:
        raise RuntimeError(f"a timing process failed on {path}: {errors[0]}")
    return [(g[1], g[2]) for g in got]


def concurrent(models: dict[str, str], *, procs: int = 2, seconds: float = 4.0, seq_len: int = 128,
               log=lambda s: None) -> dict:
    """Each model alone in one single-thread process, then in ``procs`` single-thread processes at
    once. ``throughput_x`` = sum over the processes of solo / together: ``procs`` when the cores are
    fully independent, 1 when they share one core's worth of execution."""
    out = {}
    for lab, p in models.items():
        feeds = model_feeds(p, seq_len)
        log(f"{lab}: one single-thread process, then {procs} at once ({seconds:g} s each)")
        (solo, n_solo), = _run_solo(p, feeds, seconds, 1)
        together = _run_solo(p, feeds, seconds, procs)
        each = [ms for ms, _ in together]
        out[lab] = {"solo_ms": solo, "solo_invokes": n_solo, "together_ms": each,
                    "together_invokes": [n for _, n in together],
                    "throughput_x": sum(solo / ms for ms in each)}
    return {"procs": procs, "seconds": seconds, "models": out}


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def findings(res: dict) -> list[str]:
    th = res["threads"]
    out = []
    g = res.get("gemms") or {}
    if g:
        f32, i8 = g["fp32 FULLY_CONNECTED"], g["int8 FULLY_CONNECTED"]
        out.append(f"The model's FULLY_CONNECTED ops, each timed alone and summed by count: fp32 "
                   f"{f32['ms_1']:.2f} -> {f32[f'ms_{th}']:.2f} ms from 1 to {th} threads ({_fmt(f32['speedup'])}x), "
                   f"int8 {i8['ms_1']:.2f} -> {i8[f'ms_{th}']:.2f} ms ({_fmt(i8['speedup'])}x).")
    for lab, w in res["models"].items():
        line = f"{lab}: {w['ms_1']:.2f} ms on 1 thread, {w[f'ms_{th}']:.2f} ms on {th} ({_fmt(w['speedup'])}x)"
        c = (res.get("concurrent") or {}).get("models", {}).get(lab)
        if c:
            line += (f"; {res['concurrent']['procs']} single-thread processes at once ran at "
                     f"{', '.join(f'{ms:.2f}' for ms in c['together_ms'])} ms each against {c['solo_ms']:.2f} ms "
                     f"alone: {c['throughput_x']:.2f}x the throughput of one")
        out.append(line + ".")
    return out


def markdown(res: dict) -> str:
    from mobilebert_mobile._machine import describe

    th = res["threads"]
    lines = [f"# Thread scaling{': ' + res['title'] if res.get('title') else ''}", "",
             f"{describe(res.get('machine'))} LiteRT + XNNPACK, 1 thread against {th}, {res['rounds']} interleaved "
             f"rounds of {res['runs']} invokes. Command: `{res.get('command', '')}`", "",
             "## Whole models", "",
             f"| model | 1 thread ms | {th} threads ms | speed-up | {th} single-thread processes at once: ms each "
             "| throughput of them together (x one alone) |", "|---|---|---|---|---|---|"]
    conc = (res.get("concurrent") or {}).get("models", {})
    for lab, w in res["models"].items():
        c = conc.get(lab)
        each = ", ".join(f"{ms:.2f}" for ms in c["together_ms"]) if c else "not run"
        lines.append(f"| {lab} | {w['ms_1']:.2f} | {w[f'ms_{th}']:.2f} | {_fmt(w['speedup'])} | {each} | "
                     f"{_fmt(c['throughput_x']) if c else 'n/a'} |")
    if res["shapes"]:
        lines += ["", f"## GEMM shapes of {res.get('shapes_from', 'the model')} (one-op .tflite each)", "",
                  f"| op | batch x M x K x N | count | fp32 us (1 / {th} thr) | fp32 speed-up | int8 us (1 / {th} thr) "
                  "| int8 speed-up | int8 in XNNPACK |", "|---|---|---|---|---|---|---|---|"]
        for s in res["shapes"]:
            lines.append(f"| {s['op']} | {s['batch']} x {s['m']} x {s['k']} x {s['n']} | {s['count']} | "
                         f"{s['fp32_ms_1'] * 1e3:.1f} / {s[f'fp32_ms_{th}'] * 1e3:.1f} | {_fmt(s['fp32_speedup'])} | "
                         f"{s['int8_ms_1'] * 1e3:.1f} / {s[f'int8_ms_{th}'] * 1e3:.1f} | {_fmt(s['int8_speedup'])} | "
                         f"{'yes' if s['int8_xnnpack'] else 'no'} |")
        g = res["gemms"]
        lines += ["", "| sum by count | 1 thread ms | " + f"{th} threads ms | speed-up |", "|---|---|---|---|"]
        for name, row in g.items():
            lines.append(f"| {name} | {row['ms_1']:.2f} | {row[f'ms_{th}']:.2f} | {_fmt(row['speedup'])} |")
    lines += ["", "## Findings", ""] + [f"- {f}" for f in findings(res)] + [""]
    return "\n".join(lines)


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        lab, sep, path = item.partition("=")
        if not sep or not lab or not path:
            raise ScalingError(f"expected LABEL=PATH.tflite, got {item!r}")
        if not os.path.isfile(path):
            raise ScalingError(f"{lab}: no model file at {path}")
        out[lab] = path
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilebert_mobile.benchmarks.thread_scaling",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="LABEL=PATH.tflite whole models")
    ap.add_argument("--shapes-from", help="a .tflite whose distinct GEMM shapes are timed alone")
    ap.add_argument("--threads", type=int, default=2, help="the thread count compared with 1 (default 2)")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--concurrent-seconds", type=float, default=4.0,
                    help="seconds each process times a model in the concurrency check (0 skips it)")
    ap.add_argument("--out", help="write NAME.md / NAME.json here")
    ap.add_argument("--name", default="thread_scaling", help="the results files' stem (default thread_scaling)")
    a = ap.parse_args(argv)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        models = _pairs(a.models)
        if a.shapes_from and not os.path.isfile(a.shapes_from):
            raise ScalingError(f"--shapes-from: no model file at {a.shapes_from}")
        if not is_plain_stem(a.name):
            raise ScalingError(f"--name must be letters, digits, '-' and '_' (a file stem), got {a.name!r}")
        if a.threads < 2 or a.runs < 1 or a.rounds < 1 or a.concurrent_seconds < 0:
            raise ScalingError("--threads must be >= 2, --runs and --rounds >= 1, --concurrent-seconds >= 0")
    except ScalingError as e:
        print(f"thread_scaling: {e}", file=sys.stderr)
        return 2
    from mobilebert_mobile.errors import PredictorError

    try:
        res = scaling(models, shapes_from=a.shapes_from, threads=a.threads, runs=a.runs, rounds=a.rounds,
                      seq_len=a.seq_len, log=say)
        if a.concurrent_seconds > 0:
            res["concurrent"] = concurrent(models, procs=a.threads, seconds=a.concurrent_seconds,
                                           seq_len=a.seq_len, log=say)
    except (PredictorError, RuntimeError) as e:  # a model LiteRT cannot load or run, a timing process lost
        print(f"thread_scaling: {e}", file=sys.stderr)
        return 1
    from mobilebert_mobile._machine import machine

    res["machine"] = machine()
    res["title"] = ", ".join(models)
    res["shapes_from"] = os.path.basename(a.shapes_from) if a.shapes_from else None
    res["command"] = "python -m mobilebert_mobile.benchmarks.thread_scaling " + " ".join(
        argv if argv is not None else sys.argv[1:])
    res["findings"] = findings(res)
    md = markdown(res)
    if a.out:
        from .charts import save  # STEM.md (linking the chart), STEM.json and STEM.png

        save(a.out, a.name, md, res)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
