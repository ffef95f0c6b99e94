"""Standard BERT-layout checkpoints (e.g. all-MiniLM-L6-v2) as members of our model family.

A BERT layer is a MobileBERT layer without bottleneck, with one FFN, LayerNorm and GELU, and
BERT's embeddings are MobileBERT's without the trigram projection. So a ``BertModel``
checkpoint maps onto ``MobileBertConfig(use_bottleneck=False, num_feedforward_networks=1,
trigram_input=False, embedding_size=hidden_size, normalization_type="layer_norm",
uniform_layer_norm_eps=True)`` with its tensors renamed ``bert.* -> mobilebert.*``.
"""
from __future__ import annotations

import json
import os

import torch

from ..config import ConfigError, MobileBertConfig
from .checkpoint import CheckpointError, read_state_dict


def is_bert_checkpoint(directory: str | os.PathLike) -> bool:
    try:
        with open(os.path.join(os.fspath(directory), "config.json"), encoding="utf-8") as fh:
            return json.load(fh).get("model_type") == "bert"
    except (OSError, ValueError):
        return False


def bert_config(directory: str | os.PathLike, **overrides) -> MobileBertConfig:
    p = os.path.join(os.fspath(directory), "config.json")
    try:
        with open(p, encoding="utf-8") as fh:
            c = json.load(fh)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {p}: {e}") from None
    if c.get("model_type") != "bert":
        raise ConfigError(f"{p}: model_type={c.get('model_type')!r}, expected 'bert'")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"{p}: position_embedding_type={c['position_embedding_type']!r} is not supported "
                          "(only absolute positions)")
    hidden = c["hidden_size"]
    values = dict(
        vocab_size=c["vocab_size"], hidden_size=hidden, num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
        hidden_act=c.get("hidden_act", "gelu"), hidden_dropout_prob=c.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=c.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=c.get("max_position_embeddings", 512), type_vocab_size=c.get("type_vocab_size", 2),
        initializer_range=c.get("initializer_range", 0.02), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        pad_token_id=c.get("pad_token_id", 0) or 0, embedding_size=hidden, trigram_input=False,
        use_bottleneck=False, intra_bottleneck_size=hidden, use_bottleneck_attention=False,
        key_query_shared_bottleneck=False, num_feedforward_networks=1, normalization_type="layer_norm",
        classifier_activation=True, uniform_layer_norm_eps=True,
        id2label={int(k): v for k, v in c["id2label"].items()} if c.get("id2label") else None,
    )
    values.update(overrides)
    return MobileBertConfig(**values)


def load_bert_into(model, directory: str | os.PathLike) -> dict:
    """Load a BERT checkpoint's tensors into one of our models built from :func:`bert_config`.

    The unused trigram projection (absent from BERT) keeps an identity initialisation; every
    other tensor must match. Tensors of heads our model does not have (e.g. BERT's MLM head) are
    reported as unused.
    """
    found = read_state_dict(directory)
    renamed = {}
    for k, v in found.items():
        if k.startswith("bert."):
            k = "mobilebert." + k[len("bert."):]
        elif not k.startswith(("cls.", "classifier.", "qa_outputs.")):
            k = "mobilebert." + k
        renamed[k] = v
    own = model.state_dict()
    prefix = "" if model.is_base_model else "mobilebert."
    t = f"{prefix}embeddings.embedding_transformation"
    with torch.no_grad():
        h = model.config.hidden_size
        own[f"{t}.weight"].copy_(torch.eye(h))
        own[f"{t}.bias"].zero_()
    if model.is_base_model:
        renamed = {k[len("mobilebert."):] if k.startswith("mobilebert.") else k: v for k, v in renamed.items()}
    renamed[f"{t}.weight"] = own[f"{t}.weight"].clone()
    renamed[f"{t}.bias"] = own[f"{t}.bias"].clone()
    usable = {k: v for k, v in renamed.items() if k in own}
    unused = sorted(set(renamed) - set(own))
    expected_missing = sorted(set(own) - set(usable))
    head_only = [k for k in expected_missing if not k.startswith(prefix + "embeddings") and
                 not k.startswith(prefix + "encoder")]
    body_missing = [k for k in expected_missing if k not in head_only]
    if body_missing:
        raise CheckpointError(f"BERT checkpoint {directory} lacks encoder tensors: {', '.join(body_missing[:10])}")
    result = model.load_checkpoint_tensors(usable, strict=False, where=os.fspath(directory))
    return {"missing": result["missing"], "unused": unused}
