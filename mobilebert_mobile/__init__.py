"""mobilebert-mobile: MobileBERT-class models from PyTorch checkpoint to phone.

``import mobilebert_mobile`` is light: it never imports torch or tensorflow. The PyTorch
models live in ``mobilebert_mobile.modeling``; converters, benchmarks and the Android
harness in ``mobilebert_mobile.converters``, ``.benchmarks`` and ``.android_harness``.
"""
from __future__ import annotations

from .config import PRESETS, ConfigError, MobileBertConfig

__version__ = "0.1.0"

_LAZY = {
    "Tokenizer": ("mobilebert_mobile.tokenizer", "Tokenizer"),
    "TokenizerError": ("mobilebert_mobile.tokenizer", "TokenizerError"),
    "Predictor": ("mobilebert_mobile.runtime", "Predictor"),
    "PredictorError": ("mobilebert_mobile.runtime", "PredictorError"),
}

__all__ = ["PRESETS", "ConfigError", "MobileBertConfig", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mobilebert_mobile' has no attribute {name!r}")
