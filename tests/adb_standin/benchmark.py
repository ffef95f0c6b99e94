"""``benchmark_model`` stand-in: runs the pushed .tflite with LiteRT on the host and behaves like TensorFlow
Lite's tool, written from its source (tensorflow/tensorflow, tensorflow/lite/tools/...), not from what our
harness sends:

* flag parsing: ``command_line_flags.cc`` (Flags::Parse: ``--name=value`` only, first unconsumed match wins,
  a value that does not parse is ``ERROR: Failed to parse flag '...' against argv '...'`` plus the usage text
  and exit 1; anything else is only ``WARN: Unconsumed cmdline flags: ...``; bools are true/false/0/1, numbers
  read like ``std::istringstream >>`` so ``4x`` is 4); flags and defaults: ``benchmark_model.cc``
  (BenchmarkModel::DefaultParams/GetFlags), ``benchmark_tflite_model.cc`` (DefaultParams/GetFlags) and the
  delegate providers ``tools/delegates/{xnnpack,gpu}_delegate_provider.cc``;
* logging: ``tools/logging.h`` (INFO/WARN to stdout, ERROR/FATAL to stderr, FATAL and failed
  TFLITE_TOOLS_CHECKs abort: SIGABRT, exit 134); ``benchmark_main.cc`` (``STARTING!``, ``Benchmarking failed.``,
  exit 1); LOG_BENCHMARK_PARAM (``Name: [value]`` only for flags given on the command line);
* ``benchmark_tflite_model.cc``: ValidateParams (``--graph`` required), PopulateInputLayerInfo (names and
  shapes counted, ``Incorrect size string`` FATAL, ``-1`` sizes), PopulateInputValueRanges /
  PopulateInputValueFiles (FindLayerInfoIndex: a range or file naming an input missing from --input_layer is
  FATAL), LoadModel (``Failed to mmap model``), Init (``<NAME> delegate created.`` from
  ``tools/delegates/delegate_provider.cc``, ``Going to apply N delegates``, ``Failed to apply <NAME>
  delegate.``, the input count CHECK, the name-mismatch WARN, the dimension-count ERROR, resizing inputs to
  --input_layer_shape), CreateRandomTensorData (per input *position*; integer defaults 0..99, uint8 0..254,
  int8 -127..127, floats -0.5..0.5);
* ``benchmark_model.cc``: Run (``Running benchmark for at least ...``, stats line, min/max seconds, the
  ``Inference timings in us`` and memory lines).

A delegate that fails to apply prints core/subgraph.cc's ``Restored original execution plan after delegate
application failure.`` before the tool's own error. The GPU delegate's own lines when it cannot start
(``TfLiteGpuDelegate Init: ...``, ``Created 0 GPU delegate kernels.``, ``... failed to prepare.``) are as seen in
real logs. The output forms (TFLite current, LiteRT percentiles, older ordering without ``INFO:`` prefixes, the
benchmark_litert_model RESULTS block) follow the profile. Scripted faults: crash, hang, garbage, disconnect,
heat-up, GPU missing, a delegate failing to apply.

The running tool is a process of the stand-in device (``device.processes``): ``pgrep``/``pkill -f`` see its
command line; closing the adb stream does not stop it (a real adbd does not kill a raw shell's process when
the host hangs up) - it dies only when killed or when it next writes to the closed stream (SIGPIPE)."""
from __future__ import annotations

import math
import os
import re
import resource
import threading
import time



class Abort(Exception):
    """TFLITE_LOG(FATAL) / a failed TFLITE_TOOLS_CHECK: std::abort()."""


