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
import functools
import io
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Float inside the XNNPACK partition in int8 (not int8-full): the ops XNNPACK has no int8 kernel for.
# Attention's BATCH_MATMUL/SOFTMAX; in LayerNorm/GELU models GELU (on [tokens, 4H]) and RSQRT (with the
# variance it reads: layer_norm_statistics_nodes); in the embedding head DIV and MAXIMUM (mean pooling, [1, H]).
# Quantized, each one split the delegate graph: all-MiniLM-L6-v2 int8 ran as 21 partitions in 4.2 ms;
# with them float, one partition (only the integer front end outside) in 3.4 ms, same accuracy.
DEFAULT_FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT", "DIV", "MAXIMUM")
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


@functools.lru_cache(maxsize=2)  # the fallback search quantizes one calibrated model many times
def score_path_nodes(calibrated: bytes) -> tuple[str, ...]:
    """Output names of the element-wise ops between attention's score BATCH_MATMUL and its SOFTMAX
    (the mask add, a scale): kept float with the island. Quantized, the scores share one int8 scale
    with the mask fill (-100): 0.39 per step, which flattens sharp attention (a student with
    transferred attention lost 0.2 of label agreement to it) and costs a QUANTIZE/DEQUANTIZE pair."""
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite import op_name

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    sg = m.subgraphs[0]
    kind, producer = {}, {}
    for n, op in enumerate(sg.operators):
        kind[n] = op_name(m, op)
        for t in op.outputs:
            producer[t] = n
    out: list[str] = []
    for n, op in enumerate(sg.operators):
        if kind[n] != "SOFTMAX":
            continue
        path, t = [], op.inputs[0]
        while t in producer and kind[producer[t]] in ("ADD", "MUL", "SUB", "DIV") and len(path) < 4:
            p = producer[t]
            path.append(sg.tensors[sg.operators[p].outputs[0]].name.decode())
            # follow the input that comes from the matmul side (the non-constant, non-mask one)
            ins = [i for i in sg.operators[p].inputs if i in producer]
            t = next((i for i in ins if kind[producer[i]] in ("BATCH_MATMUL", "ADD", "MUL", "SUB", "DIV")), -1)
        if t in producer and kind[producer[t]] == "BATCH_MATMUL":
            out += path
    return tuple(out)


@functools.lru_cache(maxsize=2)
def layer_norm_statistics_nodes(calibrated: bytes) -> tuple[str, ...]:
    """Output names of the ops that compute a LayerNorm's variance, from the square ``d * d`` to the
    ``variance + epsilon`` ADD feeding an RSQRT (with a scaled LayerNorm's correction linear): float
    with the RSQRT. Quantized, the squares share one int8 scale set by their largest value, so most
    tokens' squares round to a few steps or to zero: on all-MiniLM-L6-v2 the variance alone was 0.26
    off (relative) after the embedding LayerNorm, and the model's int8 mean cosine went from 0.961 to
    0.976 with the statistics float (0.2 ms more on 2 threads). The epsilon ADD also needs it: epsilon
    (1e-12) would get a scale a million times below the variance's, a ratio XNNPACK's int8 ADD refuses."""
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite import op_name

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    sg = m.subgraphs[0]
    producer = {t: op for op in sg.operators for t in op.outputs}
    out: list[str] = []
    for op in sg.operators:
        if op_name(m, op) != "RSQRT":
            continue
        found, square, stack = [], False, [op.inputs[0]]
        while stack and len(found) < 8:
            p = producer.get(stack.pop())
            kind = op_name(m, p) if p is not None else None
            if kind not in ("ADD", "MEAN", "SUM", "MUL", "FULLY_CONNECTED"):
                continue
            found.append(sg.tensors[p.outputs[0]].name.decode())
            if kind == "MUL" and p.inputs[0] == p.inputs[1]:
                square = True  # d * d: the statistics start here
            elif kind in ("ADD", "MEAN", "SUM"):  # (a correction linear's input is the square itself)
                stack += [i for i in p.inputs if i in producer]
        if square:
            out += found
        else:  # not a variance we recognise: only its epsilon ADD (a constant operand), as before
            p = producer.get(op.inputs[0])
            if p is not None and op_name(m, p) == "ADD" and any(
                    i not in producer and sg.tensors[i].buffer > 0 and m.buffers[sg.tensors[i].buffer].data is not None
                    for i in p.inputs):
                out.append(sg.tensors[p.outputs[0]].name.decode())
    return tuple(dict.fromkeys(out))


