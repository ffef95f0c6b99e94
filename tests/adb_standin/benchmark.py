"""``benchmark_model`` stand-in: runs the pushed .tflite with LiteRT on the host with the given flags and
prints the real tool's output (TFLite current, LiteRT percentiles, older ordering, or the
benchmark_litert_model RESULTS block, as the profile says). Scripted faults: crash, hang, garbage,
disconnect, heat-up."""
from __future__ import annotations

import math
import os
import resource
import threading
import time

TRUE = ("1", "true", "True")


def _parse_ranges(spec: str) -> dict[str, tuple[int, int]]:
    out = {}
    for item in filter(None, spec.split(":")):
        name, lo, hi = item.rsplit(",", 2)
        out[name] = (int(lo), int(hi))
    return out


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"count": 0}
    n = len(xs)
    avg = sum(xs) / n
    std = math.sqrt(sum((x - avg) ** 2 for x in xs) / n)
    s = sorted(xs)

    def pct(p):
        return s[min(n - 1, int(round(p / 100 * (n - 1))))]

    return {"count": n, "first": xs[0], "curr": xs[-1], "min": s[0], "max": s[-1], "avg": avg, "std": std,
            "p5": pct(5), "median": pct(50), "p95": pct(95)}


def _fmt_avg(v: float) -> str:
    return f"{v:.6g}" if v != int(v) else str(int(v))


def _stats_line(st: dict, fmt: str) -> str:
    if st["count"] == 0:
        return "count=0"
    if st["min"] == st["max"]:
        return f"count={st['count']} curr={int(st['curr'])}(all same)"
    if fmt == "older":
        return (f"curr={int(st['curr'])} count={st['count']} first={int(st['first'])} min={int(st['min'])} "
                f"max={int(st['max'])} avg={_fmt_avg(st['avg'])} std={int(st['std'])}")
    line = (f"count={st['count']} first={int(st['first'])} curr={int(st['curr'])} min={int(st['min'])} "
            f"max={int(st['max'])} avg={_fmt_avg(st['avg'])} std={int(st['std'])}")
    if fmt == "litert-percentiles":
        line += f" p5={int(st['p5'])} median={int(st['median'])} p95={int(st['p95'])}"
    return line


