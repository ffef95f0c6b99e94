"""Checkpoint -> task model -> ONNX (torch.onnx.export, opset 18)."""
from __future__ import annotations

import os

import numpy as np

from mobilebert_mobile.errors import ConversionError  # noqa: F401  (re-exported: defined in errors.py)
from mobilebert_mobile.tasks import INPUT_NAMES, TASK_NAMES as TASKS, TASKS as SPECS  # noqa: F401  (re-exported)

# views of the task contract (mobilebert_mobile/tasks.py) under the names the stages use
DEFAULT_OUTPUTS = {t: s.default_outputs for t, s in SPECS.items()}
KNOWN_OUTPUTS = {t: s.output_names for t, s in SPECS.items()}


def load_for_export(checkpoint: str | os.PathLike, task: str | None, *, mask_value: float | None):
    """Load a MobileBERT or BERT-layout checkpoint as the model of ``task`` (errors as ConversionError).

    Returns (model, task, info). ``mask_value`` replaces the attention-mask fill value.
    """
    from mobilebert_mobile.config import ConfigError
    from mobilebert_mobile.modeling import CheckpointError
    from mobilebert_mobile.modeling.loading import load_task_model

    d = os.fspath(checkpoint)
    if not os.path.isdir(d):
        raise ConversionError(f"checkpoint directory not found: {d}")
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise ConversionError(f"no config.json in {d}: not a checkpoint directory")
    try:
        return load_task_model(d, task, mask_value=mask_value)
    except ConfigError as e:
        raise ConversionError(f"unsupported or invalid config in {d}: {e}") from None
    except (CheckpointError, TypeError, KeyError) as e:
        raise ConversionError(str(e)) from None


class ExportWrapper:
    """Builds the torch module whose signature is the bundle contract (int32 inputs, named outputs)."""

    @staticmethod
    def build(model, task: str, outputs: tuple[str, ...]):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.model(input_ids.long(), attention_mask, token_type_ids.long())
                values = SPECS[task].extract(out, outputs, lambda v: torch.softmax(v, dim=-1))
                return tuple(values[o] for o in outputs)

        return Wrapped().eval()


def torch_outputs(wrapped, feeds: dict[str, np.ndarray], outputs: tuple[str, ...], batch: int):
    import torch

    n = feeds["input_ids"].shape[0]
    res: dict[str, list] = {o: [] for o in outputs}
    with torch.inference_mode():
        for s in range(0, n, max(batch, 8)):
            args = [torch.from_numpy(feeds[k][s:s + max(batch, 8)]) for k in INPUT_NAMES]
            for o, v in zip(outputs, wrapped(*args)):
                res[o].append(v.numpy())
    return {o: np.concatenate(v) for o, v in res.items()}


def export_onnx(wrapped, path: str, *, batch: int, seq_len: int, outputs: tuple[str, ...], opset: int = 18):
    """torch.onnx.export with the new (dynamo) exporter, fixed shapes [batch, seq_len], int32 inputs."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch._export"):
        logging.getLogger(name).setLevel(logging.ERROR)  # e.g. "torchvision is not installed" per export

    example = tuple(torch.ones(batch, seq_len, dtype=torch.int32) for _ in INPUT_NAMES)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(wrapped, example, None, input_names=list(INPUT_NAMES),
                                 output_names=[f"__out_{o}" for o in outputs], opset_version=opset, dynamo=True,
                                 verbose=False)
    model = prog.model_proto
    # the exporter may already use an output's name for an inner value (e.g. "embedding" for the
    # word lookup): move inner names aside, then give the outputs their names
    taken = set(outputs)
    _rename_values(model, {n: f"{n}__inner" for n in _value_names(model) if n in taken})
    _rename_values(model, {f"__out_{o}": o for o in outputs})
    import onnx

    onnx.checker.check_model(model)
    return model


def _value_names(model) -> set[str]:
    g = model.graph
    return {o for n in g.node for o in n.output} | {i.name for i in g.initializer}


def _rename_values(model, mapping: dict[str, str]) -> None:
    if not mapping:
        return
    g = model.graph
    for n in g.node:
        for seq in (n.input, n.output):
            for k, name in enumerate(seq):
                if name in mapping:
                    seq[k] = mapping[name]
    for coll in (g.output, g.value_info, g.initializer):
        for v in coll:
            if v.name in mapping:
                v.name = mapping[v.name]
