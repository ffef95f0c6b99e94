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
    from ai_edge_litert.interpreter import Interpreter

    macs = DEPTH * 2 * ROWS * WIDTH * FFN
    out = {"threads": threads, "shape": f"{DEPTH} x (FC {WIDTH}->{FFN}, FC {FFN}->{WIDTH}) on {ROWS} rows",
           "macs": macs}
    with tempfile.TemporaryDirectory() as d:
        for kind in ("fp32", "int8"):
            p = os.path.join(d, f"{kind}.tflite")
            with open(p, "wb") as fh:
                fh.write(_fc_chain_tflite(kind == "int8"))
            it = Interpreter(model_path=p, num_threads=threads)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            x = np.random.default_rng(1).standard_normal(inp["shape"]).astype(inp["dtype"])
            if inp["dtype"] == np.int8:
                x = np.clip(x * 20, -127, 127).astype(np.int8)
            it.set_tensor(inp["index"], x)
            t = _median_time(it.invoke, runs)
            out[f"xnnpack_{kind}_gmacs"] = macs / t / 1e9
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
