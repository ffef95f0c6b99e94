"""Lower an ONNX encoder graph to a TensorFlow function, op by op.

The op set of BERT-family encoders is small; lowering it ourselves keeps every layout decision
explicit (onnx2tf's layout guessing silently broke MobileBERT: it sliced the trigram embedding along
the wrong axis when sequence length, embedding size and bottleneck were all 128; README design notes). MatMuls with a
constant 2-D weight are written as 2-D ``tf.matmul`` so TFLite makes them FULLY_CONNECTED (and
fuses a following bias add and ReLU); everything else maps to one TFLite builtin.
"""
from __future__ import annotations

import numpy as np

from .onnx_passes import Graph
from mobilebert_mobile.errors import StageError


class LoweringError(StageError):
    """The ONNX graph uses an op or attribute this lowering does not support."""


_ONNX_TO_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
               11: np.float64}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Lowering:
    """Callable holding the graph; ``__call__(tf_inputs: dict) -> dict`` of output tensors."""

    def __init__(self, model):
        import copy

        self.g = Graph(copy.deepcopy(model))
        self.nodes = self.g.nodes
        self.inputs = [i.name for i in self.g.g.input if i.name not in self.g.consts]
        self.outputs = [o.name for o in self.g.g.output]
        unsupported = sorted({n.op_type for n in self.nodes} - set(_HANDLERS))
        if unsupported:
            hint = " (an Erf outside the GELU pattern that the fuse_gelu pass recognises)" if "Erf" in unsupported else ""
            raise LoweringError(f"unsupported ONNX ops: {', '.join(unsupported)}{hint}")
        self._tf_consts: dict = {}

    def _const(self, name):
        import tensorflow as tf

        if name not in self._tf_consts:
            self._tf_consts[name] = tf.constant(self.g.consts[name])
        return self._tf_consts[name]

    def _value(self, env, name):
        if name in env:
            return env[name]
        if name in self.g.consts:
            return self._const(name)
        raise LoweringError(f"tensor {name!r} is not available")

    @staticmethod
    def scope_of(node) -> str:
        """``layer_N`` for nodes of encoder block N, else ``embeddings`` or ``head`` (from the exporter's
        module scopes); TFLite tensor names then carry it, which the layer-wise fallback uses."""
        import re

        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes", "")
        m = re.findall(r"encoder\.layer\.(\d+)", scopes)
        if m:
            return f"layer_{m[-1]}"
        return "embeddings" if "embeddings" in scopes else "head"

    def __call__(self, feeds: dict):
        import tensorflow as tf

        env = dict(feeds)
        for n in self.nodes:
            with tf.name_scope(self.scope_of(n)):
                self._emit(n, env)
        return {o: self._value(env, o) for o in self.outputs}

    def _emit(self, n, env) -> None:
        args = [None if i == "" else self._value(env, i) for i in n.input]
        res = _HANDLERS[n.op_type](self, n, args)
        if not isinstance(res, (list, tuple)):
            res = [res]
        for name, value in zip(n.output, res):
            env[name] = value


# ----------------------------------------------------------------------- handlers
def _np(self, node, k):
    name = node.input[k]
    if name not in self.g.consts:
        raise LoweringError(f"{node.op_type}: input {k} ({name}) must be a constant")
    return self.g.consts[name]


def _matmul(self, node, a):
    import tensorflow as tf

    x, w = a
    wname = node.input[1]
    if wname in self.g.consts and self.g.consts[wname].ndim == 2:
        k, n = self.g.consts[wname].shape
        shape = x.shape
        x2 = tf.reshape(x, [-1, k]) if len(shape) != 2 else x
        y = tf.matmul(x2, w)
        return tf.reshape(y, list(shape[:-1]) + [n]) if len(shape) != 2 else y
    return tf.matmul(x, w)


def _gemm(self, node, a):
    import tensorflow as tf

    at = _attrs(node)
    x, w = a[0], a[1]
    if at.get("transA", 0):
        x = tf.transpose(x)
    if at.get("transB", 0):
        w = tf.constant(self.g.consts[node.input[1]].T) if node.input[1] in self.g.consts else tf.transpose(w)
    y = tf.matmul(x, w)
    if at.get("alpha", 1.0) != 1.0:
        y = y * at["alpha"]
    if len(a) > 2 and a[2] is not None:
        c = a[2] if at.get("beta", 1.0) == 1.0 else a[2] * at["beta"]
        y = y + c
    return y


def _binary(op):
    def f(self, node, a):
        return op(a[0], a[1])

    return f


