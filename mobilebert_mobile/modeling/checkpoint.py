"""Checkpoint files in the transformers layout: ``config.json`` + ``model.safetensors``.

Also reads ``pytorch_model.bin`` (with ``weights_only=True``: no code runs from the file) and
sharded ``model.safetensors.index.json``. Key matching is explicit: missing, unexpected and
mis-shaped tensors are listed in one error.
"""
from __future__ import annotations

import json
import os

import torch

from .._io import atomic_path
from ..errors import CheckpointError  # noqa: F401  (re-exported: defined in errors.py)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
# Buffers older transformers versions saved; derived, never loaded.
IGNORED_KEYS = ("embeddings.position_ids",)


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {path}: {e} (corrupt or truncated safetensors file?)") from None


def read_state_dict(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, as saved (no renaming)."""
    d = os.fspath(directory)
    if not os.path.isdir(d):
        raise CheckpointError(f"checkpoint directory not found: {d}")
    st, index, pt = (os.path.join(d, n) for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME))
    if os.path.isfile(st):
        return _load_safetensors(st)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"cannot read shard index {index}: {e}") from None
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            p = os.path.join(d, shard)
            if not os.path.isfile(p):
                raise CheckpointError(f"shard {shard} named in {index} is missing")
            out.update(_load_safetensors(p))
        return out
    if os.path.isfile(pt):
        try:
            sd = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot read {pt} safely (weights_only=True): {e}") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{pt} does not hold a flat dict of tensors")
        return sd
    raise CheckpointError(f"no weights in {d}: expected {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {PT_WEIGHTS_NAME}")


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})


def _summarise(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def match_state_dict(
    expected: dict[str, torch.Size],
    found: dict[str, torch.Tensor],
    *,
    prefix: str,
    is_base_model: bool,
    strict: bool,
    where: str,
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Rename checkpoint keys to the model's and check them.

    A base model (no head) accepts checkpoints with or without the ``prefix.`` (transformers'
    head models save ``mobilebert.*``); head weights in such a checkpoint are ignored. A head model
    accepts a backbone-only checkpoint (keys gain the prefix); its head is then missing.
    With ``strict=False`` whatever fits is loaded and the rest reported.
    Returns (tensors to load, keys left at their initial value, checkpoint keys not used).
    """
    found = {k: v for k, v in found.items() if not k.endswith(IGNORED_KEYS)}
    has_prefix = any(k.startswith(prefix + ".") for k in found)
    renamed: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for k, v in found.items():
        if is_base_model:
            if has_prefix:
                if not k.startswith(prefix + "."):
                    ignored.append(k)  # a head of another task
                    continue
                k = k[len(prefix) + 1:]
        elif not has_prefix:
            k = f"{prefix}.{k}"
        renamed[k] = v
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    mis_shaped = sorted(k for k in set(expected) & set(renamed) if tuple(renamed[k].shape) != tuple(expected[k]))
    if strict and (missing or unexpected or mis_shaped):
        problems = []
        if mis_shaped:
            problems.append("mis-shaped tensors: " + _summarise(
                [f"{k} (checkpoint {tuple(renamed[k].shape)}, model {tuple(expected[k])})" for k in mis_shaped]))
        if unexpected:
            problems.append(f"unexpected tensors: {_summarise(unexpected)}")
        if missing:
            problems.append(f"missing tensors: {_summarise(missing)}")
        raise CheckpointError(f"checkpoint {where} does not fit the model: " + "; ".join(problems)
                              + " (strict=False loads what fits and initialises the rest)")
    load = {k: v for k, v in renamed.items() if k in expected and k not in mis_shaped}
    return load, sorted(missing + mis_shaped), sorted(ignored + unexpected)
