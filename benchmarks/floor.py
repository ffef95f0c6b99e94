"""The compute floor: this machine's sustained GEMM throughput with the kernels our models use.

A chain of FULLY_CONNECTED layers shaped like MobileBERT's FFNs (128 rows, 128 -> 512 -> 128)
runs through LiteRT/XNNPACK in fp32 and in int8; numpy (BLAS) and torch GEMMs are reported
beside. floor_ms = model MACs / measured MAC/s.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

ROWS, WIDTH, FFN, DEPTH = 128, 128, 512, 16


def _fc_chain_tflite(int8: bool) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((WIDTH, FFN)).astype(np.float32) * 0.05,
           rng.standard_normal((FFN, WIDTH)).astype(np.float32) * 0.05) for _ in range(DEPTH)]

    @tf.function(input_signature=[tf.TensorSpec([ROWS, WIDTH], tf.float32)])
    def chain(x):
        for w1, w2 in ws:
            x = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
        return x

    conv = tf.lite.TFLiteConverter.from_concrete_functions([chain.get_concrete_function()])
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.standard_normal((ROWS, WIDTH)).astype(np.float32)]
                                               for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return bytes(conv.convert())


def _median_time(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def measure(threads: int = 2, runs: int = 50) -> dict:
    """MAC/s of fp32 and int8 FULLY_CONNECTED chains (LiteRT/XNNPACK) and of numpy/torch GEMM."""
    from mobilebert_mobile.runtime.litert import interpreter

    macs = DEPTH * 2 * ROWS * WIDTH * FFN
    out = {"threads": threads, "shape": f"{DEPTH} x (FC {WIDTH}->{FFN}, FC {FFN}->{WIDTH}) on {ROWS} rows",
           "macs": macs}
    with tempfile.TemporaryDirectory() as d:
        for kind in ("fp32", "int8"):
            p = os.path.join(d, f"{kind}.tflite")
            with open(p, "wb") as fh:
                fh.write(_fc_chain_tflite(kind == "int8"))
            gmacs = {}  # at the requested thread count, and on one thread: what more threads buy each kernel
            for th in dict.fromkeys((threads, 1)):
                it = interpreter(p, num_threads=th)
                it.allocate_tensors()
                inp = it.get_input_details()[0]
                x = np.random.default_rng(1).standard_normal(inp["shape"]).astype(inp["dtype"])
                if inp["dtype"] == np.int8:
                    x = np.clip(x * 20, -127, 127).astype(np.int8)
                it.set_tensor(inp["index"], x)
                gmacs[th] = macs / _median_time(it.invoke, runs) / 1e9
            out[f"xnnpack_{kind}_gmacs"], out[f"xnnpack_{kind}_gmacs_1thread"] = gmacs[threads], gmacs[1]
    a = np.random.default_rng(2).standard_normal((512, 512)).astype(np.float32)
    t = _median_time(lambda: a @ a, runs)
    out["numpy_fp32_gmacs"] = 512 ** 3 / t / 1e9
    try:
        import torch

        torch.set_num_threads(threads)
        ta = torch.from_numpy(a)
        t = _median_time(lambda: ta @ ta, runs)
        out["torch_fp32_gmacs"] = 512 ** 3 / t / 1e9
    except ImportError:
        pass
    return out


def floors_ms(model_macs: int, throughput: dict) -> dict:
    return {"fp32": model_macs / (throughput["xnnpack_fp32_gmacs"] * 1e9) * 1e3,
            "int8": model_macs / (throughput["xnnpack_int8_gmacs"] * 1e9) * 1e3}


# ------------------------------------------------------------------ shape-aware floor
def gemm_shapes(model_bytes: bytes) -> list[dict]:
    """Distinct GEMM shapes of a .tflite with their counts.

    FULLY_CONNECTED: rows M (product of the input's leading dims), K, N; BATCH_MATMUL: batch,
    M, K, N with its adjoint flags, read from the tensors' shapes."""
    from tensorflow.lite.tools import flatbuffer_utils

    from mobilebert_mobile.converters.tflite import op_name

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    sg = m.subgraphs[0]
    found: dict[tuple, int] = {}
    for op in sg.operators:
        name = op_name(m, op)
        if name == "FULLY_CONNECTED":
            x, w = (list(sg.tensors[i].shape) for i in op.inputs[:2])
            n, k = int(w[0]), int(w[1])
            rows = int(np.prod(x)) // k
            key = ("FULLY_CONNECTED", 1, rows, k, n, False, False)
        elif name == "BATCH_MATMUL":
            a, b = (list(sg.tensors[i].shape) for i in op.inputs[:2])
            o = op.builtinOptions
            adj_x, adj_y = bool(getattr(o, "adjX", False)), bool(getattr(o, "adjY", False))
            batch = int(np.prod(a[:-2]))
            mm, k = (a[-1], a[-2]) if adj_x else (a[-2], a[-1])
            n = b[-2] if adj_y else b[-1]
            key = ("BATCH_MATMUL", batch, int(mm), int(k), int(n), adj_x, adj_y)
        else:
            continue
        found[key] = found.get(key, 0) + 1
    return [{"op": k[0], "batch": k[1], "m": k[2], "k": k[3], "n": k[4], "adj_x": k[5], "adj_y": k[6],
             "count": c, "macs": k[1] * k[2] * k[3] * k[4]} for k, c in sorted(found.items(), key=lambda kv: -kv[1])]


def _one_gemm_tflite(shape: dict, int8: bool) -> bytes:
    """One FULLY_CONNECTED (constant weight) or one BATCH_MATMUL (two activations) of ``shape``;
    int8: full-integer quantized with int8 inputs and outputs (no QUANTIZE/DEQUANTIZE in the model)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    b, mm, k, n = shape["batch"], shape["m"], shape["k"], shape["n"]
    if shape["op"] == "FULLY_CONNECTED":
        w = rng.standard_normal((k, n)).astype(np.float32) * 0.05
        specs = [tf.TensorSpec([mm, k], tf.float32)]

        def f(x):
            return tf.matmul(x, w)
        gen = lambda: ([rng.standard_normal((mm, k)).astype(np.float32)] for _ in range(8))  # noqa: E731
    else:
        specs = [tf.TensorSpec([1, b, mm, k], tf.float32), tf.TensorSpec([1, b, k, n], tf.float32)]

        def f(x, y):
            return tf.matmul(x, y)
        gen = lambda: ([rng.standard_normal((1, b, mm, k)).astype(np.float32),  # noqa: E731
                        rng.standard_normal((1, b, k, n)).astype(np.float32)] for _ in range(8))
    fn = tf.function(f, input_signature=specs, autograph=False).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(conv.convert())


def shape_floor(model_bytes: bytes, *, threads: int = 2, runs: int = 30, rounds: int = 5, log=lambda s: None,
                models: dict[str, str] | None = None, seq_len: int = 128) -> dict:
    """Time every distinct GEMM shape of the model alone (one-op .tflite, fp32 and int8, XNNPACK,
    interleaved rounds), subtract the fixed invoke cost, and sum count x median per precision.
    ``models`` ({label: .tflite}) are whole models timed in the same interleaved rounds."""
    from .op_profile import _null_model, _Timed, run_interleaved

    shapes = gemm_shapes(model_bytes)
    with tempfile.TemporaryDirectory() as d:
        null_p = os.path.join(d, "null.tflite")
        with open(null_p, "wb") as fh:
            fh.write(_null_model())
        timed = {"null": _Timed(null_p, threads)}
        for j, s in enumerate(shapes):
            for kind in ("fp32", "int8"):
                p = os.path.join(d, f"{j}_{kind}.tflite")
                with open(p, "wb") as fh:
                    fh.write(_one_gemm_tflite(s, kind == "int8"))
                timed[(j, kind)] = _Timed(p, threads)
        if models:
            from .op_profile import model_feeds

            for lab, p in models.items():
                timed[("model", lab)] = _Timed(p, threads, model_feeds(p, seq_len))
        log(f"timing {len(shapes)} GEMM shapes x (fp32, int8)")
        run_interleaved(timed.values(), max(1, runs // rounds), rounds)
        null_ms = float(np.median(timed["null"].times) * 1e3)
        tot = {"fp32": 0.0, "int8": 0.0}
        for j, s in enumerate(shapes):
            for kind in ("fp32", "int8"):
                t = timed[(j, kind)]
                net = max(float(np.median(t.times) * 1e3) - null_ms, 0.0)
                s[f"{kind}_ms"] = net
                s[f"{kind}_xnnpack"] = t.delegated
                s[f"{kind}_gmacs"] = s["macs"] / (net * 1e-3) / 1e9 if net > 0 else None
                tot[kind] += net * s["count"]
        measured = {lab: float(np.median(timed[("model", lab)].times) * 1e3) for lab in (models or {})}
    # the as-deployed int8 floor: FULLY_CONNECTED in int8, attention matmuls in fp32 as our int8 graph runs them
    deployed = sum(s["count"] * (s["int8_ms"] if s["op"] == "FULLY_CONNECTED" else s["fp32_ms"]) for s in shapes)
    # the int8 floor: each shape at the faster of its int8 and fp32 kernels (an int8 BATCH_MATMUL that XNNPACK
    # does not take runs on the reference kernel, far slower than fp32: no int8 model would use it on this CPU)
    best = sum(s["count"] * min(s["int8_ms"], s["fp32_ms"]) for s in shapes)
    return {"threads": threads, "runs": runs, "rounds": rounds, "invoke_overhead_ms": null_ms, "shapes": shapes,
            "fp32_ms": tot["fp32"], "int8_ms": best, "all_int8_ms": tot["int8"], "int8_attention_fp32_ms": deployed,
            "measured_ms": measured}


def shape_floor_markdown(res: dict, measured: dict | None = None) -> str:
    from mobilebert_mobile._machine import describe

    lines = [f"# Shape-aware compute floor{': ' + res['title'] if res.get('title') else ''}", "",
             f"{describe(res.get('machine'))} {res['threads']} threads, "
             f"XNNPACK. Each distinct GEMM shape of the model timed alone as a one-op .tflite (fp32, and int8 with "
             f"int8 I/O), {res['rounds']} interleaved rounds; invoke overhead "
             f"({res['invoke_overhead_ms'] * 1e3:.1f} us) subtracted. Command: `{res.get('command', '')}`", "",
             "| op | batch x M x K x N | count | fp32 us | int8 us | fp32 GMAC/s | int8 GMAC/s | int8 in XNNPACK |",
             "|---|---|---|---|---|---|---|---|"]
    for s in res["shapes"]:
        lines.append(f"| {s['op']} | {s['batch']} x {s['m']} x {s['k']} x {s['n']} | {s['count']} | "
                     f"{s['fp32_ms'] * 1e3:.1f} | {s['int8_ms'] * 1e3:.1f} | {s['fp32_gmacs'] or 0:.0f} | "
                     f"{s['int8_gmacs'] or 0:.0f} | {'yes' if s['int8_xnnpack'] else 'no'} |")
    lines += ["", f"Shape-aware floor: fp32 {res['fp32_ms']:.2f} ms; int8 {res['int8_ms']:.2f} ms (each shape at the "
                  f"faster of its int8 and fp32 kernels); {res['all_int8_ms']:.2f} ms with every GEMM int8; "
                  f"{res['int8_attention_fp32_ms']:.2f} ms with the attention matmuls in fp32 as our int8 graph runs "
                  "them.", ""]
    if res.get("single_gemm_floor"):
        f = res["single_gemm_floor"]
        lines += [f"Single-large-GEMM floor (model MACs / MAC/s of a {f['throughput']['shape']} chain, timed in the "
                  f"same rounds: {f['throughput']['xnnpack_fp32_gmacs']:.0f} G fp32, "
                  f"{f['throughput']['xnnpack_int8_gmacs']:.0f} G int8 MAC/s): fp32 {f['fp32_ms']:.2f} ms, int8 "
                  f"{f['int8_ms']:.2f} ms.", ""]
    if measured:
        lines += ["Whole models, timed in the same interleaved rounds:", "",
                  "| model | median ms | x single-GEMM floor | x shape-aware floor |", "|---|---|---|---|"]
        for name, (ms, kind) in measured.items():
            sf = res["single_gemm_floor"][kind + "_ms"] if res.get("single_gemm_floor") else float("nan")
            lines.append(f"| {name} | {ms:.2f} | {ms / sf:.2f} | {ms / res[kind + '_ms']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m mobilebert_mobile.benchmarks.floor MODEL.tflite [--measure LABEL=PATH ...]``"""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m mobilebert_mobile.benchmarks.floor",
                                 description="single-GEMM and shape-aware compute floors of a .tflite model")
    ap.add_argument("model", help="a .tflite whose GEMM shapes define the floor (fp32 or any precision)")
    ap.add_argument("--macs", type=float, help="model MACs for the single-GEMM floor (default: from the shapes)")
    ap.add_argument("--measure", nargs="*", default=[], help="LABEL=PATH.tflite models to time and compare")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="write floor.md / floor.json here")
    a = ap.parse_args(argv)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    with open(a.model, "rb") as fh:
        data = fh.read()
    models = dict(item.split("=", 1) for item in a.measure)
    work = tempfile.mkdtemp(prefix="floor-")
    chain = {}
    for kind in ("fp32", "int8"):  # the single-GEMM floor's FC chains, timed in the same rounds
        chain[kind] = os.path.join(work, f"chain_{kind}.tflite")
        with open(chain[kind], "wb") as fh:
            fh.write(_fc_chain_tflite(kind == "int8"))
    res = shape_floor(data, threads=a.threads, runs=a.runs, rounds=a.rounds, log=say,
                      models={**models, **{f"__chain_{k}": p for k, p in chain.items()}})
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    chain_macs = DEPTH * 2 * ROWS * WIDTH * FFN
    thr = {"threads": a.threads, "shape": f"{DEPTH} x (FC {WIDTH}->{FFN}, FC {FFN}->{WIDTH}) on {ROWS} rows",
           "macs": chain_macs}
    for k in ("fp32", "int8"):
        thr[f"xnnpack_{k}_gmacs"] = chain_macs / (res["measured_ms"].pop(f"__chain_{k}") * 1e-3) / 1e9
    total_macs = a.macs or sum(s["macs"] * s["count"] for s in res["shapes"])
    fl = floors_ms(int(total_macs), thr)
    res["single_gemm_floor"] = {"fp32_ms": fl["fp32"], "int8_ms": fl["int8"], "throughput": thr, "macs": total_macs}
    from mobilebert_mobile._machine import machine

    res["machine"] = machine()
    res["title"] = os.path.basename(a.model)
    res["command"] = "python -m mobilebert_mobile.benchmarks.floor " + " ".join(argv if argv is not None
                                                                                 else sys.argv[1:])
    # whole models were timed in the same interleaved rounds as the one-op GEMMs
    measured = {lab: (ms, "int8" if "int8" in lab else "fp32") for lab, ms in res["measured_ms"].items()}
    md = shape_floor_markdown(res, measured)
    if a.out:
        from .charts import save  # STEM.md (linking the chart), STEM.json and STEM.png

        save(a.out, "floor", md, res)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