def _gather(self, node, a):
    import tensorflow as tf

    axis = _attrs(node).get("axis", 0)
    if node.input[1] in self.g.consts and self.g.consts[node.input[1]].ndim == 0 and node.input[0] not in self.g.consts:
        # x[:, k] with a constant k (the first-token pick): a SLICE, which XNNPACK takes
        x = a[0]
        rank = len(x.shape)
        axis %= rank
        k = int(self.g.consts[node.input[1]]) % x.shape[axis]
        begin = [0] * rank
        size = list(x.shape)
        begin[axis], size[axis] = k, 1
        return tf.squeeze(tf.slice(x, begin, size), axis=[axis])
    idx = a[1]
    if idx.dtype == tf.int64:
        idx = tf.cast(idx, tf.int32)
    return tf.gather(a[0], idx, axis=axis)


def _slice(self, node, a):
    import tensorflow as tf

    x = a[0]
    starts, ends = _np(self, node, 1), _np(self, node, 2)
    axes = _np(self, node, 3) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = _np(self, node, 4) if len(node.input) > 4 and node.input[4] else np.ones(len(starts), np.int64)
    rank = len(x.shape)
    begin, end, stride = [0] * rank, list(x.shape), [1] * rank
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = int(ax) % rank
        dim = x.shape[ax]
        s, e, st = int(s), int(e), int(st)
        if st != 1:
            raise LoweringError("Slice with step != 1 is not supported")
        s = max(0, min(dim, s + dim if s < 0 else s))
        e = max(0, min(dim, e + dim if e < 0 else e))
        begin[ax], end[ax] = s, e
    return tf.slice(x, begin, [e - b for b, e in zip(begin, end)])


def _pad(self, node, a):
    import tensorflow as tf

    mode = _attrs(node).get("mode", b"constant")
    if mode not in (b"constant", "constant"):
        raise LoweringError(f"Pad mode {mode!r} is not supported")
    pads = _np(self, node, 1).astype(np.int64)
    rank = len(a[0].shape)
    if len(node.input) > 3 and node.input[3]:
        axes = [int(x) % rank for x in _np(self, node, 3)]
    else:
        axes = list(range(rank))
    paddings = [[0, 0] for _ in range(rank)]
    for j, ax in enumerate(axes):
        paddings[ax] = [int(pads[j]), int(pads[j + len(axes)])]
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(_np(self, node, 2).reshape(()))
    return tf.pad(a[0], paddings, constant_values=value)


def _concat(self, node, a):
    import tensorflow as tf

    return tf.concat(a, axis=_attrs(node)["axis"])


