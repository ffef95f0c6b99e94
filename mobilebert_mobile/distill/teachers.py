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
from ..errors import InputError
from ..modeling import MobileBertForPreTraining, MobileBertModel
from ..modeling.bert import is_bert_checkpoint
from ..modeling.checkpoint import read_state_dict
from ..modeling.loading import load_model

log = logging.getLogger(__name__)


class DistillError(InputError):
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
        no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        has_mlm = not is_bert_checkpoint(source) and any(k.startswith("cls.predictions")
                                                          for k in read_state_dict(source))
        if has_mlm:
            model, cfg, _ = load_model(source, MobileBertForPreTraining, config_overrides=no_dropout, strict=False)
        else:
            model, cfg, _ = load_model(source, MobileBertModel, config_overrides=no_dropout, strict=False,
                                       add_pooling_layer=False)
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


# ----------------------------------------------------------------------------- Q/K initialisation
QK_INITS = ("random", "scaled", "teacher")


def _qk_inputs(layer, h: torch.Tensor) -> torch.Tensor:
    """The tensor a block's query and key projections read (they share it in every member of the family)."""
    if layer.use_bottleneck:
        q_in, k_in, _, _ = layer.bottleneck(h)
        return q_in
    return h


def _heads_of(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.reshape(x.shape[0], n, -1)  # [T, N, D]


@torch.no_grad()
def init_qk(s_layer, t_layer, h_s: torch.Tensor, h_t: torch.Tensor, mask: torch.Tensor, mode: str,
            *, ridge: float = 1e-3) -> dict:
    """Start a student block's attention scores where the teacher's are, on the student's own inputs.

    ``h_s`` / ``h_t``: the student's / teacher's input of the compared block, [B, S, H] each, for
    the same calibration batch; ``mask`` [B, S]. Why this is needed: the student's block input
    is small (NoNorm keeps the copied embedding scale, ~0.06 against ~0.5 after the teacher's
    LayerNorm) and its bottleneck and Q/K start at std 0.02, so its scores start near 1e-5:
    attention is exactly uniform, and the bilinear score gives Q and K gradients so small that
    LAMB (relative steps of lr per step, Adam eps 1e-6 after clipping) cannot grow them in any
    short budget. Modes:

    * ``random``: leave the initialisation alone (the earlier behaviour);
    * ``scaled``: multiply W_q, b_q and W_k, b_k so that the student's q and k have the teacher's
      standard deviation on the calibration tokens (random patterns at the teacher's scale);
    * ``teacher``: fit them to the teacher. Ridge regression predicts the teacher's q and k
      (every head) from the student's block input; where the student has a shared key/query
      bottleneck with NoNorm, it is set to the leading principal directions of those
      predictions; per head, the teacher's bilinear score form on that input is then reduced to
      the student's head size by an SVD in whitened coordinates (the best rank-d_s form), which
      gives W_q, b_q, W_k, b_k. Teacher heads of 32 dimensions become student heads of 8: the
      leading 8 directions of each head's score form are kept.

    Returns numbers for the record (scores' std before/after, explained share of the fit).
    """
    if mode not in QK_INITS:
        raise DistillError(f"unknown Q/K initialisation {mode!r}; choose one of {', '.join(QK_INITS)}")
    sa, ta = s_layer.attention.self, t_layer.attention.self
    if sa.num_heads != ta.num_heads:
        raise DistillError(f"Q/K initialisation needs equal head counts (student {sa.num_heads}, "
                           f"teacher {ta.num_heads})")
    keep = mask.bool()
    n, ds, dt = sa.num_heads, sa.head_size, ta.head_size
    t_in = _qk_inputs(t_layer, h_t)[keep].double()
    qt, kt = ta.query.weight.double(), ta.key.weight.double()
    yq = t_in @ qt.t() + ta.query.bias.double()  # [T, N * dt]
    yk = t_in @ kt.t() + ta.key.bias.double()
    s_in = _qk_inputs(s_layer, h_s)[keep].double()
    q0 = _heads_of(s_in @ sa.query.weight.double().t() + sa.query.bias.double(), n)
    k0 = _heads_of(s_in @ sa.key.weight.double().t() + sa.key.bias.double(), n)
    perm = torch.randperm(q0.shape[0], generator=torch.Generator().manual_seed(0))  # pairs of tokens
    before = float(torch.einsum("tnd,tnd->tn", q0, k0[perm]).std() * ds ** -0.5)
    info = {"mode": mode, "tokens": int(keep.sum())}
    if mode == "random":
        return info
    if mode == "scaled":
        cq = float(yq.std() / (s_in @ sa.query.weight.double().t() + sa.query.bias.double()).std())
        ck = float(yk.std() / (s_in @ sa.key.weight.double().t() + sa.key.bias.double()).std())
        for lin, c in ((sa.query, cq), (sa.key, ck)):
            lin.weight.mul_(c)
            lin.bias.mul_(c)
        info.update(scale_q=round(cq, 2), scale_k=round(ck, 2))
    else:
        bn = getattr(s_layer.bottleneck, "attention", None) if s_layer.use_bottleneck else None
        settable = (bn is not None and getattr(s_layer.bottleneck, "key_query_shared_bottleneck", False)
                    and not s_layer.bottleneck.use_bottleneck_attention and hasattr(bn.LayerNorm, "weight")
                    and type(bn.LayerNorm).__name__ == "NoNorm")
        if settable:
            # the shared bottleneck: ridge fit of the teacher's q, k from the block input, then its
            # leading principal directions (uncentred: the bias column carries the offsets)
            x = torch.cat([h_s[keep].double(), torch.ones(int(keep.sum()), 1, dtype=torch.float64)], 1)
            y = torch.cat([yq, yk], 1)
            g = x.t() @ x
            g += ridge * torch.linalg.eigvalsh(g)[-1] * torch.eye(g.shape[0], dtype=g.dtype)
            # (ridge relative to the largest eigenvalue: the student input is small and anisotropic, and a
            # weak ridge gives huge weights on low-variance directions, which LAMB steps of lr x ||W|| wreck)
            b = torch.linalg.solve(g, x.t() @ y)  # [H + 1, 2 N dt]
            z = x @ b
            info["bottleneck_fit_r2"] = round(float(1 - ((z - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()), 4)
            _, sv, vh = torch.linalg.svd(z, full_matrices=False)
            w = sv.shape[0] if sv.shape[0] < bn.dense.out_features else bn.dense.out_features
            c = b @ vh[:w].t()  # [H + 1, intra]
            bn.dense.weight.zero_()
            bn.dense.bias.zero_()
            bn.dense.weight[:w].copy_(c[:-1].t().float())
            bn.dense.bias[:w].copy_(c[-1].float())
            bn.LayerNorm.weight.fill_(1.0)
            bn.LayerNorm.bias.zero_()
            s_in = _qk_inputs(s_layer, h_s)[keep].double()
        # per head: the teacher's score form on the student's Q/K input, reduced to rank ds
        xs = torch.cat([s_in, torch.ones(s_in.shape[0], 1, dtype=torch.float64)], 1)  # [T, D + 1]
        g = xs.t() @ xs
        g += ridge * g.trace() / g.shape[0] * torch.eye(g.shape[0], dtype=g.dtype)
        gq = torch.linalg.solve(g, xs.t() @ yq)  # [D + 1, N dt]
        gk = torch.linalg.solve(g, xs.t() @ yk)
        m2 = xs.t() @ xs / xs.shape[0]  # second moment of the augmented input
        ev, evec = torch.linalg.eigh(m2)
        ev = ev.clamp(min=ev.max() * 1e-10)
        root, iroot = (evec * ev.sqrt()) @ evec.t(), (evec * ev.rsqrt()) @ evec.t()
        wq = torch.zeros(n * ds, xs.shape[1], dtype=torch.float64)
        wk = torch.zeros_like(wq)
        kept = []
        for hh in range(n):
            a = gq[:, hh * dt:(hh + 1) * dt]
            bk = gk[:, hh * dt:(hh + 1) * dt]
            m = (a @ bk.t()) * (ds ** 0.5 / dt ** 0.5)  # student score = x^T Wq^T Wk x / sqrt(ds)
            u, sv, vh = torch.linalg.svd(root @ m @ root)
            r = min(ds, sv.shape[0])
            kept.append(float(sv[:r].sum() / sv.sum().clamp(min=1e-30)))
            wq[hh * ds:hh * ds + r] = (sv[:r].sqrt()[:, None] * u[:, :r].t()) @ iroot
            wk[hh * ds:hh * ds + r] = (sv[:r].sqrt()[:, None] * vh[:r]) @ iroot
        sa.query.weight.copy_(wq[:, :-1].float())
        sa.query.bias.copy_(wq[:, -1].float())
        sa.key.weight.copy_(wk[:, :-1].float())
        # the key bias only adds q . b_k, the same for every key of a query: softmax ignores it, its
        # gradient is rounding noise, and LAMB's trust ratio would blow that noise up to steps of
        # lr x ||b_k||; it stays at zero
        sa.key.bias.zero_()
        info["head_rank_share"] = round(sum(kept) / len(kept), 4)
    q1 = _heads_of(s_in @ sa.query.weight.double().t() + sa.query.bias.double(), n)
    k1 = _heads_of(s_in @ sa.key.weight.double().t() + sa.key.bias.double(), n)
    info.update(score_std_before=before, score_std_after=float(torch.einsum("tnd,tnd->tn", q1, k1[perm]).std() * ds ** -0.5),
                teacher_q_std=float(yq.std()))
    return info
