"""``mobilebert-mobile devices | bench | bench-report`` (registered by mobilebert_mobile.cli; imports nothing
heavy: no torch, no TensorFlow, no LiteRT)."""
from __future__ import annotations

import argparse
import json
import os
import sys

EPILOG_ADB = "adb: --adb PATH, else $MOBILEBERT_ADB, else `adb` on PATH (Debian/Ubuntu: apt-get install adb)."


def register(sub) -> None:
    s = sub.add_parser("devices", help="list attached Android devices (adb) with SoC, cores and frequencies",
                       description="List the devices the adb server sees, with state, model, SoC/platform, "
                                   "Android version and SDK, ABI, cores with their max frequency and the big "
                                   "cores the benchmark pins to.", epilog=EPILOG_ADB)
    s.add_argument("--adb", metavar="PATH", help="the adb client to use")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_devices)

    s = sub.add_parser("bench", help="latency of a model on attached phones (TFLite benchmark_model over adb)",
                       description="Push the model and TFLite's benchmark_model to each device, run it with BERT "
                                   "inputs (ids in the vocabulary, mask 1, token types 0..1) pinned to the fastest "
                                   "cores, once per configuration (threads x delegate), cooling down in between; "
                                   "append one JSON line per run to the results file.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=EPILOG_ADB)
    s.add_argument("model", metavar="MODEL_OR_BUNDLE", help="a bundle directory or a .tflite file")
    s.add_argument("--device", default="all", help="device serial, comma list, or 'all'")
    s.add_argument("--adb", metavar="PATH", help="the adb client to use")
    s.add_argument("--benchmark-binary", metavar="PATH",
                   help="TFLite's benchmark_model for Android (e.g. android_aarch64_benchmark_model); "
                        "cached per ABI, so give it once")
    s.add_argument("--abi", help="the ABI --benchmark-binary is built for (checked against its ELF header)")
    s.add_argument("--benchmark-version", help="record this version for --benchmark-binary "
                                               "(default: read from the binary when possible)")
    s.add_argument("--precision", help="bundle model(s): a precision, comma list, or 'all' (default: the "
                                       "bundle's default model)")
    s.add_argument("--vocab-size", type=int,
                   help="input_ids range 0..N-1 (default: the bundle's vocab.txt, else 30522)")
    s.add_argument("--threads", default="1,4", help="comma-separated thread counts")
    s.add_argument("--delegate", default="xnnpack", help="comma list of cpu, xnnpack, gpu, nnapi")
    s.add_argument("--runs", type=int, default=50, help="measured runs (--num_runs)")
    s.add_argument("--warmup-runs", type=int, default=1, help="warm-up runs (--warmup_runs)")
    s.add_argument("--min-secs", type=float, help="--min_secs of the tool (its default: 1)")
    s.add_argument("--warmup-min-secs", type=float, help="--warmup_min_secs of the tool (its default: 0.5)")
    s.add_argument("--max-secs", type=float, help="--max_secs of the tool (its default: 150)")
    s.add_argument("--op-profiling", action="store_true", help="also print per-op tables (--enable_op_profiling)")
    s.add_argument("--results", default="android-bench.jsonl", help="results file (JSON lines, appended)")
    s.add_argument("--resume", action="store_true",
                   help="skip configurations already in the results file (device + model sha256 + configuration)")
    s.add_argument("--cooldown-timeout", type=float, default=300.0,
                   help="seconds to wait for thermal status 0 before each configuration (then run, flagged)")
    s.add_argument("--cooldown-poll", type=float, default=10.0, help="seconds between thermal checks")
    s.add_argument("--max-battery-temp", type=float, default=40.0, help="cool enough below this battery °C")
    s.add_argument("--run-timeout", type=float, default=600.0, help="seconds one benchmark run may take")
    s.add_argument("--adb-timeout", type=float, default=300.0, help="seconds a push may take")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print the records of this run as JSON")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("bench-report", help="Markdown table and PNG charts from a bench results file",
                       description="Turn a results JSONL file of `mobilebert-mobile bench` into report.md, "
                                   "report.json and latency.png (latest successful run per device, model and "
                                   "configuration; failures listed).")
    s.add_argument("results", metavar="RESULTS.jsonl")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_report)


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_devices(args) -> int:
    from .adb import Adb, AdbError, DeviceError
    from .devices import core_ranges, freq_summary, list_devices

    try:
        adb = Adb(args.adb)
        rows = list_devices(adb)
    except (AdbError, DeviceError) as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no devices attached (check the cable, USB debugging, `adb devices`)")
        return 0
    print(f"{'serial':<22}{'state':<14}{'model':<16}{'SoC/platform':<20}{'android':<12}{'abi':<13}"
          f"{'cores':<7}{'max freq':<26}big cores")
    for r in rows:
        if r["state"] != "device" or "error" in r:
            note = r.get("error") or r.get("hint") or ""
            print(f"{r['serial']:<22}{r['state']:<14}{r.get('model', ''):<16}{note}")
            continue
        soc = "/".join(x for x in (r.get("soc"), r.get("platform")) if x)
        android = f"{r['android']} ({r['sdk']})"
        print(f"{r['serial']:<22}{r['state']:<14}{r['model']:<16}{soc:<20}{android:<12}"
              f"{r['abi']:<13}{r['cores']:<7}{freq_summary(r['max_freq_khz']):<26}"
              f"{core_ranges(r['big_cores'])} (mask {r['taskset_mask']})")
    return 0