def quantize_calibrated(calibrated: bytes, *, float_ops=(), float_nodes=()) -> bytes:
    """int8 with ``float_ops`` / ``float_nodes`` kept float; with BATCH_MATMUL and SOFTMAX float, the
    element-wise ops between them stay float too (score_path_nodes). Deterministic, and remembered
    for the last few calls: range selection and the fallback search ask for the same model twice."""
    return _quantize_cached(calibrated, tuple(float_ops), tuple(float_nodes))


@functools.lru_cache(maxsize=3)
def _quantize_cached(calibrated: bytes, float_ops: tuple, float_nodes: tuple) -> bytes:
    from tensorflow.lite.python import convert as tfl_convert

    if "BATCH_MATMUL" in float_ops and "SOFTMAX" in float_ops:
        float_nodes = list(float_nodes) + list(score_path_nodes(calibrated))
    if "RSQRT" in float_ops:
        float_nodes = list(float_nodes) + list(layer_norm_statistics_nodes(calibrated))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(tfl_convert.mlir_quantize(
            calibrated, disable_per_channel=False, fully_quantize=False, enable_numeric_verify=False,
            denylisted_ops=list(float_ops), denylisted_nodes=list(float_nodes)))


def clear_caches() -> None:
    """Forget the remembered quantized models and score paths (each holds whole models)."""
    _quantize_cached.cache_clear()
    score_path_nodes.cache_clear()
    layer_norm_statistics_nodes.cache_clear()


RANGE_METHODS = ("minmax", "percentile", "mse")


def interpreter_inputs(interp, feeds: dict) -> list[tuple[int, str, type]]:
    """(input index, feed key, dtype) of each model input, its feed found by name."""
    out = []
    for d in interp.get_input_details():
        key = next((k for k in feeds if k in d["name"]), None)
        if key is None:
            raise ValueError(f"no feed for model input {d['name']}")
        out.append((d["index"], key, d["dtype"]))
    return out


def activation_histograms(calibrated: bytes, feeds: dict, bins: int = 2048) -> dict[str, dict]:
    """Histograms of every tensor the calibrator gave a range, over ``feeds`` (float model, reference
    kernels with every intermediate kept). Bins span the calibrator's own [min, max] of the tensor."""
    import tempfile

    from mobilebert_mobile.runtime.litert import interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    sg = m.subgraphs[0]
    ranged = {}
    for i, t in enumerate(sg.tensors):
        q = t.quantization
        if q is not None and q.min is not None and q.max is not None and len(q.min) == 1 and t.type == 0:
            lo, hi = float(min(q.min[0], 0.0)), float(max(q.max[0], 0.0))
            if hi > lo:
                ranged[i] = {"name": t.name.decode(), "lo": lo, "hi": hi, "counts": np.zeros(bins, np.int64)}
    with tempfile.NamedTemporaryFile(suffix=".tflite") as fh:
        fh.write(calibrated)
        fh.flush()
        it = interpreter(fh.name, num_threads=2, preserve_all_tensors=True, use_xnnpack=False, allocate=True)
        ins = interpreter_inputs(it, feeds)
        batch = int(it.get_input_details()[0]["shape"][0])
        n = feeds[ins[0][1]].shape[0]
        for s in range(0, n - batch + 1, batch):
            for idx, key, dt in ins:
                it.set_tensor(idx, feeds[key][s:s + batch].astype(dt))
            it.invoke()
            for i, r in ranged.items():
                x = it.get_tensor(i).ravel()
                b = ((x - r["lo"]) * (bins / (r["hi"] - r["lo"]))).astype(np.int64)
                r["counts"] += np.bincount(np.clip(b, 0, bins - 1), minlength=bins)
    return ranged


