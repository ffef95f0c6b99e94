"""Embeddings with the trigram trick.

A 128-wide token embedding is widened to the 512-wide block input by concatenating each
token's neighbours, ``[e(t+1), e(t), e(t-1)]`` (zero at the ends), and projecting 384 -> 512:
a kernel-3 convolution written as one Linear. Position and token-type tables are 512 wide.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import MobileBertConfig
from .layers import make_norm


class MobileBertEmbeddings(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.trigram_input = config.trigram_input
        self.project = config.trigram_input or config.embedding_size != config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        in_size = config.embedding_size * (3 if config.trigram_input else 1)
        self.embedding_transformation = nn.Linear(in_size, config.hidden_size)
        eps = config.layer_norm_eps if config.uniform_layer_norm_eps else None  # transformers: default eps
        self.LayerNorm = make_norm(config.normalization_type, config.hidden_size, eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_positions = config.max_position_embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq = input_ids.shape
        if seq > self.max_positions:
            raise ValueError(f"sequence length {seq} exceeds max_position_embeddings={self.max_positions}")
        if position_ids is None:
            position_ids = torch.arange(seq, device=input_ids.device).unsqueeze(0)  # [1, S]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        e = self.word_embeddings(input_ids)  # [B, S, E]
        if self.trigram_input:
            nxt = F.pad(e[:, 1:], (0, 0, 0, 1))  # e(t+1), zero after the last token
            prv = F.pad(e[:, :-1], (0, 0, 1, 0))  # e(t-1), zero before the first token
            e = torch.cat([nxt, e, prv], dim=2)  # [B, S, 3E]
        if self.project:
            e = self.embedding_transformation(e)  # [B, S, H]
        x = e + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))
