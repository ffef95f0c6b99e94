"""Converters: PyTorch -> ONNX -> graph passes -> TFLite (installed as ``mobilebert_mobile.converters``).

``convert(checkpoint_dir, out_dir, ...)`` is the public entry point; torch, onnx and tensorflow are
imported inside the functions that need them.
"""
from .pipeline import DEFAULT_PRECISIONS, convert
from .export import ConversionError, TASKS
from .tflite import PRECISIONS

__all__ = ["convert", "ConversionError", "DEFAULT_PRECISIONS", "PRECISIONS", "TASKS"]
