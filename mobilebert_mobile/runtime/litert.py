"""The one place a LiteRT interpreter is made with our options (ai-edge-litert only).

Every stage that runs a .tflite (the Predictor, conversion checks, latency measurements, the host
benchmarks, the op profiler) goes through ``interpreter()``, so the resolver choice (XNNPACK or
the reference kernels), the thread count and the error wording are the same everywhere.
"""
from __future__ import annotations

from ..errors import PredictorError


def interpreter(path: str | None = None, *, content: bytes | None = None, num_threads: int | None = None,
                use_xnnpack: bool = True, preserve_all_tensors: bool = False, allocate: bool = False):
    """A LiteRT ``Interpreter`` for ``path`` (or model bytes in ``content``).

    ``use_xnnpack=False`` selects the builtin kernels without the default XNNPACK delegate;
    ``preserve_all_tensors`` keeps intermediate tensors readable (calibration statistics, debugging).
    Errors raise PredictorError naming the model.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if (path is None) == (content is None):
        raise PredictorError("give a model path or model bytes, not both or neither")
    kw: dict = {}
    if not use_xnnpack:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve_all_tensors:
        kw["experimental_preserve_all_tensors"] = True
    src = {"model_path": path} if path is not None else {"model_content": bytes(content)}
    try:
        it = Interpreter(**src, num_threads=num_threads, **kw)
        if allocate:
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise PredictorError(f"cannot load {path or 'the model'} with LiteRT: {e}") from None
    return it
