"""Full-integer quantization with selective float fallback.

Calibrate once (TFLiteConverter in calibrate-only mode), then quantize the calibrated model with
TF's MLIR quantizer and a denylist, as often as needed:

1. Attention's BATCH_MATMUL and SOFTMAX stay float by default: XNNPACK has no int8 kernels for
   them, so quantizing them splits the graph into many delegate partitions and runs slower (they
   are ~4% of the MACs).
2. Op by op: if the model misses its accuracy target, quantize only the matmuls (FULLY_CONNECTED)
   and keep every other computing op type (norms, GELU, residual adds, ...) float; if that meets
   the target, put op types back to int8 one at a time while the target
   holds.
3. Layer by layer: if even that misses, parts fall back to float one by one, most
   sensitive first, until the target is met. The parts are the embeddings, each encoder layer and
   the head; a part's sensitivity is the accuracy lost when only that part is quantized.

``tensorflow.lite.python.convert.mlir_quantize`` is what ``tf.lite.experimental.QuantizationDebugger``
calls; it is a private API of the pinned TensorFlow 2.21.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from typing import Callable

DEFAULT_FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX")
# Ops that only move data: never worth keeping float on their own.
LAYOUT_OPS = {"RESHAPE", "TRANSPOSE", "SLICE", "STRIDED_SLICE", "CONCATENATION", "GATHER", "PAD", "SQUEEZE",
              "QUANTIZE", "DEQUANTIZE", "CAST", "SPLIT", "SPLIT_V", "EXPAND_DIMS"}


@dataclass
class QuantResult:
    model: bytes
    score: float
    meets_target: bool
    float_ops: list[str]
    float_layers: list[str]
    steps: list[dict] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)


def calibrate(converter) -> bytes:
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(converter.convert())


def quantize_calibrated(calibrated: bytes, *, float_ops=(), float_nodes=()) -> bytes:
    from tensorflow.lite.python import convert as tfl_convert

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(tfl_convert.mlir_quantize(
            calibrated, disable_per_channel=False, fully_quantize=False, enable_numeric_verify=False,
            denylisted_ops=list(float_ops), denylisted_nodes=list(float_nodes)))


_SCOPE = re.compile(r"(?:^|/)(layer_\d+|embeddings|head)(?:_\d+)?/")


def layer_nodes(model_bytes: bytes) -> dict[str, list[str]]:
    """Output-tensor names of the ops of every part: ``embeddings``, ``layer_N``, ``head``.

    The lowering opens a name scope per ONNX node, which TensorFlow uniquifies (``layer_3_2/``,
    ``head_6/``); ops the converter left without a scope (e.g. the final output op) belong to the
    head, except the QUANTIZE/DEQUANTIZE it inserted.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite import _builtin_names

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    names = _builtin_names()
    sg = m.subgraphs[0]
    out: dict[str, list[str]] = {}
    for op in sg.operators:
        code = m.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        for t in op.outputs:
            name = sg.tensors[t].name.decode()
            hit = _SCOPE.search(name)
            if hit:
                out.setdefault(hit.group(1), []).append(name)
            elif kind not in ("QUANTIZE", "DEQUANTIZE"):
                out.setdefault("head", []).append(name)
    return out


def op_types(model_bytes: bytes) -> set[str]:
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite import _builtin_names

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    names = _builtin_names()
    return {names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "") for c in m.operatorCodes}


def _op_level(calibrated, evaluate, target, base_ops, steps, say) -> QuantResult | None:
    candidates = sorted(op_types(calibrated) - LAYOUT_OPS - {"FULLY_CONNECTED"} - set(base_ops))
    if not candidates:
        return None
    floats = base_ops + candidates
    say(f"keeping {', '.join(candidates)} in float (matmuls int8)")
    model = quantize_calibrated(calibrated, float_ops=floats)
    score = evaluate(model)
    steps.append({"float_ops": list(floats), "score": score})
    best = QuantResult(model, score, score >= target, list(floats), [], steps)
    if not best.meets_target:
        return best
    for op in candidates:  # put op types back to int8 while the target holds
        trial = [o for o in best.float_ops if o != op]
        m = quantize_calibrated(calibrated, float_ops=trial)
        sc = evaluate(m)
        steps.append({"float_ops": list(trial), "score": sc})
        if sc >= target:
            say(f"{op} back to int8 ({sc:.4f})")
            best = QuantResult(m, sc, True, trial, [], steps)
    return best


def _group_order(name: str) -> tuple:
    return (0, 0) if name == "embeddings" else (2, 0) if name == "head" else (1, int(name.split("_")[1]))


def quantize_with_fallback(calibrated: bytes, evaluate: Callable[[bytes], float], target: float, *,
                           float_ops=DEFAULT_FLOAT_OPS, max_float_layers: int | None = None,
                           progress: Callable[[str], None] | None = None) -> QuantResult:
    """Quantize; while ``evaluate(model) < target`` keep the most sensitive layer in float."""
    say = progress or (lambda s: None)
    model = quantize_calibrated(calibrated, float_ops=float_ops)
    score = evaluate(model)
    steps = [{"float_layers": [], "score": score}]
    res = QuantResult(model, score, score >= target, list(float_ops), [], steps)
    if res.meets_target:
        return res
    op_res = _op_level(calibrated, evaluate, target, list(float_ops), steps, say)
    if op_res is not None and op_res.meets_target:
        return op_res
    if op_res is not None:
        float_ops = op_res.float_ops
    groups = layer_nodes(calibrated)  # layer_N, embeddings, head
    if not groups:
        return res
    say("ranking layers by quantization sensitivity")
    all_nodes = [n for v in groups.values() for n in v]
    sensitivity = {}
    for name, nodes in sorted(groups.items(), key=lambda kv: _group_order(kv[0])):
        others = [n for n in all_nodes if n not in set(nodes)]
        only_this = quantize_calibrated(calibrated, float_ops=float_ops, float_nodes=others)
        sensitivity[name] = 1.0 - evaluate(only_this)  # accuracy lost by quantizing this layer alone
    res.sensitivity = sensitivity
    order = sorted(sensitivity, key=lambda k: -sensitivity[k])
    limit = len(order) if max_float_layers is None else max_float_layers
    kept: list[str] = []
    for name in order[:limit]:
        kept.append(name)
        say(f"keeping {', '.join(kept)} in float")
        nodes = [n for k in kept for n in groups[k]]
        model = quantize_calibrated(calibrated, float_ops=float_ops, float_nodes=nodes)
        score = evaluate(model)
        steps.append({"float_layers": list(kept), "score": score})
        res = QuantResult(model, score, score >= target, list(float_ops), list(kept), steps, sensitivity)
        if res.meets_target:
            break
    return res