def choose_range(h: dict, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """[lo, hi] for one tensor from its histogram: ``minmax``, ``percentile`` (both tails) or ``mse``
    (the clipping that minimises the expected int8 error: scale^2/12 inside, squared distance to the
    bound outside)."""
    lo, hi, c = h["lo"], h["hi"], h["counts"].astype(np.float64)
    if method == "minmax" or c.sum() == 0:
        return lo, hi
    edges = np.linspace(lo, hi, c.size + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    if method == "percentile":
        cum = np.cumsum(c) / c.sum()
        tail = (100.0 - percentile) / 100.0
        a = float(edges[np.searchsorted(cum, tail)]) if lo < 0 else lo
        b = float(edges[min(np.searchsorted(cum, 1 - tail) + 1, c.size)])
        return min(a, 0.0), max(b, 0.0)
    if method != "mse":
        raise ValueError(f"unknown range method {method!r}; expected one of {', '.join(RANGE_METHODS)}")
    fracs = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25, 0.2, 0.16, 0.13, 0.1, 0.08, 0.06, 0.04])
    los = lo * fracs if lo < 0 else np.zeros(1)
    his = hi * fracs if hi > 0 else np.zeros(1)
    best, arg = np.inf, (lo, hi)
    for a in los:
        for b in his:
            if b <= a:
                continue
            scale = (b - a) / 255.0
            out = np.where(centers < a, a - centers, np.where(centers > b, centers - b, 0.0))
            inside = (centers >= a) & (centers <= b)
            err = float(np.sum(c * np.where(inside, scale * scale / 12.0, out * out)))
            if err < best:
                best, arg = err, (float(a), float(b))
    return arg


def apply_ranges(calibrated: bytes, hists: dict[int, dict], method: str, percentile: float = 99.99) -> tuple[bytes, dict]:
    """The calibrated model with each histogrammed tensor's min/max replaced by ``method``'s range."""
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    sg = m.subgraphs[0]
    shrink = []
    for i, h in hists.items():
        a, b = choose_range(h, method, percentile)
        q = sg.tensors[i].quantization
        q.min, q.max = [a], [b]
        shrink.append((b - a) / (h["hi"] - h["lo"]))
    stats = {"method": method, "tensors": len(hists),
             "range_kept_median": float(np.median(shrink)) if shrink else 1.0,
             "range_kept_min": float(np.min(shrink)) if shrink else 1.0}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m)), stats


def tensor_ranges(model_bytes: bytes) -> dict[str, tuple]:
    """name -> (min, max) recorded in a calibrated model, or (scale, zero point) of a quantized one."""
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    out = {}
    for t in m.subgraphs[0].tensors:
        q = t.quantization
        if q is None:
            continue
        if q.scale is not None and len(q.scale) == 1:
            out[t.name.decode()] = ("q", float(q.scale[0]), int(q.zeroPoint[0]))
        elif q.min is not None and len(q.min) == 1:
            out[t.name.decode()] = ("r", float(q.min[0]), float(q.max[0]))
    return out


def select_ranges(calibrated: bytes, feeds: dict, evaluate: Callable[[bytes], float], *,
                  methods=RANGE_METHODS, float_ops=DEFAULT_FLOAT_OPS, max_texts: int = 32,
                  progress: Callable[[str], None] | None = None) -> tuple[bytes, dict]:
    """Try each range method on the calibrated model (int8 everywhere but ``float_ops``), keep the
    best-scoring one (ties keep the earlier method). Returns (calibrated model with those ranges,
    record of every method's score and range statistics)."""
    import time

    say = progress or (lambda s: None)
    t = time.perf_counter()
    sub = {k: v[:max_texts] for k, v in feeds.items()}
    hists: dict | None = None  # histograms only when a method other than min/max is tried
    record: dict = {"histogram_texts": 0, "methods": {}}
    cands = []
    for method in methods:
        if method == "minmax":
            ranged, stats = calibrated, {"method": "minmax"}
        else:
            if hists is None:
                hists = activation_histograms(calibrated, sub)
                record["histogram_texts"] = int(next(iter(sub.values())).shape[0])
            ranged, stats = apply_ranges(calibrated, hists, method)
        model = quantize_calibrated(ranged, float_ops=float_ops)
        sc = evaluate(model)
        parts = _partitions(model)
        record["methods"][method] = {"score": sc, "xnnpack_partitions": parts, **stats}
        say(f"ranges {method}: {sc:.4f}, {parts} XNNPACK partition(s)")
        cands.append((method, sc, parts, ranged))
        if sc >= 1.0 and parts <= min(c[2] for c in cands):
            # a perfect score in the fewest partitions cannot be beaten (ties keep the earlier method)
            record["skipped"] = [m for m in methods if m not in record["methods"]]
            break
    # Clipped ranges can push an ADD's input/output scale ratio outside what XNNPACK's int8 ADD takes;
    # the op then falls out of the delegate and splits the graph (seen on the default student: percentile
    # ranges left 6 residual ADDs outside, 7 partitions, 2x slower). So no method may split the graph more
    # than plain min/max does; among the rest the best score wins (ties keep the earlier method).
    limit = min(c[2] for c in cands if c[0] == "minmax") if any(c[0] == "minmax" for c in cands) else None
    allowed = [c for c in cands if limit is None or c[2] <= limit] or cands
    best = max(allowed, key=lambda c: c[1])  # max keeps the first of equal scores
    record.update({"chosen": best[0], "score": best[1], "xnnpack_partitions": best[2],
                   "time_s": round(time.perf_counter() - t, 1)})
    return best[3], record


