"""Normalisation and activation building blocks."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise affine map, ``x * weight + bias``.

    Stored under the ``LayerNorm`` names of the checkpoint with ``weight`` (gamma) and ``bias`` (beta).
    """

    def __init__(self, size: int, eps: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def make_norm(kind: str, size: int, eps: float | None) -> nn.Module:
    """``no_norm`` or ``layer_norm``. ``eps=None`` means torch's default (1e-5).

    transformers passes ``layer_norm_eps`` to some norms and not to others (the embedding norm
    and the block output norm use the default); callers reproduce that exactly.
    """
    if kind == "no_norm":
        return NoNorm(size)
    if kind == "layer_norm":
        return nn.LayerNorm(size) if eps is None else nn.LayerNorm(size, eps=eps)
    raise ValueError(f"unknown normalization_type {kind!r}")


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACT_FNS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "gelu": F.gelu,
    "gelu_new": _gelu_new,
    "gelu_pytorch_tanh": _gelu_tanh,
    "tanh": torch.tanh,
    "silu": F.silu,
}


def activation(name: str):
    try:
        return ACT_FNS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACT_FNS)}") from None
