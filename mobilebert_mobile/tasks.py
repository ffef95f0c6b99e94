"""The task contract, defined once: for each task the model class, the model's inputs, the outputs
a converted model may carry and how each is read from a model's forward output, the agreement
metric a conversion is verified with, and its default target.

Used by modeling (checkpoint -> task model), converters (export signature, verification), the
runtime (bundle reading, the torch backend) and the tests. Pure Python: importing it imports
neither torch nor numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import InputError

# Model inputs everywhere: int32 [batch, seq], in this order (the export's signature order).
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
INPUT_DTYPE = "int32"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    model_class: str                      # class name in mobilebert_mobile.modeling
    outputs: dict[str, tuple[str, bool]]  # output name -> (ModelOutput attribute, softmax over the last axis)
    default_outputs: tuple[str, ...]
    metric: str                           # agreement metric of converters.verify
    default_target: float
    architectures: tuple[str, ...]        # checkpoint architectures that mean this task

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    def extract(self, model_output, names, softmax: Callable) -> dict:
        """The named outputs from a model's forward output (torch or numpy, via ``softmax``)."""
        values = {}
        for n in names:
            if n not in self.outputs:
                raise InputError(f"task {self.name} has no output {n!r}; available: {', '.join(self.outputs)}")
            attr, soft = self.outputs[n]
            v = getattr(model_output, attr)
            values[n] = softmax(v) if soft else v
        return values


TASKS: dict[str, TaskSpec] = {s.name: s for s in (
    TaskSpec("classification", "MobileBertForSequenceClassification",
             {"probabilities": ("logits", True), "logits": ("logits", False)}, ("probabilities",),
             "decided_label_agreement", 0.99,  # label agreement off near-ties (converters/verify.py)
             ("MobileBertForSequenceClassification", "BertForSequenceClassification")),
    TaskSpec("embedding", "MobileBertForSentenceEmbedding", {"embedding": ("embedding", False)}, ("embedding",),
             "mean_cosine", 0.99, ("MobileBertModel", "MobileBertForSentenceEmbedding", "BertModel")),
    TaskSpec("qa", "MobileBertForQuestionAnswering",
             {"start_logits": ("start_logits", False), "end_logits": ("end_logits", False)},
             ("start_logits", "end_logits"), "span_agreement", 0.99,
             ("MobileBertForQuestionAnswering", "BertForQuestionAnswering")),
    TaskSpec("mlm", "MobileBertForMaskedLM", {"mlm_logits": ("logits", False)}, ("mlm_logits",),
             "top1_agreement", 0.95,
             ("MobileBertForPreTraining", "MobileBertForMaskedLM", "BertForMaskedLM", "BertForPreTraining")),
)}
TASK_NAMES = tuple(TASKS)


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")
    return TASKS[name]


def task_of_architecture(architecture: str | None, default: str = "embedding") -> str:
    """The task a checkpoint's architecture name implies (a bare backbone is an embedder)."""
    for spec in TASKS.values():
        if architecture in spec.architectures:
            return spec.name
    return default