def match_point_tensors(calibrated: bytes, feeds: dict, acts: dict[str, np.ndarray], *,
                        rtol: float = 1e-3) -> dict[str, list[tuple[int, float]]]:
    """Which tensors of the calibrated (float) TFLite model hold each activation of ``acts``, and
    at which scale: ``{point: [(tensor index, factor), ...]}`` with tensor = factor x activation.

    Runs the model once on ``feeds`` (one batch of the model's own input shape) with every
    intermediate kept, and matches by value: same number of elements and, in the same order,
    within ``rtol`` of the largest magnitude (float rounding of the folded graph). The factor is
    1 for most points; it is not where a pass folded a constant scale into the producer (the
    attention scale 1/sqrt(d) folded into W_q makes the graph's queries 0.35 x PyTorch's at head
    size 8). Reshapes of a matched tensor match too (they share its int8 scale anyway). Names do
    not enter: the graph's names come from the lowering and change with it; the values do not."""
    import tempfile

    from mobilebert_mobile.runtime.litert import interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    sg = m.subgraphs[0]
    ranged = [i for i, t in enumerate(sg.tensors) if t.type == 0 and t.quantization is not None
              and t.quantization.min is not None and len(t.quantization.min) == 1]
    with tempfile.NamedTemporaryFile(suffix=".tflite") as fh:
        fh.write(calibrated)
        fh.flush()
        it = interpreter(fh.name, num_threads=2, preserve_all_tensors=True, use_xnnpack=False, allocate=True)
        for idx, key, dt in interpreter_inputs(it, feeds):
            it.set_tensor(idx, feeds[key].astype(dt))
        it.invoke()
        values = {i: it.get_tensor(i).ravel().astype(np.float64) for i in ranged}
    by_size: dict[int, list[int]] = {}
    for i, v in values.items():
        by_size.setdefault(v.size, []).append(i)
    probe = {}
    out: dict[str, list[tuple[int, float]]] = {}
    for point, a in acts.items():
        a = np.asarray(a, np.float64).ravel()
        amax = float(np.abs(a).max()) if a.size else 0.0
        hits: list[tuple[int, float]] = []
        if amax > 0:
            pick = probe.setdefault(a.size, np.linspace(0, a.size - 1, min(a.size, 64)).astype(np.int64))
            ap, aa = a[pick], float(a[pick] @ a[pick])
            for i in by_size.get(a.size, []):
                v = values[i]
                c = float(v[pick] @ ap) / aa if aa > 0 else 1.0  # least-squares factor on the probe
                if abs(c - 1.0) <= rtol:
                    c = 1.0
                if not 1e-2 <= abs(c) <= 1e2 or np.abs(v[pick] - c * ap).max() > rtol * abs(c) * amax + 1e-6:
                    continue
                if np.abs(v - c * a).max() <= rtol * abs(c) * amax + 1e-6:
                    hits.append((i, c))
        out[point] = hits
    return out


# Ops whose int8 output must have their input's scale (the MLIR quantizer enforces it): a range
# learned on such an output has to be set on the input too, or the input's calibrated range wins.
SAME_SCALE_OPS = {"RESHAPE", "TRANSPOSE", "SLICE", "STRIDED_SLICE", "SQUEEZE", "EXPAND_DIMS", "SPLIT", "SPLIT_V"}