# (name, type, default, LogParams description or None when it is not logged) in GetFlags() order
FLAGS: list[tuple[str, str, object, str | None]] = [
    # benchmark_model.cc BenchmarkModel::GetFlags
    ("num_runs", "int32", 50, "Min num runs"),
    ("min_secs", "float", 1.0, "Min runs duration (seconds)"),
    ("max_secs", "float", 150.0, "Max runs duration (seconds)"),
    ("run_delay", "float", -1.0, "Inter-run delay (seconds)"),
    ("run_frequency", "float", -1.0, "Number of prorated runs per second"),
    ("num_threads", "int32", -1, "Num threads"),
    ("use_caching", "bool", False, "Use caching"),
    ("benchmark_name", "string", "", "Benchmark name"),
    ("output_prefix", "string", "", "Output prefix"),
    ("warmup_runs", "int32", 1, "Min warmup runs"),
    ("warmup_min_secs", "float", 0.5, "Min warmup runs duration (seconds)"),
    ("verbose", "bool", False, None),
    ("dry_run", "bool", False, "Run w/o invoking kernels"),
    ("report_peak_memory_footprint", "bool", False, "Report the peak memory footprint"),
    ("memory_footprint_check_interval_ms", "int32", 50, "Memory footprint check interval (ms)"),
    ("gpu_invoke_loop_times", "int32", 1, None),
    # benchmark_tflite_model.cc BenchmarkTfLiteModel::GetFlags
    ("graph", "string", "", "Graph"),
    ("input_layer", "string", "", "Input layers"),
    ("input_layer_shape", "string", "", "Input shapes"),
    ("input_layer_value_range", "string", "", "Input value ranges"),
    ("input_layer_value_files", "string", "", "Input value files"),
    ("allow_fp16", "bool", False, "Allow fp16"),
    ("require_full_delegation", "bool", False, "Require full delegation"),
    ("enable_op_profiling", "bool", False, "Enable op profiling"),
    ("max_profiling_buffer_entries", "int32", 1024, "Max profiling buffer entries"),
    ("profiling_output_csv_file", "string", "", "CSV File to export profiling data to"),
    ("print_preinvoke_state", "bool", False, "Print pre-invoke interpreter state"),
    ("print_postinvoke_state", "bool", False, "Print post-invoke interpreter state"),
    # delegate providers (Android build): default_execution_provider.cc, xnnpack_, gpu_, nnapi_delegate_provider.cc
    ("help", "bool", False, None),
    ("max_delegated_partitions", "int32", 0, "Max number of delegated partitions"),
    ("use_xnnpack", "bool", False, "Use xnnpack"),
    ("xnnpack_force_fp16", "bool", False, "xnnpack_force_fp16"),
    ("use_gpu", "bool", False, "Use gpu"),
    ("gpu_precision_loss_allowed", "bool", True, "Allow lower precision in gpu"),
    ("gpu_experimental_enable_quant", "bool", True, "Enable running quant models in gpu"),
    ("gpu_backend", "string", "", "GPU backend"),
    ("use_nnapi", "bool", False, "Use NNAPI"),
]
# delegate providers in registration order, with the flag that turns each on and its GetName()
DELEGATES = [("use_gpu", "GPU"), ("use_nnapi", "NNAPI"), ("use_xnnpack", "XNNPACK")]

_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def stream_parse(text: str, kind: str) -> tuple[bool, object]:
    """``std::istringstream s(text); T v; s >> v;`` then the tool's test ``!s.eof() && !s.good()`` -> failure.
    A leading number is enough (``4x`` -> 4); nothing readable fails unless the stream hit its end (empty
    text reads as 0); an int32 out of range sets failbit (accepted only when the whole text was read)."""
    m = (_INT if kind == "int32" else _FLOAT).match(text)
    if not m:
        return (text.strip() == ""), 0
    eof = m.end() == len(text)
    v = int(m.group()) if kind == "int32" else float(m.group())
    if kind == "int32" and not -2**31 <= v < 2**31:
        return eof, max(-2**31, min(2**31 - 1, v))
    return True, v


def parse_value(kind: str, text: str) -> tuple[bool, object]:
    if kind == "bool":  # ParseBoolFlag
        return text in ("true", "false", "0", "1"), text in ("true", "1")
    if kind == "string":
        return True, text
    return stream_parse(text, kind)


def parse_flags(argv: list[str]) -> tuple[bool, dict, list[str], list[str]]:
    """Flags::Parse: (ok, {name: value set on the command line}, error lines, unconsumed args)."""
    unknown = [True] * len(argv)
    values: dict = {}
    errors: list[str] = []
    ok = True
    for name, kind, _, _ in FLAGS:
        prefix = f"--{name}="
        for i, arg in enumerate(argv):
            if not unknown[i] or not arg.startswith(prefix):
                continue
            good, val = parse_value(kind, arg[len(prefix):])
            if good:
                values[name] = (val, i)
            else:
                errors.append(f"Failed to parse flag '{name}' against argv '{arg}'")
                ok = False
            unknown[i] = False
            break
    rest = [a for a, u in zip(argv, unknown) if u]
    return ok and not (rest and rest[0] == "--help"), values, errors, rest