def _select_devices(adb, spec: str) -> tuple[list[str], list[str]]:
    """(usable serials, messages for the unusable ones)."""
    from .devices import STATE_HELP

    attached = adb.devices()
    by = {d["serial"]: d for d in attached}
    wanted = [d["serial"] for d in attached] if spec == "all" else [s for s in spec.split(",") if s]
    ok, bad = [], []
    for s in wanted:
        d = by.get(s)
        if d is None:
            bad.append(f"{s}: not attached (attached: {', '.join(by) or 'none'})")
        elif d["state"] != "device":
            bad.append(f"{s}: device is {d['state']}: {STATE_HELP.get(d['state'], 'not usable')}")
        else:
            ok.append(s)
    return ok, bad


def cmd_bench(args) -> int:
    from . import binary as binmod
    from .adb import Adb, AdbError
    from .bench import DELEGATES, BenchError, Config, Options, resolve_models, run_bench

    try:
        threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        return _err(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not threads or min(threads) < 1:
        return _err("--threads needs positive integers")
    delegates = [d.strip() for d in args.delegate.split(",") if d.strip()]
    bad = [d for d in delegates if d not in DELEGATES]
    if bad or not delegates:
        return _err(f"unknown delegate {', '.join(bad) or '(none)'}; choose from {', '.join(DELEGATES)}")
    if args.runs < 1:
        return _err("--runs must be at least 1")
    try:
        models = resolve_models(args.model, args.precision, args.vocab_size)
    except BenchError as e:
        return _err(str(e))
    if args.benchmark_binary:
        try:
            info = binmod.install(args.benchmark_binary, args.abi, args.benchmark_version)
        except binmod.BinaryError as e:
            return _err(str(e))
        print(f"benchmark binary for {info['abi']} cached: {info['path']} (version {info['version']})",
              file=sys.stderr)
    try:
        adb = Adb(args.adb)
        serials, problems = _select_devices(adb, args.device)
    except AdbError as e:
        return _err(str(e))
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not serials:
        return _err("no usable device" + ("" if problems else ": none attached (check the cable and USB debugging; "
                                                                "`mobilebert-mobile devices` lists what adb sees)"))
    configs = [Config(threads=t, delegate=d, num_runs=args.runs, warmup_runs=args.warmup_runs,
                      min_secs=args.min_secs, warmup_min_secs=args.warmup_min_secs, max_secs=args.max_secs,
                      op_profiling=args.op_profiling) for d in delegates for t in threads]
    opts = Options(cooldown_timeout=args.cooldown_timeout, cooldown_poll=args.cooldown_poll,
                   max_battery_c=args.max_battery_temp, run_timeout=args.run_timeout,
                   transfer_timeout=args.adb_timeout, resume=args.resume, progress=not args.no_progress)
    results = os.path.abspath(args.results)
    try:
        outcomes = run_bench(adb, serials, models, configs, results, opts)
    except BenchError as e:
        return _err(str(e))
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are in {results}; run the same command with --resume to go on",
              file=sys.stderr)
        return 130
    records = [r for o in outcomes for r in o.pop("records")]
    if args.json:
        print(json.dumps({"results": results, "devices": outcomes, "records": records}, indent=2, default=str))
    else:
        _print_table(records)
        for o in outcomes:
            status = f"error: {o['error']}" if o["error"] else "done"
            print(f"{o['serial']}: {o['ok']} ok, {o['failed']} failed, {o['skipped']} already done; {status}")
        print(f"results: {results}")
    failed = bool(problems) or any(o["error"] or o["failed"] for o in outcomes)
    return 1 if failed else 0


def _print_table(records: list[dict]) -> None:
    if not records:
        return
    print(f"{'device':<24}{'model':<28}{'thr':>4} {'delegate':<9}{'mean ms':>9}{'std':>8}{'min':>9}{'max':>9}"
          f"{'p50':>9}  status")
    for r in records:
        f = r.get("figures") or {}

        def g(k, f=f):
            return f"{f[k]:.2f}" if f.get(k) is not None else "–"

        st = "ok" + (" (thermal rose)" if (r.get("thermal") or {}).get("rose") else "") if r["status"] == "ok" \
            else "FAILED: " + (r.get("error") or "")[:80]
        print(f"{r['device']['serial']:<24}{r['model']['name'][:27]:<28}{r['config']['threads']:>4} "
              f"{r['config']['delegate']:<9}{g('mean_ms'):>9}{g('std_ms'):>8}{g('min_ms'):>9}{g('max_ms'):>9}"
              f"{g('p50_ms'):>9}  {st}")


def cmd_report(args) -> int:
    from .report import ReportError, write_report

    try:
        summary = write_report(args.results, args.out)
    except ReportError as e:
        return _err(str(e))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        with open(summary["files"]["markdown"], encoding="utf-8") as fh:
            print(fh.read())
        print("wrote " + ", ".join(summary["files"].values()))
    return 0