def apply_learned_ranges(calibrated: bytes, matches: dict[str, list[tuple[int, float]]],
                         ranges: dict[str, tuple[float, float]]) -> tuple[bytes, dict]:
    """The calibrated model with the learned (QAT) range of each matched point on its tensors
    (times the match's factor: see match_point_tensors).

    A tensor matched by several points gets the union of their ranges. Ranges then travel
    backwards through same-scale ops (reshape, transpose, slices): the converter fuses sibling
    Linears into one FULLY_CONNECTED whose output is sliced, and every slice shares that output's
    scale, so the fused output takes the union of its slices' ranges. Tensors reached by neither
    keep their calibrated range."""
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite import op_name

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    sg = m.subgraphs[0]
    per_tensor: dict[int, tuple[float, float]] = {}
    shared = 0
    scaled = 0
    for point, idx in matches.items():
        for i, c in idx:
            lo, hi = sorted((c * ranges[point][0], c * ranges[point][1]))
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            scaled += c != 1.0
            if i in per_tensor:
                shared += 1
                per_tensor[i] = (min(lo, per_tensor[i][0]), max(hi, per_tensor[i][1]))
            else:
                per_tensor[i] = (lo, hi)
    from_points = set(per_tensor)
    propagated: dict[int, tuple[float, float]] = {}
    for op in reversed(sg.operators):  # execution order reversed: consumers before producers
        if op_name(m, op) not in SAME_SCALE_OPS:
            continue
        outs = [per_tensor.get(o) or propagated.get(o) for o in op.outputs]
        outs = [r for r in outs if r is not None]
        src = op.inputs[0]
        if not outs or src in from_points or src < 0:
            continue
        lo, hi = min(r[0] for r in outs), max(r[1] for r in outs)
        if src in propagated:
            lo, hi = min(lo, propagated[src][0]), max(hi, propagated[src][1])
        propagated[src] = (lo, hi)
    ranged = {i for i, t in enumerate(sg.tensors) if t.type == 0 and t.quantization is not None
              and t.quantization.min is not None and len(t.quantization.min) == 1}
    for i, (lo, hi) in list(per_tensor.items()) + list(propagated.items()):
        if i in ranged:
            q = sg.tensors[i].quantization
            q.min, q.max = [lo], [hi]
    stats = {"points": len(matches), "points_matched": sum(1 for v in matches.values() if v),
             "unmatched": sorted(p for p, v in matches.items() if not v),
             "tensors_set": len(per_tensor), "tensors_shared": shared, "tensors_scaled": scaled,
             "tensors_propagated": len(set(propagated) & ranged), "calibrated_tensors": len(ranged)}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m)), stats


def _partitions(model: bytes) -> int:
    """XNNPACK partitions of a quantized model (a child process: a kernel abort cannot kill us)."""
    import os
    import tempfile

    from .tflite import xnnpack_partitions

    fd, path = tempfile.mkstemp(suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model)
        return int(xnnpack_partitions(path).get("partitions", 10**6))
    finally:
        os.unlink(path)


_SCOPE = re.compile(r"(?:^|/)(layer_\d+|embeddings|head)(?:_\d+)?/")


def layer_nodes(model_bytes: bytes) -> dict[str, list[str]]:
    """Output-tensor names of the ops of every part: ``embeddings``, ``layer_N``, ``head``.

    The lowering opens a name scope per ONNX node, which TensorFlow uniquifies (``layer_3_2/``,
    ``head_6/``); ops the converter left without a scope (e.g. the final output op) belong to the
    head, except the QUANTIZE/DEQUANTIZE it inserted.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    from .tflite import op_name

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    sg = m.subgraphs[0]
    out: dict[str, list[str]] = {}
    for op in sg.operators:
        kind = op_name(m, op)
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

    from .tflite import code_name

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    return {n for n in (code_name(c) for c in m.operatorCodes) if not n.isdigit()}  # named builtins only


def _op_level(calibrated, present: set[str], evaluate, target, base_ops, steps, say) -> QuantResult | None:
    """``present``: the op types of ``calibrated`` (``op_types``)."""
    candidates = sorted(present - LAYOUT_OPS - {"FULLY_CONNECTED"} - set(base_ops))
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
                           float_ops=DEFAULT_FLOAT_OPS, progress: Callable[[str], None] | None = None) -> QuantResult:
    """Quantize; while ``evaluate(model) < target`` keep the most sensitive layer in float."""
    say = progress or (lambda s: None)
    present = op_types(calibrated)
    float_ops = tuple(o for o in float_ops if o in present)  # the report names only ops the model has
    model = quantize_calibrated(calibrated, float_ops=float_ops)
    score = evaluate(model)
    steps = [{"float_layers": [], "score": score}]
    res = QuantResult(model, score, score >= target, list(float_ops), [], steps)
    if res.meets_target:
        return res
    op_res = _op_level(calibrated, present, evaluate, target, list(float_ops), steps, say)
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
    kept: list[str] = []
    for name in order:
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
