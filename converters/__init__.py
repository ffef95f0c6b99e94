"""Converters: PyTorch -> ONNX -> TFLite (installed as mobilebert_mobile.converters)."""
