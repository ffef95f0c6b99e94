"""``bench-host``: latency of our TFLite models beside the peers a user would reach for, on this machine.

Variants (each in its own worker process, interleaved round by round so drift hits all alike):
our PyTorch model (eager, and torch.compile when it works here), transformers' MobileBERT on the
same weights, ONNX Runtime fp32 and its dynamic int8 quantization of our ONNX, litert-torch's
direct PyTorch -> TFLite conversion (fp32 and dynamic int8; converted in its own venv), and our
TFLite at every precision. For each: median / p10 / p90 / p99 over a fixed number of runs after
warm-up at each thread count, model size, peak RSS, load and first-call time, and fidelity to
float PyTorch on real sentences. Then the compute floor and the scaling with sequence length and
batch size. Writes results.json, results.jsonl (one line per variant as it finishes),
results.md and PNG charts.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import time

import numpy as np

from . import floor, macs
from .variants import INPUTS, worker
from mobilebert_mobile.converters.reuse import convert_reusing  # reruns reuse OUT/work only when nothing changed
from mobilebert_mobile.errors import StageError

PEERS_VENV = ".venv-peers"


class BenchError(StageError):
    """The suite cannot run with the given options."""


# ------------------------------------------------------------------------ set-up
def build_checkpoint(preset: str, layers: int | None, out: str, seed: int = 0) -> str:
    import torch

    from mobilebert_mobile.config import ConfigError, MobileBertConfig
    from mobilebert_mobile.modeling import MobileBertForSequenceClassification

    try:
        kw = {"num_hidden_layers": layers} if layers else {}
        cfg = MobileBertConfig.from_preset(preset, **kw).with_labels(["negative", "positive"])
    except ConfigError as e:
        raise BenchError(str(e)) from None
    if os.path.isfile(os.path.join(out, "model.safetensors")):
        return out
    torch.manual_seed(seed)
    model = MobileBertForSequenceClassification(cfg)
    # A fresh init has NoNorm gamma = 1, beta = 0 and zero biases, which the TFLite optimiser deletes:
    # that would flatter every variant that folds constants. Give them trained-like values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
    model.save_pretrained(out)
    return out


def litert_torch_python(venv: str | None = None) -> str | None:
    """The peers venv's python: ``venv``, else ``$MOBILEBERT_MOBILE_PEERS_VENV``, else ``.venv-peers`` in the
    current directory (where ``bash scripts/setup.sh peers`` creates it)."""
    venv = venv or os.environ.get("MOBILEBERT_MOBILE_PEERS_VENV") or PEERS_VENV
    py = os.path.join(os.path.abspath(venv), "bin", "python")
    return py if os.path.isfile(py) else None


def convert_with_litert_torch(checkpoint: str, out_dir: str, seq_len: int, batch: int,
                              venv: str | None = None) -> dict:
    """Run litert-torch (fp32 and its dynamic int8) in the peers venv; returns {name: path or error}."""
    import importlib.util

    py = litert_torch_python(venv)
    if py is None:
        reason = (f"litert-torch is not installed: create its venv with `bash scripts/setup.sh peers` "
                  f"({PEERS_VENV}/, kept apart because it downgrades pydantic/typing_extensions)")
        return {"litert-torch fp32": reason, "litert-torch dynamic-int8": reason}
    os.makedirs(out_dir, exist_ok=True)
    script = importlib.util.find_spec("mobilebert_mobile.benchmarks.litert_torch_export").origin  # standalone script
    # the peers venv does not install us: it imports our model classes from the source tree (read only)
    root = os.path.dirname(importlib.util.find_spec("mobilebert_mobile").submodule_search_locations[0])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([py, script, checkpoint, out_dir, str(seq_len), str(batch)], capture_output=True, text=True,
                       timeout=1800, env=env)
    result = {}
    for name, fname in (("litert-torch fp32", "litert_torch_fp32.tflite"),
                        ("litert-torch dynamic-int8", "litert_torch_dynamic_int8.tflite")):
        p = os.path.join(out_dir, fname)
        result[name] = p if os.path.isfile(p) else f"litert-torch conversion failed: {r.stderr.strip()[-300:]}"
    return result


def ort_dynamic_int8(onnx_path: str, out_path: str) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not os.path.isfile(out_path):
        quantize_dynamic(onnx_path, out_path, weight_type=QuantType.QInt8)
    return out_path


# ------------------------------------------------------------------------ measuring
def _pcts(ts: list[float]) -> dict:
    a = np.asarray(ts) * 1e3
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "runs": int(a.size)}


def measure_variants(specs: dict, threads: int, bench_feeds: dict, fid_feeds: dict, *, runs: int, warmup: int,
                     rounds: int, log) -> dict:
    """Start one worker per variant, interleave ``rounds`` rounds of runs, collect everything."""
    ctx = mp.get_context("spawn")
    live, results = {}, {}
    for name, spec in specs.items():
        if isinstance(spec, str):
            results[name] = {"status": "skipped", "reason": spec}
            continue
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(spec, threads, bench_feeds, child), daemon=True)
        p.start()
        if not parent.poll(900):
            p.kill()
            results[name] = {"status": "failed", "reason": "did not load within 900 s"}
            continue
        try:
            hello = parent.recv()
        except EOFError:
            p.join(5)
            results[name] = {"status": "crashed", "reason": f"worker exited with code {p.exitcode} while loading"}
            continue
        if not hello["ok"]:
            results[name] = {"status": "skipped", "reason": hello["error"]}
            p.join(5)
            continue
        live[name] = (p, parent)
        results[name] = {"status": "ok", "load_s": hello["load_s"], "first_call_s": hello["first_call_s"],
                         "size_mb": (hello["size_bytes"] / 2**20) if hello["size_bytes"] else None, "_times": []}
        log(f"  loaded {name} ({threads} thread(s)) in {hello['load_s']:.1f}s")
    per_round = max(1, runs // rounds)

    def ask(name, cmd, arg=None, timeout=600):
        p, conn = live[name]
        conn.send((cmd, arg))
        if not conn.poll(timeout):
            p.kill()
            raise TimeoutError(f"no answer to {cmd} within {timeout}s")
        return conn.recv()

    for name in list(live):
        try:
            ask(name, "run", warmup)
        except (EOFError, TimeoutError, BrokenPipeError) as e:
            _fail(results, live, name, e)
    for _ in range(rounds):
        for name in list(live):
            try:
                results[name]["_times"] += ask(name, "run", per_round)
            except (EOFError, TimeoutError, BrokenPipeError) as e:
                _fail(results, live, name, e)
    for name in list(live):
        try:
            results[name]["outputs"] = ask(name, "outputs", fid_feeds)
            results[name]["peak_rss_mb"] = ask(name, "rss") / 2**20
            ask_stop = live[name][1]
            ask_stop.send(("stop", None))
        except (EOFError, TimeoutError, BrokenPipeError) as e:
            _fail(results, live, name, e)
        else:
            live[name][0].join(10)
    for name, r in results.items():
        times = r.pop("_times", None)
        if times:
            r.update(_pcts(times))
            r["samples_ms"] = [x * 1e3 for x in times]
    return results


def _fail(results, live, name, err) -> None:
    p, _ = live.pop(name)
    p.join(2)
    results[name] = {"status": "crashed", "reason": f"{type(err).__name__}: worker exit code {p.exitcode}"}


def fidelity(outputs: dict, ref: dict) -> dict:
    a, b = outputs["probabilities"], ref["probabilities"]
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "label_agreement": float(np.mean(a.argmax(-1) ==
                                                                                          b.argmax(-1)))}


# ------------------------------------------------------------------------ reports
def markdown(res: dict) -> str:
    f = res["floor"]
    lines = [f"# bench-host: {res['model']['preset'] or res['model']['checkpoint']}, "
             f"{res['model']['layers']} layers, seq {res['seq_len']}, batch {res['batch']}", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores. "
             f"{res['runs']} runs per variant after {res['warmup']} warm-up runs, interleaved in "
             f"{res['rounds']} rounds. Command: `{res['command']}`", "",
             f"Model: {res['macs']['total'] / 1e9:.3f} G multiply-accumulates per sequence. Measured here: XNNPACK "
             f"{f['throughput']['xnnpack_fp32_gmacs']:.0f} G fp32 and {f['throughput']['xnnpack_int8_gmacs']:.0f} G "
             f"int8 MAC/s on {f['throughput']['threads']} threads, so the floors are {f['fp32_ms']:.1f} ms fp32 and "
             f"{f['int8_ms']:.1f} ms int8 (single-large-GEMM floor).", ""]
    if res.get("conversion_total_s"):
        times = {k: v.get("time_s") for k, v in res.get("conversion", {}).items() if v.get("time_s") is not None}
        lines += [f"Our conversion of {len(res.get('precisions') or []) or 'every'} precision(s), each verified "
                  f"against PyTorch: {res['conversion_total_s']:.0f} s in all (" +
                  ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ").", ""]
    isa = res["machine"].get("int8_isa") or {}
    if isa:
        lines += [f"int8 ISA: {isa.get('best')} (int8 dot product: {'yes' if isa.get('int8_dot_product') else 'no'}).", ""]
    th = f["throughput"]
    if th.get("xnnpack_int8_gmacs_1thread") and th.get("threads", 1) > 1:
        i1, i2 = th["xnnpack_int8_gmacs_1thread"], th["xnnpack_int8_gmacs"]
        f1, f2 = th["xnnpack_fp32_gmacs_1thread"], th["xnnpack_fp32_gmacs"]
        lines += [f"Thread scaling of the GEMM chain: int8 {i1:.0f} G MAC/s on 1 thread, {i2:.0f} G on "
                  f"{th['threads']} ({i2 / i1:.2f}x); fp32 {f1:.0f} G on 1, {f2:.0f} G on {th['threads']} "
                  f"({f2 / f1:.2f}x).", ""]
    sf = f.get("shape_aware")
    if sf:
        lines += [f"Shape-aware floor (each of the model's {len(sf['shapes'])} GEMM shapes timed alone as a one-op "
                  f".tflite, summed by count): {sf['fp32_ms']:.1f} ms fp32, {sf['int8_ms']:.1f} ms int8 (each shape "
                  f"at the faster of its int8 and fp32 kernels; {sf['all_int8_ms']:.1f} ms with every GEMM int8). "
                  "`x shape floor` is the ratio to it.", ""]
    for t in res["threads"]:
        lines += [f"## {t} thread(s)", "",
                  "| variant | median ms | p10 | p90 | p99 | x floor | x shape floor | size MB | peak RSS MB | load s | "
                  "first call s | max abs diff | label agreement |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rows = res["variants"][str(t)]
        for name, r in sorted(rows.items(), key=lambda kv: kv[1].get("median_ms", 1e9)):
            if r["status"] != "ok":
                lines.append(f"| {name} | {r['status']}: {r['reason'][:90]} | | | | | | | | | | | |")
                continue
            fl = r.get("x_floor")
            lines.append(
                f"| {name} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{'' if fl is None else f'{fl:.2f}'} | {_fmt(r.get('x_shape_floor'))} | {_fmt(r.get('size_mb'))} | {_fmt(r.get('peak_rss_mb'), 0)} | "
                f"{r['load_s']:.2f} | {r['first_call_s']:.3f} | {r['fidelity']['max_abs_diff']:.2g} | "
                f"{r['fidelity']['label_agreement']:.3f} |")
        lines.append("")
    if res.get("scaling"):
        lines += ["## Scaling (our TFLite, 2 threads, median ms)", "",
                  *([res["scaling"]["note"], ""] if res["scaling"].get("note") else []), "| shape | " +
                  " | ".join(res["scaling"]["precisions"]) + " |", "|---|" + "---|" * len(res["scaling"]["precisions"])]
        for row in res["scaling"]["rows"]:
            lines.append(f"| seq {row['seq_len']} x batch {row['batch']} | " +
                         " | ".join(_fmt(row.get(p)) for p in res["scaling"]["precisions"]) + " |")
        lines.append("")
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()), ""]
    return "\n".join(lines)


def _fmt(v, nd=2) -> str:
    return "" if v is None else f"{v:.{nd}f}"


def charts(res: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    t = str(max(res["threads"]))
    rows = {k: v for k, v in res["variants"][t].items() if v["status"] == "ok"}
    if rows and res.get("samples", {}).get(t):  # raw samples exist only in the run that measured them
        names = sorted(rows, key=lambda k: rows[k]["median_ms"])
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.5))
        ax.boxplot([res["samples"][t][n] for n in names], vert=False, tick_labels=names, showfliers=True,
                   whis=(10, 90))
        ax.axvline(res["floor"]["fp32_ms"], color="tab:blue", ls="--", lw=1, label="fp32 floor")
        ax.axvline(res["floor"]["int8_ms"], color="tab:red", ls="--", lw=1, label="int8 floor")
        ax.set_xlabel(f"latency ms (seq {res['seq_len']}, batch {res['batch']}, {t} threads)")
        ax.set_xscale("log")
        ax.legend(loc="lower right")
        ax.set_title("Latency distribution per variant (box: p10..p90 whiskers)")
        fig.tight_layout()
        p = os.path.join(out_dir, "latency.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)
    sc = res.get("scaling")
    if sc and sc["rows"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for prec in sc["precisions"]:
            seq_rows = [r for r in sc["rows"] if r["batch"] == 1 and r.get(prec)]
            axes[0].plot([r["seq_len"] for r in seq_rows], [r[prec] for r in seq_rows], marker="o", label=prec)
            b_rows = [r for r in sc["rows"] if r["seq_len"] == res["seq_len"] and r.get(prec)]
            axes[1].plot([r["batch"] for r in b_rows], [r[prec] for r in b_rows], marker="o", label=prec)
        axes[0].set(xlabel="sequence length (batch 1)", ylabel="median ms", xscale="log", yscale="log")
        axes[1].set(xlabel=f"batch size (seq {res['seq_len']})", ylabel="median ms", xscale="log", yscale="log")
        for ax in axes:
            ax.legend()
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle("How cost grows with work (our TFLite, 2 threads)")
        fig.tight_layout()
        p = os.path.join(out_dir, "scaling.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)
    return files


# ------------------------------------------------------------------------ scaling
def scaling(checkpoint: str, work: str, seq_lens, batches, base_seq: int, precisions, runs: int, log) -> dict:
    from .variants import _tflite_runner

    rows = []
    shapes = [(s, 1) for s in seq_lens] + [(base_seq, b) for b in batches if b != 1]
    for seq, batch in shapes:
        d = os.path.join(work, f"scaling_s{seq}_b{batch}")
        try:
            convert_reusing(checkpoint, d, precisions=tuple(precisions), seq_len=seq, batch_size=batch,
                            calibration_size=16, heldout_size=8, include_checkpoint=False, metadata=False, quiet=True)
            row = {"seq_len": seq, "batch": batch}
            for prec in precisions:
                run, _ = _tflite_runner({"path": os.path.join(d, f"model_{prec}.tflite")}, 2)
                feeds = {k: np.ones((batch, seq), np.int32) for k in INPUTS}
                for _ in range(3):
                    run(feeds)
                ts = []
                for _ in range(runs):
                    t = time.perf_counter()
                    run(feeds)
                    ts.append(time.perf_counter() - t)
                row[prec] = float(np.median(ts) * 1e3)
            rows.append(row)
            log(f"  scaling seq {seq} batch {batch}: " + ", ".join(f"{p} {row[p]:.2f} ms" for p in precisions))
        except Exception as e:  # one shape failing must not lose the others
            rows.append({"seq_len": seq, "batch": batch, "error": f"{type(e).__name__}: {e}"})
    return {"precisions": list(precisions), "rows": rows}


# ------------------------------------------------------------------------ suite
def run(*, checkpoint: str | None = None, preset: str = "mobilebert", layers: int | None = None, seq_len: int = 128,
        batch: int = 1, threads=(1, 2), runs: int = 100, warmup: int = 10, rounds: int = 5, out_dir: str,
        precisions=("fp32", "fp16", "dynamic-int8", "int8", "int8-full"), peers: bool = True, compile_torch: bool = True,
        do_scaling: bool = True, seq_lens=(32, 64, 128, 256, 512), batches=(1, 4, 16), fidelity_n: int = 64,
        quick: bool = False, command: str = "", log=print, peers_venv: str | None = None) -> dict:
    from mobilebert_mobile import assets
    from mobilebert_mobile.config import MobileBertConfig
    from mobilebert_mobile.converters.pipeline import _versions, machine
    from mobilebert_mobile.tokenizer import Tokenizer

    np.random.seed(0)
    os.makedirs(out_dir, exist_ok=True)
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    jsonl = os.path.join(out_dir, "results.jsonl")
    if checkpoint is None:
        checkpoint = build_checkpoint(preset, layers, os.path.join(work, "checkpoint"))
    elif not os.path.isdir(checkpoint):
        raise BenchError(f"checkpoint directory not found: {checkpoint}")
    else:
        preset = None
    cfg = MobileBertConfig.from_json(checkpoint)
    m = macs.model_macs(cfg, seq_len)
    log(macs.format_breakdown(m))

    log("converting with our converter (every precision, verified)")
    bundle = os.path.join(work, "bundle")
    convert_reusing(checkpoint, bundle, log, precisions=tuple(precisions), seq_len=seq_len, batch_size=batch,
                    calibration_size=32 if quick else 100, heldout_size=16 if quick else 100,
                    include_checkpoint=False, metadata=False, quiet=True)
    with open(os.path.join(bundle, "report.json"), encoding="utf-8") as fh:
        conv_report = json.load(fh)

    specs: dict = {"torch eager (ours)": {"kind": "torch", "checkpoint": checkpoint}}
    if compile_torch:
        specs["torch.compile (ours)"] = {"kind": "torch-compile", "checkpoint": checkpoint}
    specs["transformers eager"] = ({"kind": "transformers", "checkpoint": checkpoint} if cfg.transformers_compatible
                                   else "transformers cannot build this config")
    onnx_path = os.path.join(bundle, "model.onnx")
    specs["onnxruntime fp32"] = {"kind": "ort", "path": onnx_path}
    try:
        specs["onnxruntime dynamic-int8"] = {"kind": "ort", "path": ort_dynamic_int8(
            onnx_path, os.path.join(work, "model_ort_dynamic_int8.onnx"))}
    except Exception as e:
        specs["onnxruntime dynamic-int8"] = f"quantize_dynamic failed: {e}"
    if peers:
        log("converting with litert-torch (peers venv)")
        for name, p in convert_with_litert_torch(checkpoint, os.path.join(work, "litert_torch"), seq_len, batch,
                                                 peers_venv).items():
            specs[name] = {"kind": "tflite", "path": p} if os.path.isfile(p) else p
    for prec in precisions:
        specs[f"ours TFLite {prec}"] = {"kind": "tflite", "path": os.path.join(bundle, f"model_{prec}.tflite")}

    tok = Tokenizer.from_file(assets.vocab_path(), max_length=seq_len)
    sents = assets.sample_sentences(fidelity_n, offset=2000)
    fid = tok(sents).model_inputs()
    bench_feeds = tok([sents[0]] * batch).model_inputs()
    ref = _reference(checkpoint, fid)

    res = {"command": command, "model": {"checkpoint": checkpoint, "preset": preset, "layers": cfg.num_hidden_layers},
           "seq_len": seq_len, "batch": batch, "runs": runs, "warmup": warmup, "rounds": rounds,
           "threads": list(threads), "precisions": list(precisions), "seed": 0, "versions": _versions(),
           "machine": machine(), "macs": m,
           "conversion": {s["stage"]: {k: s.get(k) for k in ("max_abs_diff", "label_agreement", "size_mb",
                                                              "meets_target", "xnnpack", "time_s")}
                          for s in conv_report["stages"]},
           "conversion_total_s": conv_report.get("total_time_s"),
           "variants": {}, "samples": {}}
    res["machine"]["flags"] = _cpu_flags()
    for t in threads:
        log(f"measuring {len(specs)} variants at {t} thread(s), {runs} runs each in {rounds} interleaved rounds")
        got = measure_variants(specs, t, bench_feeds, fid, runs=runs, warmup=warmup, rounds=rounds, log=log)
        res["samples"][str(t)] = {}
        for name, r in got.items():
            if r["status"] == "ok":
                r["fidelity"] = fidelity(r.pop("outputs"), ref)
                res["samples"][str(t)][name] = r.pop("samples_ms")
            r.pop("outputs", None)
            with open(jsonl, "a", encoding="utf-8") as fh:  # appended as results come
                fh.write(json.dumps({"threads": t, "variant": name, **r}) + "\n")
        res["variants"][str(t)] = got
    log("measuring the compute floor (FULLY_CONNECTED chains through XNNPACK)")
    thr = floor.measure(threads=max(threads), runs=20 if quick else 50)
    fl = floor.floors_ms(m["total"], thr)
    res["floor"] = {"throughput": thr, "fp32_ms": fl["fp32"], "int8_ms": fl["int8"]}
    log("measuring the shape-aware floor (each GEMM shape of the model alone, fp32 and int8)")
    fp32_model = os.path.join(bundle, "model_fp32.tflite")
    if os.path.isfile(fp32_model):
        with open(fp32_model, "rb") as fh:
            sf = floor.shape_floor(fh.read(), threads=max(threads), runs=10 if quick else 30, rounds=2 if quick else 5)
        res["floor"]["shape_aware"] = sf
    for t, rows in res["variants"].items():
        for name, r in rows.items():
            if r["status"] == "ok":
                is_int = "int8" in name
                r["x_floor"] = r["median_ms"] / (fl["int8"] if is_int else fl["fp32"])
                if res["floor"].get("shape_aware"):
                    r["x_shape_floor"] = r["median_ms"] / res["floor"]["shape_aware"]["int8_ms" if is_int else "fp32_ms"]
    if do_scaling:
        log("scaling with sequence length and batch size")
        res["scaling"] = scaling(checkpoint, work, seq_lens, batches, seq_len, ("fp32", "dynamic-int8"),
                                 10 if quick else 30, log)
    _write(out_dir, res)
    return res


def _reference(checkpoint: str, feeds: dict) -> dict:
    import torch

    from mobilebert_mobile.modeling import MobileBertForSequenceClassification

    model = MobileBertForSequenceClassification.from_pretrained(checkpoint)
    with torch.inference_mode():
        logits = model(**{k: torch.from_numpy(v).long() for k, v in feeds.items()}).logits
    return {"probabilities": torch.softmax(logits, -1).numpy()}


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx", "f16c")))
    except OSError:
        pass
    return [platform.machine()]


def _write(out_dir: str, res: dict) -> None:
    from mobilebert_mobile._io import atomic_write_text

    atomic_write_text(os.path.join(out_dir, "results.md"), markdown(res))
    charts(res, out_dir)
    slim = {k: v for k, v in res.items() if k != "samples"}
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(slim, indent=2, default=str) + "\n")


def rerun_scaling(out_dir: str, *, checkpoint: str | None = None, preset: str = "mobilebert",
                  layers: int | None = None, seq_lens=(32, 64, 128, 256, 512), batches=(1, 4, 16), runs: int = 30,
                  log=print) -> dict:
    """Measure only the scaling again and update results.json / results.md / scaling.png in ``out_dir``."""
    import json as _json

    path = os.path.join(out_dir, "results.json")
    if not os.path.isfile(path):
        raise BenchError(f"no results.json in {out_dir}: run the full suite first")
    with open(path, encoding="utf-8") as fh:
        res = _json.load(fh)
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    if checkpoint is None:
        checkpoint = build_checkpoint(preset, layers, os.path.join(work, "checkpoint"))
    res["scaling"] = scaling(checkpoint, work, seq_lens, batches, res["seq_len"], ("fp32", "dynamic-int8"), runs,
                             log)
    res["scaling"]["note"] = "re-measured on its own (bench-host --scaling-only)"
    _write(out_dir, res)
    return res


def clean_work(out_dir: str) -> None:
    shutil.rmtree(os.path.join(out_dir, "work"), ignore_errors=True)
