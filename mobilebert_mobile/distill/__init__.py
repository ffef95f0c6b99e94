"""Distillation and fine-tuning (torch is imported on first use, never by ``import mobilebert_mobile``).

    from mobilebert_mobile.distill import distill, finetune, evaluate
"""
_EXPORTS = {"distill": "api", "finetune": "api", "evaluate": "api", "layerwise_losses": "api",
            "predict_logits": "api", "DataError": "data", "DistillError": "teachers",
            "matching_student_config": "teachers", "TrainError": "trainer"}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
