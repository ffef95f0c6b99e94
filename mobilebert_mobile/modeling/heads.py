"""Task heads on top of the encoder."""
from __future__ import annotations

import torch
from torch import nn

from ..config import MobileBertConfig
from .layers import activation


class MobileBertPooler(nn.Module):
    """First-token pooling; with ``classifier_activation`` a dense + tanh as in BERT."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.do_activate = config.classifier_activation
        if self.do_activate:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        first = h[:, 0]  # [B, H]
        return torch.tanh(self.dense(first)) if self.do_activate else first


class MobileBertPredictionHeadTransform(nn.Module):
    """Dense + activation + a real LayerNorm (even in the NoNorm student)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class MobileBertLMPredictionHead(nn.Module):
    """MLM logits against the widened output embedding ``[E | extra]``: (E + extra) x vocab.

    ``decoder.weight`` is the word-embedding table (tied) and ``dense.weight`` the extra
    (hidden - embedding) x vocab rows; ``bias`` is shared with ``decoder.bias``.
    """

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.transform = MobileBertPredictionHeadTransform(config)
        self.dense = nn.Linear(config.vocab_size, config.hidden_size - config.embedding_size, bias=False)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.transform(h)  # [B, S, H]
        out_embedding = torch.cat([self.decoder.weight.t(), self.dense.weight], dim=0)  # [H, V]
        return h.matmul(out_embedding) + self.bias  # [B, S, V]


class MobileBertPreTrainingHeads(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output: torch.Tensor, pooled_output: torch.Tensor):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


class MobileBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Average of the token states over real (mask = 1) tokens: [B, S, H] -> [B, H]."""
    if attention_mask is None:
        return h.mean(dim=1)
    m = attention_mask.to(h.dtype).unsqueeze(-1)  # [B, S, 1]
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
