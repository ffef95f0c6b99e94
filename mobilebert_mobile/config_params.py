"""Parameter counts from a config alone: no torch, no model built (``presets`` lists the 294M
IB-BERT teacher in milliseconds). Tested equal to ``num_parameters()`` of built models."""
from __future__ import annotations

from .config import MobileBertConfig


def _linear(i: int, o: int) -> int:
    return i * o + o


def _norm(n: int) -> int:  # NoNorm and LayerNorm both carry a weight and a bias
    return 2 * n


def count_parameters(cfg: MobileBertConfig) -> int:
    """Backbone parameters (embeddings + blocks, no pooler, no head) of ``MobileBertModel(cfg)``."""
    H, T, F, E = cfg.hidden_size, cfg.true_hidden_size, cfg.intermediate_size, cfg.embedding_size
    emb = (cfg.vocab_size * E + cfg.max_position_embeddings * H + cfg.type_vocab_size * H
           + _linear(E * (3 if cfg.trigram_input else 1), H) + _norm(H))
    block = 0
    if cfg.use_bottleneck:
        I = cfg.intra_bottleneck_size  # noqa: E741
        block += _linear(H, I) + _norm(I)                       # input bottleneck
        if cfg.key_query_shared_bottleneck:
            block += _linear(H, I) + _norm(I)                   # shared Q/K bottleneck
        block += _linear(T, H) + _norm(H)                       # output bottleneck
    block += 2 * _linear(cfg.query_key_input_size, T) + _linear(cfg.value_input_size, T)   # Q, K, V
    block += _linear(T, T) + _norm(T)                           # attention output
    block += cfg.num_feedforward_networks * (_linear(T, F) + _linear(F, T) + _norm(T))    # stacked FFNs
    return emb + cfg.num_hidden_layers * block
