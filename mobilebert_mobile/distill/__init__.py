"""Distillation and fine-tuning (imports torch; never imported by ``import mobilebert_mobile``).

    from mobilebert_mobile.distill import distill, finetune, evaluate
"""
from .api import distill, evaluate, finetune  # noqa: F401
from .data import DataError  # noqa: F401
from .teachers import DistillError, matching_student_config  # noqa: F401
from .trainer import TrainError  # noqa: F401
