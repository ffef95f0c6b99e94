"""One MobileBERT block and the encoder stack.

    a          = Norm(Linear_in(h))                    input bottleneck, residual of attention
    q, k, v    = from the bottleneck (see attention.py)
    x          = Norm(Linear_o(attn(q, k, v)) + a)
    x          = Norm(W2 act(W1 x) + x)                 (num_feedforward_networks - 1) times
    x          = Norm(W2 act(W1 x) + x)                 the last FFN
    out        = Norm(Linear(intra -> hidden)(x) + h)   output bottleneck
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import MobileBertConfig
from .attention import Bottleneck, MobileBertAttention
from .layers import activation, make_norm


class MobileBertIntermediate(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class FFNOutput(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        self.LayerNorm = make_norm(config.normalization_type, config.true_hidden_size, config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class FFNLayer(nn.Module):
    """One of the stacked feed-forward networks (all but the last)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.intermediate = MobileBertIntermediate(config)
        self.output = FFNOutput(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(x), x)


class OutputBottleneck(nn.Module):
    """Linear(intra -> hidden) + the block input, then the norm."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.true_hidden_size, config.hidden_size)
        self.LayerNorm = make_norm(config.normalization_type, config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class MobileBertOutput(nn.Module):
    """The last FFN's output projection, then the output bottleneck back to the block width."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.use_bottleneck = config.use_bottleneck
        self.dense = nn.Linear(config.intermediate_size, config.true_hidden_size)
        # transformers builds this norm without layer_norm_eps (torch default 1e-5): reproduced.
        eps = config.layer_norm_eps if config.uniform_layer_norm_eps else None
        self.LayerNorm = make_norm(config.normalization_type, config.true_hidden_size, eps)
        if self.use_bottleneck:
            self.bottleneck = OutputBottleneck(config)
        else:
            self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        y = self.dense(x)
        if not self.use_bottleneck:
            return self.LayerNorm(self.dropout(y) + residual)
        return self.bottleneck(self.LayerNorm(y + residual), block_input)


class MobileBertLayer(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.use_bottleneck = config.use_bottleneck
        if self.use_bottleneck:
            self.bottleneck = Bottleneck(config)
        self.attention = MobileBertAttention(config)
        if config.num_feedforward_networks > 1:
            self.ffn = nn.ModuleList(FFNLayer(config) for _ in range(config.num_feedforward_networks - 1))
        else:
            self.ffn = nn.ModuleList()
        self.intermediate = MobileBertIntermediate(config)
        self.output = MobileBertOutput(config)

    def forward(self, h: torch.Tensor, mask_bias: torch.Tensor | None):
        if self.use_bottleneck:
            q_in, k_in, v_in, residual = self.bottleneck(h)
        else:
            q_in = k_in = v_in = residual = h
        x, scores, probs = self.attention(q_in, k_in, v_in, residual, mask_bias)  # [B, S, intra]
        for ffn in self.ffn:
            x = ffn(x)
        out = self.output(self.intermediate(x), x, h)  # [B, S, hidden]
        return out, scores, probs


class MobileBertEncoder(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(MobileBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, h: torch.Tensor, mask_bias: torch.Tensor | None, *, collect: bool = False):
        """Returns the last hidden state and, when ``collect``, per-layer lists
        (hidden states including the embedding output, attention scores, attention probabilities)."""
        hidden, scores_all, probs_all = [h], [], []
        for layer in self.layer:
            h, scores, probs = layer(h, mask_bias)
            if collect:
                hidden.append(h)
                scores_all.append(scores)
                probs_all.append(probs)
        return h, hidden, scores_all, probs_all
