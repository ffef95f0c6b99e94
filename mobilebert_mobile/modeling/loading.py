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


def load_model(checkpoint: str | os.PathLike, cls, *, config_overrides: dict | None = None, strict: bool = True,
               skip_mismatched: bool = False, **model_kwargs):
    """The one checkpoint -> model loader: a MobileBERT-family or BERT-layout checkpoint directory as a
    model of class ``cls``. Returns (model, config, is_bert).

    ``config_overrides`` replace config fields (dropout off for a teacher, labels for a fresh head);
    ``strict=False`` loads what fits (a backbone under a new head); ``skip_mismatched`` also leaves
    out tensors whose shape differs (a head of another size). Errors name the problem.
    """
    d = os.fspath(checkpoint)
    if not os.path.isdir(d):
        raise CheckpointError(f"checkpoint directory not found: {d}")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise CheckpointError(f"no config.json in {d}: not a checkpoint directory")
    over = dict(config_overrides or {})
    if is_bert_checkpoint(d):
        over.pop("architectures", None)
        cfg = bert_config(d, **over)
        model = cls(cfg, **model_kwargs)
        load_bert_into(model, d)
        return model, cfg, True
    cfg = MobileBertConfig.from_json(d)
    if over:
        cfg = MobileBertConfig.from_dict({**cfg.to_dict(), **over})
    model = cls(cfg, **model_kwargs)
    tensors = read_state_dict(d)
    if skip_mismatched:
        own = model.state_dict()
        tensors = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    model.load_checkpoint_tensors(tensors, strict=strict, where=d)
    return model, cfg, False


def checkpoint_architecture(checkpoint: str | os.PathLike) -> str | None:
    """The first architecture a checkpoint's config.json names (BertModel for a bare BERT one)."""
    d = os.fspath(checkpoint)
    if is_bert_checkpoint(d):
        with open(os.path.join(d, "config.json"), encoding="utf-8") as fh:
            return (json.load(fh).get("architectures") or ["BertModel"])[0]
    return (MobileBertConfig.from_json(d).architectures or [None])[0]


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
    arch = checkpoint_architecture(d)
    inferred = task_of_architecture(arch)
    task = task or inferred
    if task not in TASK_NAMES:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
    cls = task_model_class(task)
    strict = task == inferred and arch == cls.__name__  # e.g. PreTraining -> MLM drops NSP
    overrides = {} if mask_value is None else {"attention_mask_value": float(mask_value)}
    model, cfg, bert = load_model(d, cls, config_overrides=overrides, strict=strict)
    return model.eval(), task, {"architecture": arch, "family": "bert" if bert else "mobilebert", "config": cfg}
