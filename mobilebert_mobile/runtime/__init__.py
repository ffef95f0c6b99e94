"""The light runtime: tokenize, run a converted model, post-process (no torch, no tensorflow)."""
from .backends import PredictorError
from .predictor import BACKENDS, Predictor

__all__ = ["Predictor", "PredictorError", "BACKENDS"]