def run_benchmark(device, path: str, args: list[str], out, err, cancel) -> int:
    prof = device.profile
    flags: dict[str, str] = {}
    for a in args:
        if not a.startswith("--") or "=" not in a:
            err(f"ERROR: Unrecognized command-line flag: {a}\n".encode())
            return 1
        k, v = a[2:].split("=", 1)
        flags[k] = v
    with device.lock:
        device.bench_runs += 1
        nrun = device.bench_runs
        call = {"binary": path, "argv": list(args), "flags": flags, "mask": device.current_mask,
                "started": time.time()}
        device.bench_calls.append(call)

    def say(line: str) -> None:
        if prof.output_format == "litert-percentiles" and line and not line.startswith("INFO:"):
            line = "INFO: " + line
        out((line + "\n").encode())

    say("STARTING!")
    say("Log parameter values verbosely: [0]")
    if prof.disconnect_on_run is not None and nrun >= prof.disconnect_on_run:
        threading.Timer(0.2, device.disconnect).start()
        cancel.wait(30)
        return 1
    if prof.bench_hang:
        cancel.wait(3600)
        call["cancelled"] = cancel.is_set()
        return 0
    graph = flags.get("graph", "")
    say(f"Graph: [{graph}]")
    if prof.bench_crash:
        say(f"Loaded model {graph}")
        err(b"Segmentation fault \n")
        return 139
    if prof.bench_garbage:
        out(b"benchmark: something went sideways\n\x00\x01 not a number\n")
        return 0
    h = device.fs.host(graph)
    try:
        with open(h, "rb") as fh:
            head = fh.read(8)
    except OSError:
        err(f"ERROR: Could not open '{graph}'.\nERROR: Failed to mmap model {graph}\n".encode())
        return 1
    if head[4:8] != b"TFL3":
        err(f"ERROR: The model is not a valid Flatbuffer buffer\nERROR: Failed to mmap model {graph}\n".encode())
        return 1

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    threads = int(flags.get("num_threads", "-1"))
    num_runs = int(flags.get("num_runs", "50"))
    min_secs = float(flags.get("min_secs", "1.0"))
    max_secs = float(flags.get("max_secs", "150"))
    warm_runs = int(flags.get("warmup_runs", "1"))
    warm_min = float(flags.get("warmup_min_secs", "0.5"))
    say(f"Num threads: [{threads}]")
    say(f"Min num runs: [{num_runs}]")
    for d in ("gpu", "nnapi", "xnnpack"):
        if flags.get(f"use_{d}") in TRUE:
            say(f"Use {d}: [1]")
    say(f"Loaded model {graph}")
    say("INFO: Initialized TensorFlow Lite runtime.")
    if flags.get("use_gpu") in TRUE:
        say("INFO: Created TensorFlow Lite delegate for GPU.")
    if flags.get("use_nnapi") in TRUE:
        say("INFO: Created TensorFlow Lite delegate for NNAPI.")
    if flags.get("use_xnnpack", "true") in TRUE:
        say("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    size_mb = os.path.getsize(h) / 1e6
    say(f"The input model file size (MB): {size_mb:.6g}")

    t0 = time.perf_counter()
    interp = Interpreter(model_path=h, num_threads=None if threads < 1 else threads)
    interp.allocate_tensors()
    init_us = (time.perf_counter() - t0) * 1e6
    say(f"Initialized session in {init_us / 1e3:.3f}ms.")
    ranges = _parse_ranges(flags.get("input_layer_value_range", ""))
    rng = np.random.default_rng(0)
    call["inputs"] = {}
    for d in interp.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            lo, hi = ranges.get(d["name"], (0, 99))  # the real tool's default for integer inputs
            call["inputs"][d["name"]] = {"low": lo, "high": hi, "given": d["name"] in ranges}
            val = rng.integers(lo, hi + 1, size=d["shape"]).astype(d["dtype"])
        else:
            val = rng.random(size=d["shape"]).astype(d["dtype"])
        interp.set_tensor(d["index"], val)

    device.running_benchmark = True
    try:
        def loop(min_n: int, min_s: float) -> list[float]:
            xs: list[float] = []
            start = time.perf_counter()
            while True:
                el = time.perf_counter() - start
                if (len(xs) >= min_n and el >= min_s) or el > max_secs or cancel.is_set():
                    return xs
                a = time.perf_counter()
                interp.invoke()
                xs.append((time.perf_counter() - a) * 1e6)

        say(f"Running benchmark for at least {warm_runs} iterations and at least {warm_min:g} seconds but "
            f"terminate if exceeding {max_secs:g} seconds.")
        warm = _stats(loop(warm_runs, warm_min))
        say(_stats_line(warm, prof.output_format))
        say("")
        say(f"Running benchmark for at least {num_runs} iterations and at least {min_secs:g} seconds but "
            f"terminate if exceeding {max_secs:g} seconds.")
        meas = _stats(loop(num_runs, min_secs))
        say(_stats_line(meas, prof.output_format))
        say("")
    finally:
        device.running_benchmark = False
    call["ended"] = time.time()
    if prof.heat_on_run:
        device.heat_up()
    call["count"] = meas["count"]
    first = warm.get("first", meas.get("first", 0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if prof.output_format == "older":
        out((f"Average inference timings in us: Warmup: {_fmt_avg(warm.get('avg', 0))}, Init: {int(init_us)}, "
             f"no stats: {_fmt_avg(meas.get('avg', 0))}\n").encode())
    elif prof.output_format == "results-block":
        out(("\n========== BENCHMARK RESULTS ==========\n"
             f"Model initialization: {init_us / 1e3:.2f} ms\n"
             f"Warmup (first): {first / 1e3:.2f} ms\n"
             f"Warmup (avg): {warm.get('avg', 0) / 1e3:.2f} ms ({warm['count']} runs)\n"
             f"Inference (avg): {meas.get('avg', 0) / 1e3:.2f} ms ({meas['count']} runs)\n"
             f"Inference (min): {meas.get('min', 0) / 1e3:.2f} ms\n"
             f"Inference (max): {meas.get('max', 0) / 1e3:.2f} ms\n"
             f"Inference (std): {meas.get('std', 0) / 1e3:.2f}\n"
             f"Throughput: {1e6 / max(meas.get('avg', 1), 1e-9):.2f} inferences/s\n"
             f"Memory usage (RSS): {peak * 0.9:.2f} MB\n"
             f"Peak memory usage: {peak:.2f} MB\n"
             "=======================================\n").encode())
    else:
        say(f"Inference timings in us: Init: {int(init_us)}, First inference: {int(first)}, "
            f"Warmup (avg): {_fmt_avg(warm.get('avg', 0))}, Inference (avg): {_fmt_avg(meas.get('avg', 0))}")
        say("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to "
            "the actual memory footprint of the model at runtime. Take the information at your discretion.")
        say(f"Memory footprint delta from the start of the tool (MB): init={peak * 0.3:.3g} overall={peak * 0.6:.3g}")
        if flags.get("report_peak_memory_footprint") in TRUE:
            say(f"Overall peak memory footprint (MB) via periodic monitoring: {peak:.4g}")
    if flags.get("enable_op_profiling") in TRUE:
        ops: dict[str, int] = {}
        for op in interp._get_ops_details():
            ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        total = sum(ops.values()) or 1
        avg_ms = meas.get("avg", 0) / 1e3
        rows, cdf = [], 0.0
        for name, cnt in sorted(ops.items(), key=lambda kv: -kv[1]):
            share = 100.0 * cnt / total
            cdf += share
            rows.append(f"\t{name}\t{cnt}\t{avg_ms * share / 100:.3f}\t{share:.3f}%\t{cdf:.3f}%\t0.000\t{cnt}")
        out(("Operator-wise Profiling Info for Regular Benchmark Runs:\n"
             "============================== Summary by node type ==============================\n"
             "\t[Node type]\t[count]\t[avg ms]\t[avg %]\t[cdf %]\t[mem KB]\t[times called]\n"
             + "\n".join(rows) + "\n\n").encode())
    return 0