def usage(argv0: str) -> str:
    """Flags::Usage."""
    rows = [(f"--{n}={_show(k, d)}", k) for n, k, d, _ in FLAGS]
    w = max(len(r[0]) for r in rows)
    return (f"usage: {argv0} <flags>\nFlags:\n"
            + "".join(f"\t{c:<{w}}\t{k}\toptional\t\n" for c, k in rows))


def _show(kind: str, v) -> str:
    if kind == "bool":
        return "true" if v else "false"
    if kind == "float":
        return f"{v:g}"
    return str(v)


def split(s: str, delim: str) -> list[str]:
    """absl::StrSplit with the tool's empty-string rule."""
    return s.split(delim) if s else []


def split_and_parse_ints(s: str, delim: str) -> tuple[bool, list[int]]:
    """util::SplitAndParse<int> (benchmark_utils.h): std::getline pieces, each read with ``>>``."""
    pieces = s.split(delim)
    if pieces and pieces[-1] == "":
        pieces.pop()  # getline yields no empty piece after a trailing delimiter
    out = []
    for p in pieces:
        good, v = stream_parse(p, "int32")
        if not good:
            return False, out
        out.append(int(v))
    return True, out


_ATOI = re.compile(r"\s*([+-]?\d+)\s*")


def simple_atoi(s: str) -> int | None:
    m = _ATOI.fullmatch(s)
    if not m or not -2**31 <= int(m.group(1)) < 2**31:
        return None
    return int(m.group(1))


def populate_input_layer_info(names_s: str, shapes_s: str, ranges_s: str, files_s: str) -> tuple[list[dict], str | None]:
    """PopulateInputLayerInfo: (layer infos, an ERROR message or None); raises Abort for the FATAL cases."""
    names, shapes = split(names_s, ","), split(shapes_s, ":")
    if len(names) != len(shapes):
        return [], (f"The number of items in --input_layer_shape ({shapes_s}, with {len(shapes)} items) must match "
                    f"the number of items in --input_layer ({names_s}, with {len(names)} items). For example "
                    "--input_layer=input1,input2 --input_layer_shape=1,224,224,4:1,20")
    info = []
    for name, shape in zip(names, shapes):
        good, dims = split_and_parse_ints(shape, ",")
        if not good:
            raise Abort(f"Incorrect size string specified: {shape}")
        if -1 in dims:
            return [], ("Any unknown sizes in the shapes (-1's) must be replaced with the size you want to "
                        "benchmark with.")
        info.append({"name": name, "shape": dims, "range": None, "file": None})

    def find(name: str) -> dict:  # FindLayerInfoIndex
        for x in info:
            if x["name"] == name:
                return x
        raise Abort(f"Cannot find the corresponding input_layer name({name}) in --input_layer as {names_s}")

    for val in split(ranges_s, ":"):
        nr = split(val, ",")
        if len(nr) != 3:
            return [], f"Wrong input value range item specified: {val}"
        x = find(nr[0])
        lo, hi = simple_atoi(nr[1]), simple_atoi(nr[2])
        if lo is None or hi is None or lo > hi:
            return [], f"Wrong low and high value of the input value range specified: {val}"
        x["range"] = (lo, hi)
    for val in split(files_s, ","):
        nf = split(val, ":")
        if len(nf) != 2:
            return [], f"Wrong input value file item specified: {val}"
        find(nf[0])["file"] = nf[1]
    return info, None


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


