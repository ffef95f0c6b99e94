"""Teachers, matching students, the TinyBERT-style mapping fallback, and teacher -> student copies.

Layer-wise transfer compares student layer l with teacher layer l, so the paper requires equal
layer count, inter-block width (hidden_size) and head count. :func:`check_pair` says which of
them differ; with ``mapping=True`` a learned linear map per compared layer (student width ->
teacher width, TinyBERT's W_h) and a uniform layer map (student l -> teacher
round((l + 1) * Lt / Ls) - 1) stand in; attention transfer then needs equal head counts and
is switched off (with a warning) where they differ.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..config import PRESETS, MobileBertConfig
from ..modeling import MobileBertForPreTraining, MobileBertModel
from ..modeling.bert import bert_config, is_bert_checkpoint, load_bert_into
from ..modeling.checkpoint import read_state_dict

log = logging.getLogger(__name__)


class DistillError(ValueError):
    """Teacher and student cannot be paired, or a distillation setting is wrong."""


@dataclass
class Teacher:
    model: nn.Module  # MobileBertForPreTraining (with MLM head) or MobileBertModel (encoder only)
    config: MobileBertConfig
    source: str
    has_mlm: bool

    def encoder(self) -> MobileBertModel:
        return self.model.mobilebert if hasattr(self.model, "mobilebert") else self.model


def load_teacher(source: str) -> Teacher:
    """A checkpoint directory (our family or BERT layout, e.g. all-MiniLM-L6-v2) or a preset name
    (random weights: only for tests and smoke runs)."""
    if os.path.isdir(source):
        if is_bert_checkpoint(source):
            cfg = bert_config(source, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            model = MobileBertModel(cfg, add_pooling_layer=False)
            load_bert_into(model, source)
            return Teacher(model.eval(), cfg, source, False)
        cfg = MobileBertConfig.from_json(source)
        cfg = MobileBertConfig.from_dict({**cfg.to_dict(), "hidden_dropout_prob": 0.0,
                                          "attention_probs_dropout_prob": 0.0})
        names = read_state_dict(source)
        has_mlm = any(k.startswith("cls.predictions") for k in names)
        model = MobileBertForPreTraining(cfg) if has_mlm else MobileBertModel(cfg, add_pooling_layer=False)
        model.load_checkpoint_tensors(names, strict=False, where=source)
        return Teacher(model.eval(), cfg, source, has_mlm)
    if source in PRESETS:
        cfg = MobileBertConfig.from_preset(source, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return Teacher(MobileBertForPreTraining(cfg).eval(), cfg, source, True)
    raise DistillError(f"teacher {source!r} is neither a checkpoint directory nor a preset "
                       f"({', '.join(sorted(PRESETS))})")


def matching_student_config(teacher: MobileBertConfig, **overrides) -> MobileBertConfig:
    """A MobileBERT-style bottleneck student with the teacher's layers, inter-block width and heads.

    Default shape (overridable): embedding ``hidden / 3`` rounded to 16 with the trigram
    projection, bottleneck ``hidden / 4`` rounded up to a multiple of the head count, FFN 2x the
    bottleneck, 4 stacked FFNs, NoNorm, ReLU, shared key/query bottleneck.
    """
    h, n = teacher.hidden_size, teacher.num_attention_heads
    intra = max(n, -(-h // 4 // n) * n)
    values = dict(
        vocab_size=teacher.vocab_size, hidden_size=h, num_hidden_layers=teacher.num_hidden_layers,
        num_attention_heads=n, embedding_size=max(16, (h // 3) // 16 * 16), trigram_input=True,
        use_bottleneck=True, intra_bottleneck_size=intra, use_bottleneck_attention=False,
        key_query_shared_bottleneck=True, num_feedforward_networks=4, intermediate_size=2 * intra,
        normalization_type="no_norm", hidden_act="relu", max_position_embeddings=teacher.max_position_embeddings,
        type_vocab_size=teacher.type_vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.1,
        classifier_activation=False,
    )
    values.update(overrides)
    return MobileBertConfig(**values)


def check_pair(teacher: MobileBertConfig, student: MobileBertConfig, *, mapping: bool = False) -> dict:
    """What layer-wise transfer can use: {"layer_map", "project", "attention"}; raises DistillError
    naming every mismatched size when they differ and ``mapping`` is off."""
    diffs = []
    for field, label in (("num_hidden_layers", "layers"), ("hidden_size", "inter-block width (hidden_size)"),
                         ("num_attention_heads", "attention heads")):
        a, b = getattr(teacher, field), getattr(student, field)
        if a != b:
            diffs.append(f"{label}: teacher {a}, student {b}")
    if teacher.vocab_size != student.vocab_size:
        raise DistillError(f"teacher and student vocabularies differ ({teacher.vocab_size} vs {student.vocab_size})")
    if diffs and not mapping:
        raise DistillError("teacher and student do not match for layer-wise transfer: " + "; ".join(diffs) +
                           ". Configure the student to match, or pass --mapping for a learned linear map")
    lt, ls = teacher.num_hidden_layers, student.num_hidden_layers
    layer_map = [round((l + 1) * lt / ls) - 1 for l in range(ls)]
    attention = teacher.num_attention_heads == student.num_attention_heads
    if mapping and not attention:
        log.warning("head counts differ (teacher %d, student %d): attention transfer is off",
                    teacher.num_attention_heads, student.num_attention_heads)
    return {"layer_map": layer_map, "project": teacher.hidden_size != student.hidden_size, "attention": attention}


class FeatureMapping(nn.Module):
    """TinyBERT's fallback: one Linear(student width -> teacher width) per compared hidden state
    (embedding output + each layer). Trained with the student, dropped afterwards."""

    def __init__(self, student_width: int, teacher_width: int, count: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in range(count))

    def forward(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.maps[i](h)


@torch.no_grad()
def copy_from_teacher(student: nn.Module, teacher: Teacher) -> list[str]:
    """Copy what shapes allow: position and token-type tables, the embedding norm (same norm
    type), word embeddings (same width) or else their best low-rank approximation (truncated SVD
    of the teacher table into the student's narrow table, the trigram projection's centre block
    set to the basis), and the MLM head transform. Returns what was copied."""
    s_enc = student.mobilebert if hasattr(student, "mobilebert") else student
    t_enc = teacher.encoder()
    se, te = s_enc.embeddings, t_enc.embeddings
    copied = []
    for name in ("position_embeddings", "token_type_embeddings"):
        a, b = getattr(se, name).weight, getattr(te, name).weight
        if a.shape[1] == b.shape[1]:
            n = min(a.shape[0], b.shape[0])
            a[:n].copy_(b[:n])
            copied.append(f"embeddings.{name}")
    if student.config.normalization_type == teacher.config.normalization_type:
        for p in ("weight", "bias"):
            getattr(se.LayerNorm, p).copy_(getattr(te.LayerNorm, p))
        copied.append("embeddings.LayerNorm")
    tw = te.word_embeddings.weight  # [V, Et]
    sw = se.word_embeddings.weight  # [V, Es]
    if sw.shape == tw.shape and se.trigram_input == te.trigram_input:
        sw.copy_(tw)
        if se.project and te.project:
            se.embedding_transformation.weight.copy_(te.embedding_transformation.weight)
            se.embedding_transformation.bias.copy_(te.embedding_transformation.bias)
        copied.append("embeddings.word_embeddings")
    # low-rank start only when the teacher table is its block input (no projection of its own)
    elif not te.project and se.project and tw.shape[1] == se.embedding_transformation.out_features:
        k = sw.shape[1]
        u, s, vh = torch.linalg.svd(tw.float(), full_matrices=False)  # tw = u s vh
        sw.copy_(u[:, :k] * s[:k])
        w = se.embedding_transformation.weight  # [H, 3k] (trigram) or [H, k]
        w.zero_()
        centre = k if se.trigram_input else 0  # [e(t+1), e(t), e(t-1)]: e(t) is the middle block
        w[:, centre:centre + k].copy_(vh[:k].t())
        se.embedding_transformation.bias.zero_()
        copied.append(f"embeddings.word_embeddings (rank-{k} SVD of the teacher table)")
    if hasattr(student, "cls") and hasattr(teacher.model, "cls"):
        st, tt = student.cls.predictions.transform, teacher.model.cls.predictions.transform
        if st.dense.weight.shape == tt.dense.weight.shape:
            st.load_state_dict(tt.state_dict())
            copied.append("cls.predictions.transform")
    return copied
