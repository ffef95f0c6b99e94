"""PyTorch MobileBERT family (imports torch)."""
from .checkpoint import CheckpointError
from .layers import NoNorm
from .models import (
    ARCHITECTURES,
    TASK_MODELS,
    MobileBertForMaskedLM,
    MobileBertForPreTraining,
    MobileBertForQuestionAnswering,
    MobileBertForSentenceEmbedding,
    MobileBertForSequenceClassification,
    MobileBertForTokenClassification,
    MobileBertModel,
    MobileBertPreTrainedModel,
    ModelOutput,
    attention_mask_bias,
    model_class_for,
)

__all__ = [
    "ARCHITECTURES", "TASK_MODELS", "CheckpointError", "MobileBertForMaskedLM", "MobileBertForPreTraining",
    "MobileBertForQuestionAnswering", "MobileBertForSentenceEmbedding", "MobileBertForSequenceClassification",
    "MobileBertForTokenClassification", "MobileBertModel", "MobileBertPreTrainedModel", "ModelOutput", "NoNorm",
    "attention_mask_bias", "model_class_for",
]
