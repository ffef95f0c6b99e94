"""Load any supported checkpoint (MobileBERT family or BERT layout) as the model of a task."""
from __future__ import annotations

import json
import os

from ..config import ConfigError, MobileBertConfig
from .bert import bert_config, is_bert_checkpoint, load_bert_into
from .checkpoint import CheckpointError, read_state_dict
from ..tasks import TASK_NAMES, task_of_architecture, task_spec
from .models import ARCHITECTURES


def task_model_class(task: str):
    """The model class of a task (``tasks.TaskSpec.model_class``)."""
    return ARCHITECTURES[task_spec(task).model_class]


def load_task_model(checkpoint: str | os.PathLike, task: str | None = None, *, mask_value: float | None = None):
    """Returns (model in eval mode, task, info). ``task=None`` takes it from the checkpoint's architecture.

    Loading another task's head from a checkpoint (e.g. an embedding from a classifier) uses the
    backbone only. Raises CheckpointError / ConfigError with the problem named.
    """
    d = os.fspath(checkpoint)
    if not os.path.isdir(d):
        raise CheckpointError(f"checkpoint directory not found: {d}")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise CheckpointError(f"no config.json in {d}: not a checkpoint directory")
    overrides = {} if mask_value is None else {"attention_mask_value": float(mask_value)}
    bert = is_bert_checkpoint(d)
    if bert:
        cfg = bert_config(d, **overrides)
        with open(os.path.join(d, "config.json"), encoding="utf-8") as fh:
            arch = (json.load(fh).get("architectures") or ["BertModel"])[0]
    else:
        cfg = MobileBertConfig.from_json(d)
        if overrides:
            cfg = MobileBertConfig.from_dict({**cfg.to_dict(), **overrides})
        arch = (cfg.architectures or [None])[0]
    inferred = task_of_architecture(arch)
    task = task or inferred
    if task not in TASK_NAMES:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
    cls = task_model_class(task)
    model = cls(cfg)
    if bert:
        load_bert_into(model, d)
    else:
        strict = task == inferred and arch == cls.__name__  # e.g. PreTraining -> MLM drops NSP
        model.load_checkpoint_tensors(read_state_dict(d), strict=strict, where=d)
    return model.eval(), task, {"architecture": arch, "family": "bert" if bert else "mobilebert", "config": cfg}
