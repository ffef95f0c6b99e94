"""TensorFlow function -> .tflite at each precision, and inspection of the result.

TensorFlow's TFLiteConverter writes the flatbuffer and does the quantization; the graph it
receives is our lowering of the verified ONNX model.
"""
from __future__ import annotations

import collections
import functools
import subprocess
import sys
from typing import Callable, Iterable

import numpy as np

from .export import INPUT_NAMES

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8", "int16x8")
# On request only (not in "all"): every compute op int8, attention included (phone NPUs / DSPs).
EXTRA_PRECISIONS = ("int8-full",)
# Ops that convert or move data, never compute: allowed in float in an int8-full model.
NON_COMPUTE_OPS = {"QUANTIZE", "DEQUANTIZE", "CAST", "RESHAPE", "GATHER", "SQUEEZE", "EXPAND_DIMS"}


def concrete_function(lowering, batch: int, seq_len: int, outputs: tuple[str, ...]):
    import tensorflow as tf

    spec = [tf.TensorSpec([batch, seq_len], tf.int32, name=n) for n in INPUT_NAMES]

    @tf.function(input_signature=spec, autograph=False)
    def serve(input_ids, attention_mask, token_type_ids):
        res = lowering({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
        return {o: res[o] for o in outputs}

    module = tf.Module()
    module.serve = serve
    fn = serve.get_concrete_function()
    fn._mm_module = module  # keep the trackable alive; it gives the TFLite signature
    return fn


def make_converter(fn, precision: str, representative: Callable[[], Iterable] | None = None):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], fn._mm_module)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp32":
        pass
    elif precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic-int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision in ("int8", "int8-full", "int16x8"):
        if representative is None:
            raise ValueError(f"{precision} needs calibration data")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        if precision in ("int8", "int8-full"):
            # int8 kernels first; ops without an int8 kernel (or denylisted) stay float.
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.inference_output_type = tf.float32  # MediaPipe rejects int8 outputs
    else:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return conv


def convert(fn, precision: str, representative=None) -> bytes:  # noqa: A001 (TFLite's own word)
    import contextlib
    import io

    conv = make_converter(fn, precision, representative)
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(conv.convert())


# ------------------------------------------------------------------ flatbuffer edits
def _read(model_bytes: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


def _write(model_obj) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_obj))


def name_io_tensors(model_bytes: bytes) -> bytes:
    """Give the input/output tensors the signature's names (``input_ids``, ``probabilities``, ...).

    TFLiteConverter names them ``serving_default_input_ids:0`` / ``StatefulPartitionedCall:0``;
    MediaPipe's metadata writer and the Android side match on tensor names.
    """
    m = _read(model_bytes)
    sg = m.subgraphs[0]
    for sig in m.signatureDefs or []:
        for item in list(sig.inputs or []) + list(sig.outputs or []):
            sg.tensors[item.tensorIndex].name = item.name if isinstance(item.name, bytes) else item.name.encode()
        sig.signatureKey = b"serving_default"
    return _write(m)


@functools.lru_cache(maxsize=1)
def _builtin_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as s

    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


def code_name(code) -> str:
    """The builtin name of an operator code (``FULLY_CONNECTED``, ...; the number when unknown)."""
    bc = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _builtin_names().get(bc, str(bc))


def op_name(m, op) -> str:
    """The builtin name of operator ``op`` of model object ``m`` (``FULLY_CONNECTED``, ...)."""
    return code_name(m.operatorCodes[op.opcodeIndex])


def _activation_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as s

    return {v: k for k, v in vars(s.ActivationFunctionType).items() if not k.startswith("_")}


