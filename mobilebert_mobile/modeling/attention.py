"""Bottlenecks and multi-head self-attention.

Where Q, K and V come from is the main difference between the family's members:

* mobilebert: Q, K from a shared attention bottleneck (512 -> 128), V from the 512-wide block input;
* mobilebert-tiny: Q, K and V all from the input bottleneck;
* IB-BERT teacher / no bottleneck: Q, K and V from the block input.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import MobileBertConfig
from .layers import make_norm


class BottleneckLayer(nn.Module):
    """Linear(hidden -> intra) followed by the norm (NoNorm folds into the Linear at conversion)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intra_bottleneck_size)
        self.LayerNorm = make_norm(config.normalization_type, config.intra_bottleneck_size, config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h))


class Bottleneck(nn.Module):
    """Returns (query input, key input, value input, residual of the attention sub-layer)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.use_bottleneck_attention = config.use_bottleneck_attention
        self.key_query_shared_bottleneck = config.key_query_shared_bottleneck
        self.input = BottleneckLayer(config)
        if self.key_query_shared_bottleneck:
            self.attention = BottleneckLayer(config)

    def forward(self, h: torch.Tensor):
        a = self.input(h)  # [B, S, intra]
        if self.use_bottleneck_attention:
            return a, a, a, a
        if self.key_query_shared_bottleneck:
            s = self.attention(h)  # [B, S, intra]
            return s, s, h, a
        return h, h, h, a


class MobileBertSelfAttention(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.attention_head_size
        all_head = self.num_heads * self.head_size
        self.scaling = self.head_size ** -0.5
        self.query = nn.Linear(config.query_key_input_size, all_head)
        self.key = nn.Linear(config.query_key_input_size, all_head)
        self.value = nn.Linear(config.value_input_size, all_head)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, self.head_size).transpose(1, 2)  # [B, N, S, D]

    def forward(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                mask_bias: torch.Tensor | None):
        q, k, v = self._heads(self.query(q_in)), self._heads(self.key(k_in)), self._heads(self.value(v_in))
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling  # [B, N, S, S]
        if mask_bias is not None:
            scores = scores + mask_bias  # [B, 1, 1, S], computed once per model
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(self.dropout(probs), v)  # [B, N, S, D]
        b, n, s, d = ctx.shape
        ctx = ctx.transpose(1, 2).reshape(b, s, n * d)  # [B, S, intra]
        return ctx, scores, probs


class MobileBertSelfOutput(nn.Module):
    """Linear(intra -> intra) + residual, then the norm."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.true_hidden_size)
        self.LayerNorm = make_norm(config.normalization_type, config.true_hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if not config.use_bottleneck else 0.0)

    def forward(self, ctx: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(ctx)) + residual)


class MobileBertAttention(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.self = MobileBertSelfAttention(config)
        self.output = MobileBertSelfOutput(config)

    def forward(self, q_in, k_in, v_in, residual, mask_bias):
        ctx, scores, probs = self.self(q_in, k_in, v_in, mask_bias)
        return self.output(ctx, residual), scores, probs
