"""Multiply-accumulates of a MobileBERT-family encoder per sequence, per layer and per part."""
from __future__ import annotations

from mobilebert_mobile.config import MobileBertConfig


def layer_macs(cfg: MobileBertConfig, seq_len: int) -> dict[str, int]:
    """MACs of one block for a whole sequence, by part."""
    S, H, T = seq_len, cfg.hidden_size, cfg.true_hidden_size
    A = cfg.num_attention_heads * cfg.attention_head_size
    parts = {}
    if cfg.use_bottleneck:
        parts["input bottleneck"] = S * H * cfg.intra_bottleneck_size
        if cfg.key_query_shared_bottleneck:
            parts["attention bottleneck"] = S * H * cfg.intra_bottleneck_size
    parts["query+key"] = 2 * S * cfg.query_key_input_size * A
    parts["value"] = S * cfg.value_input_size * A
    parts["attention scores+context"] = 2 * S * S * A
    parts["attention output"] = S * A * T
    parts["FFNs"] = cfg.num_feedforward_networks * 2 * S * T * cfg.intermediate_size
    if cfg.use_bottleneck:
        parts["output bottleneck"] = S * T * H
    return parts


def model_macs(cfg: MobileBertConfig, seq_len: int, task: str = "classification") -> dict:
    per_layer = layer_macs(cfg, seq_len)
    emb_in = cfg.embedding_size * (3 if cfg.trigram_input else 1)
    embeddings = seq_len * emb_in * cfg.hidden_size if (cfg.trigram_input or cfg.embedding_size != cfg.hidden_size) else 0
    head = {"classification": cfg.hidden_size * cfg.num_labels, "embedding": 0, "qa": seq_len * cfg.hidden_size * 2,
            "mlm": seq_len * (cfg.hidden_size * cfg.hidden_size + cfg.hidden_size * cfg.vocab_size)}[task]
    layer_total = sum(per_layer.values())
    total = embeddings + cfg.num_hidden_layers * layer_total + head
    return {"total": total, "embeddings": embeddings, "per_layer": per_layer, "per_layer_total": layer_total,
            "layers": cfg.num_hidden_layers, "head": head,
            "ffn_share": cfg.num_hidden_layers * per_layer["FFNs"] / total}


def format_breakdown(m: dict) -> str:
    lines = [f"multiply-accumulates per sequence: {m['total'] / 1e9:.3f} G "
             f"({m['layers']} layers x {m['per_layer_total'] / 1e6:.1f} M + embeddings "
             f"{m['embeddings'] / 1e6:.1f} M + head {m['head'] / 1e6:.2f} M; FFNs {m['ffn_share']:.0%})"]
    for k, v in m["per_layer"].items():
        lines.append(f"  per layer  {k:<26} {v / 1e6:8.2f} M  ({v / m['per_layer_total']:.0%})")
    return "\n".join(lines)