def inventory(model_bytes: bytes) -> dict:
    """Ops per type, fused activations, tensor dtypes of the I/O, weight quantization granularity."""
    from tensorflow.lite.python import schema_py_generated as s

    m = _read(model_bytes)
    acts = _activation_names()
    sg = m.subgraphs[0]
    ops = collections.Counter()
    fused = collections.Counter()
    per_channel = per_tensor = 0
    float_ops = collections.Counter()
    type_names = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    for op in sg.operators:
        name = op_name(m, op)
        ops[name] += 1
        opt = op.builtinOptions
        act = getattr(opt, "fusedActivationFunction", 0) if opt is not None else 0
        if act:
            fused[f"{name}+{acts.get(act, act)}"] += 1
        if name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            w = sg.tensors[op.inputs[1]]
            q = w.quantization
            if q is not None and q.scale is not None and len(q.scale) > 1:
                per_channel += 1
            elif q is not None and q.scale is not None and len(q.scale) == 1:
                per_tensor += 1
            out_t = sg.tensors[op.outputs[0]]
            if out_t.type == s.TensorType.FLOAT32:
                float_ops[name] += 1
    io = {}
    for sig in m.signatureDefs or []:
        for kind, items in (("inputs", sig.inputs), ("outputs", sig.outputs)):
            io[kind] = [{"name": (it.name.decode() if isinstance(it.name, bytes) else it.name),
                         "tensor": sg.tensors[it.tensorIndex].name.decode(),
                         "dtype": type_names.get(sg.tensors[it.tensorIndex].type, "?").lower(),
                         "shape": [int(x) for x in sg.tensors[it.tensorIndex].shape]} for it in items]
    return {"ops": dict(sorted(ops.items())), "total_ops": int(sum(ops.values())),
            "fused_activations": dict(sorted(fused.items())),
            "standalone_activations": {k: ops[k] for k in ("RELU", "RELU6", "GELU", "TANH") if ops.get(k)},
            "weights_per_channel": per_channel, "weights_per_tensor": per_tensor,
            "float_matmuls": dict(float_ops), "signature": io}


def float_compute_ops(model_bytes: bytes) -> dict[str, int]:
    """Compute ops (not conversions or layout) that read or write float tensors, by type: empty for an
    integer-only graph apart from its float input/output conversions."""
    m = _read(model_bytes)
    sg = m.subgraphs[0]
    out: collections.Counter = collections.Counter()
    for op in sg.operators:
        name = op_name(m, op)
        if name in NON_COMPUTE_OPS:
            continue
        ts = [sg.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
        if any(t.type in (0, 1) for t in ts):  # FLOAT32, FLOAT16
            out[name] += 1
    return dict(sorted(out.items()))


# --------------------------------------------------------------------- running
def _litert_interpreter(path: str, threads: int, xnnpack: bool = True):
    from mobilebert_mobile.runtime.litert import interpreter

    return interpreter(path, num_threads=threads, use_xnnpack=xnnpack)


def run_tflite(path: str, feeds: dict[str, np.ndarray], threads: int = 2) -> dict[str, np.ndarray]:
    """Run the ``serving_default`` signature over rows of ``feeds`` (chunked to the fixed batch)."""
    interp = _litert_interpreter(path, threads)
    runner = interp.get_signature_runner("serving_default")
    in_details = runner.get_input_details()
    batch = in_details["input_ids"]["shape"][0]
    from mobilebert_mobile._batching import run_in_fixed_batches

    return run_in_fixed_batches(lambda c: runner(**c), {k: feeds[k].astype(np.int32) for k in INPUT_NAMES}, batch)


def delegation(interp) -> dict:
    """XNNPACK partitions of an interpreter after ``allocate_tensors``, and the ops left outside.

    The runtime replaces each partition with one DELEGATE node. Ops outside every partition are
    the producers (transitively) of a delegate's inputs and of the outputs no delegate produces.
    """
    ops = interp._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegated_out = {t for d in delegates for t in d["outputs"]}
    producer = {t: o for o in plain for t in o["outputs"]}
    outputs = {d["index"] for d in interp.get_output_details()}
    frontier = [t for d in delegates for t in d["inputs"]] + [t for t in outputs if t not in delegated_out]
    outside: dict[int, dict] = {}
    while frontier:
        t = frontier.pop()
        if t in delegated_out or t not in producer:
            continue
        op = producer[t]
        if op["index"] in outside:
            continue
        outside[op["index"]] = op
        frontier.extend(op["inputs"])
    if not delegates:
        outside = {o["index"]: o for o in plain}
    names = collections.Counter(o["op_name"] for o in outside.values())
    return {"partitions": len(delegates), "ops": len(plain), "ops_outside_xnnpack": len(outside),
            "outside": dict(sorted(names.items()))}


def xnnpack_partitions(path: str, threads: int = 2) -> dict:
    """Delegation summary, computed in a child process (an aborting kernel cannot kill the caller):
    ``python -m mobilebert_mobile.converters.tflite delegation PATH THREADS``."""
    import json

    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.converters.tflite", "delegation", path,
                        str(threads)], capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"error": (r.stderr.strip().splitlines() or ["no output"])[-1]}


def _child(argv: list[str]) -> int:
    import json

    if len(argv) != 3 or argv[0] != "delegation":
        print("usage: python -m mobilebert_mobile.converters.tflite delegation PATH THREADS", file=sys.stderr)
        return 2
    it = _litert_interpreter(argv[1], int(argv[2]))
    it.allocate_tensors()
    print("@@" + json.dumps(delegation(it)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