def _reshape(self, node, a):
    import tensorflow as tf

    shape = [int(s) for s in _np(self, node, 1)]
    in_shape = list(a[0].shape)
    if not _attrs(node).get("allowzero", 0):
        shape = [in_shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return tf.reshape(a[0], shape)


def _transpose(self, node, a):
    import tensorflow as tf

    perm = _attrs(node).get("perm")
    return tf.transpose(a[0], perm=perm)


def _softmax(self, node, a):
    import tensorflow as tf

    axis = _attrs(node).get("axis", -1)
    rank = len(a[0].shape)
    if axis % rank != rank - 1:
        raise LoweringError("Softmax over a non-last axis is not supported")
    return tf.nn.softmax(a[0], axis=-1)


def _cast(self, node, a):
    import tensorflow as tf

    to = _ONNX_TO_NP[_attrs(node)["to"]]
    if to == np.int64:  # TFLite works in int32 for indices
        to = np.int32
    return tf.cast(a[0], tf.as_dtype(to))


def _unsqueeze(self, node, a):
    import tensorflow as tf

    axes = sorted(int(x) for x in _np(self, node, 1))
    x = a[0]
    rank = len(x.shape) + len(axes)
    shape = list(x.shape)
    for ax in sorted(ax % rank for ax in axes):
        shape.insert(ax, 1)
    return tf.reshape(x, shape)


def _squeeze(self, node, a):
    import tensorflow as tf

    rank = len(a[0].shape)
    axes = [int(x) % rank for x in _np(self, node, 1)] if len(node.input) > 1 else None
    return tf.squeeze(a[0], axis=axes)


def _reduce(fn):
    def f(self, node, a):
        import tensorflow as tf

        at = _attrs(node)
        keep = bool(at.get("keepdims", 1))
        rank = len(a[0].shape)
        if len(node.input) > 1 and node.input[1]:
            axes = [int(x) % rank for x in _np(self, node, 1)]
        else:
            axes = [int(x) % rank for x in at.get("axes", range(rank))]
        return getattr(tf.math, fn)(a[0], axis=axes, keepdims=keep)

    return f


def _layernorm(self, node, a):
    import tensorflow as tf

    at = _attrs(node)
    rank = len(a[0].shape)
    if at.get("axis", -1) % rank != rank - 1:
        raise LoweringError("LayerNormalization over non-last axes is not supported")
    eps = float(at.get("epsilon", 1e-5))
    x = a[0]
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    d = x - mean
    # d * d, not squared_difference: LiteRT has no 16-bit SQUARED_DIFFERENCE kernel (int16x8 failed)
    var = tf.reduce_mean(d * d, axis=-1, keepdims=True)
    y = d * tf.math.rsqrt(var + eps)
    if len(a) > 1 and a[1] is not None:
        y = y * a[1]
    if len(a) > 2 and a[2] is not None:
        y = y + a[2]
    return y


def _pow(self, node, a):
    import tensorflow as tf

    e = _np(self, node, 1)
    v = float(e.reshape(-1)[0]) if e.size == 1 else None
    if v == -0.5:  # from the residual scaling pass's LayerNorm: one RSQRT
        return tf.math.rsqrt(a[0])
    if v == 0.5:
        return tf.math.sqrt(a[0])
    if v == 2.0:
        return a[0] * a[0]
    return tf.math.pow(a[0], tf.constant(e, dtype=a[0].dtype))


def _split(self, node, a):
    import tensorflow as tf

    at = _attrs(node)
    axis = at.get("axis", 0)
    sizes = [int(s) for s in _np(self, node, 1)] if len(node.input) > 1 and node.input[1] else None
    if sizes is None:
        return tf.split(a[0], at.get("num_outputs", len(node.output)), axis=axis)
    # slices (not SPLIT_V): XNNPACK takes SLICE in float and int8
    rank = len(a[0].shape)
    axis %= rank
    outs, off = [], 0
    for s in sizes:
        begin = [0] * rank
        size = list(a[0].shape)
        begin[axis], size[axis] = off, s
        outs.append(tf.slice(a[0], begin, size))
        off += s
    return outs


def _clip(self, node, a):
    import tensorflow as tf

    x = a[0]
    lo_c = self.g.consts.get(node.input[1]) if len(node.input) > 1 else None
    hi_c = self.g.consts.get(node.input[2]) if len(node.input) > 2 else None
    if lo_c is not None and float(lo_c) == 0.0:
        if hi_c is not None and float(hi_c) == 6.0:
            return tf.nn.relu6(x)  # fuses into FULLY_CONNECTED as RELU6
        if hi_c is None and (len(node.input) < 3 or not node.input[2]):
            return tf.nn.relu(x)
    lo = a[1] if len(a) > 1 and a[1] is not None else None
    hi = a[2] if len(a) > 2 and a[2] is not None else None
    if lo is not None:
        x = tf.maximum(x, lo)
    if hi is not None:
        x = tf.minimum(x, hi)
    return x


def _unary(fn):
    def f(self, node, a):
        import tensorflow as tf

        return fn(tf)(a[0])

    return f


def _ops():
    import operator

    return {
        "MatMul": _matmul, "Gemm": _gemm,
        "Add": _binary(operator.add), "Sub": _binary(operator.sub), "Mul": _binary(operator.mul),
        "Div": _binary(operator.truediv),
        "Gather": _gather, "Slice": _slice, "Pad": _pad, "Concat": _concat, "Reshape": _reshape,
        "Transpose": _transpose, "Softmax": _softmax, "Cast": _cast, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
        "ReduceSum": _reduce("reduce_sum"), "ReduceMean": _reduce("reduce_mean"),
        "LayerNormalization": _layernorm, "Split": _split, "Clip": _clip, "Pow": _pow,
        "Relu": _unary(lambda tf: tf.nn.relu), "Tanh": _unary(lambda tf: tf.math.tanh),
        "Gelu": _unary(lambda tf: lambda x: tf.nn.gelu(x, approximate=False)),  # from the fuse_gelu pass
        "Sqrt": _unary(lambda tf: tf.math.sqrt), "Neg": _unary(lambda tf: tf.math.negative),
        "Max": _binary(lambda x, y: __import__("tensorflow").maximum(x, y)),
        "Min": _binary(lambda x, y: __import__("tensorflow").minimum(x, y)),
    }


_HANDLERS = _ops()