def run_benchmark(device, path: str, args: list[str], out, err, proc) -> int:
    """One run of the tool; ``proc`` is its stand-in process (``proc.killed`` is set by pkill)."""
    prof = device.profile
    prefix = prof.output_format != "older"  # older releases logged without severity prefixes

    def log(sev: str, msg: str) -> None:  # tools/logging.h
        if sev in ("INFO", "WARN"):
            out(((f"{sev}: " if prefix or sev == "WARN" else "") + msg + "\n").encode())
        else:
            err(f"{sev}: {msg}\n".encode())

    def abort(msg: str) -> int:
        log("FATAL", msg)
        err(b"Aborted \n")  # the device shell's report of SIGABRT
        return 134

    def failed() -> int:  # benchmark_main.cc
        log("ERROR", "Benchmarking failed.")
        return 1

    log("INFO", "STARTING!")
    ok, given, errors, rest = parse_flags(args)
    flags = {n: given[n][0] if n in given else d for n, _, d, _ in FLAGS}
    with device.lock:
        device.bench_runs += 1
        nrun = device.bench_runs
        call = {"binary": path, "argv": list(args), "flags": {n: a[len(n) + 3:] for n in given
                                                              for a in [args[given[n][1]]]},
                "mask": device.current_mask, "started": time.time(),
                "others_running": [p.pid for p in device.processes.values() if p is not proc]}
        device.bench_calls.append(call)
    for e in errors:
        log("ERROR", e)
    if not ok or flags["help"]:
        log("ERROR", usage(path))
        return failed()
    if rest:
        log("WARN", "Unconsumed cmdline flags: " + " ".join(rest))
    # ValidateParams
    if not flags["graph"]:
        log("ERROR", "Please specify the name of your TF Lite input file with --graph")
        return failed()
    try:
        layers, problem = populate_input_layer_info(flags["input_layer"], flags["input_layer_shape"],
                                                    flags["input_layer_value_range"],
                                                    flags["input_layer_value_files"])
    except Abort as e:
        call["aborted"] = str(e)
        return abort(str(e))
    if problem:
        log("ERROR", problem)
        return failed()
    # LogParams: only what the command line set (verbose: everything)
    log("INFO", f"Log parameter values verbosely: [{int(flags['verbose'])}]")
    for name, kind, _, desc in FLAGS:
        if desc and (name in given or flags["verbose"] or name == "graph"):
            v = flags[name]
            log("INFO", f"{desc}: [{int(v) if kind == 'bool' else _show(kind, v)}]")

    if prof.disconnect_on_run is not None and nrun >= prof.disconnect_on_run:
        threading.Timer(0.2, device.disconnect).start()
        proc.killed.wait(30)
        return 1
    if prof.bench_hang:
        proc.killed.wait(3600)
        call["killed"] = proc.killed.is_set()
        return 128 + (proc.signal or 15)
    graph = flags["graph"]
    if prof.bench_crash:
        log("INFO", f"Loaded model {graph}")
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
        head = b""
    if head[4:8] != b"TFL3":
        log("ERROR", f"Failed to mmap model {graph}")
        return failed()
    log("INFO", f"Loaded model {graph}")

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    threads = flags["num_threads"]
    no_default = "use_xnnpack" in given and not flags["use_xnnpack"]  # GetOpResolver
    size_mb = os.path.getsize(h) / 1e6
    t0 = time.perf_counter()
    interp = Interpreter(model_path=h, num_threads=None if threads < 1 else threads,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                         if no_default else OpResolverType.AUTO)
    log("INFO", "Initialized TensorFlow Lite runtime.")
    if not no_default:
        log("INFO", "Created TensorFlow Lite XNNPACK delegate for CPU.")
    # ProvidedDelegateList::CreateAllRankedDelegates: one per provider switched on, ranked by flag position
    created = sorted(((given[f][1], n) for f, n in DELEGATES if flags[f]), key=lambda x: x[0])
    for _, name in created:
        log("INFO", f"{name} delegate created.")
    log("INFO", f"Going to apply {len(created)} delegates one after another.")
    call["delegates"] = [n for _, n in created]
    for _, name in created:
        if name == "GPU" and not prof.gpu_available:
            log("ERROR", f"TfLiteGpuDelegate Init: {prof.gpu_init_error}")
            log("INFO", "Created 0 GPU delegate kernels.")
            log("ERROR", "TfLiteGpuDelegate Prepare: delegate is not initialized")
            log("ERROR", "Node number 0 (TfLiteGpuDelegateV2) failed to prepare.")
        if (name == "GPU" and not prof.gpu_available) or name in prof.failing_delegates:
            log("ERROR", "Restored original execution plan after delegate application failure.")
            log("ERROR", f"Failed to apply {name} delegate.")
            call["failed_delegate"] = name
            return failed()
        log("INFO", f"Explicitly applied {name} delegate, and the model graph will be completely executed by the "
                    "delegate.")
    details = interp.get_input_details()
    if layers and len(layers) != len(details):
        call["aborted"] = "inputs mismatch"
        return abort(f"Inputs mismatch: Model inputs #:{len(layers)} expected: {len(details)}")
    for j, x in enumerate(layers):  # matched by position
        d = details[j]
        if x["name"] != d["name"]:
            log("WARN", f"Tensor # {d['index']} is named {d['name']} but flags call it {x['name']}")
        if len(x["shape"]) != len(d["shape"]):
            log("ERROR", f"Input tensor #{d['index']} should have {len(d['shape'])} dimensions!")
            return failed()
    for j, x in enumerate(layers):
        interp.resize_tensor_input(details[j]["index"], x["shape"])
    try:
        interp.allocate_tensors()
    except (RuntimeError, ValueError):
        log("ERROR", "Failed to allocate tensors!")
        return failed()
    init_us = (time.perf_counter() - t0) * 1e6
    log("INFO", f"The input model file size (MB): {size_mb:.6g}")
    log("INFO", f"Initialized session in {init_us / 1e3:.3f}ms.")
    # PrepareInputData / CreateRandomTensorData: the layer info of the same *position*
    rng = np.random.default_rng(0)
    call["inputs"] = {}
    defaults = {np.dtype("uint8"): (0, 254), np.dtype("int8"): (-127, 127)}
    for j, d in enumerate(interp.get_input_details()):
        x = layers[j] if layers else None
        if x and x["file"]:
            data = device.fs.read_bytes(x["file"])
            if data is None:
                return abort(f"Failed to read the input_layer_value_file:{x['file']}")
            need = int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
            if len(data) != need:
                return abort(f"The size of {x['file']} is {len(data)} bytes. It should be {need} bytes.")
            val = np.frombuffer(data, dtype=d["dtype"]).reshape(d["shape"])
        elif np.issubdtype(d["dtype"], np.integer):
            lo, hi = x["range"] if x and x["range"] else defaults.get(np.dtype(d["dtype"]), (0, 99))
            call["inputs"][d["name"]] = {"low": lo, "high": hi, "given": bool(x and x["range"]),
                                         "flag_name": x["name"] if x else None}
            val = rng.integers(lo, hi + 1, size=d["shape"]).astype(d["dtype"])
        else:
            val = (rng.random(size=d["shape"]) - 0.5).astype(d["dtype"])
        interp.set_tensor(d["index"], val)

    num_runs, min_secs, max_secs = flags["num_runs"], flags["min_secs"], flags["max_secs"]
    warm_runs, warm_min = flags["warmup_runs"], flags["warmup_min_secs"]
    if flags["dry_run"]:
        warm_runs, warm_min, num_runs, min_secs = 0, -1.0, 0, -1.0
    def say(line: str) -> None:
        log("INFO", line) if line else out(b"\n")

    device.running_benchmark = True
    try:
        def loop(min_n: int, min_s: float) -> list[float]:
            xs: list[float] = []
            start = time.perf_counter()
            while True:
                el = time.perf_counter() - start
                if (len(xs) >= min_n and el >= min_s) or el > max_secs or proc.killed.is_set():
                    return xs
                a = time.perf_counter()
                interp.invoke()
                xs.append(int((time.perf_counter() - a) * 1e6))  # Stat<int64_t> of whole microseconds

        say(f"Running benchmark for at least {warm_runs} iterations and at least {warm_min:g} seconds but "
            f"terminate if exceeding {max_secs:g} seconds.")
        warm = _stats(loop(warm_runs, warm_min))
        if proc.killed.is_set():
            return 128 + proc.signal
        say(_stats_line(warm, prof.output_format))
        say("")
        if prof.bench_hang_after_warmup:
            proc.killed.wait(3600)
            call["killed"] = proc.killed.is_set()
            return 128 + (proc.signal or 15)
        say(f"Running benchmark for at least {num_runs} iterations and at least {min_secs:g} seconds but "
            f"terminate if exceeding {max_secs:g} seconds.")
        meas = _stats(loop(num_runs, min_secs))
        if proc.killed.is_set():
            return 128 + proc.signal
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
        if flags["report_peak_memory_footprint"]:
            say(f"Overall peak memory footprint (MB) via periodic monitoring: {peak:.4g}")
    if flags["enable_op_profiling"]:
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
