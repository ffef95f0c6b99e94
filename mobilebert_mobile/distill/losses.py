"""Distillation losses, each a small function of tensors (MobileBERT paper, section 3.2-3.4).

Padding. Every loss averages over *real* tokens only: positions where ``attention_mask`` is 0
are left out of the feature-map and mean/variance terms, padded *queries* are left out of the
attention term (padded *keys* already carry ~0 probability through the additive mask), and MLM
terms use only the masked positions (labels != -100). Without this, short sentences padded to
128 tokens would spend most of the loss on matching the teacher's padding states.

Reduction. Each loss is ``sum / denominator``; the denominator is the local count unless
``denom`` is given. A data-parallel trainer passes ``global_count / world_size`` so that the
averaged gradient equals the one of a single process on the whole global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _token_weights(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, S] float weights (1 for real tokens)."""
    if attention_mask is None:
        return x.new_ones(x.shape[:2])
    return attention_mask.to(x.dtype)


def _reduce(total: torch.Tensor, count: torch.Tensor | float, denom: float | torch.Tensor | None) -> torch.Tensor:
    d = count if denom is None else denom
    if isinstance(d, torch.Tensor):
        d = d.clamp(min=1e-12)
    else:
        d = max(float(d), 1e-12)
    return total / d


def feature_map_loss(student_h: torch.Tensor, teacher_h: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     *, denom=None) -> torch.Tensor:
    """MSE between parameter-free LayerNorms of the block outputs, [B, S, H] each.

    Mean over real tokens and features: sum((LN(s) - LN(t))^2) / (tokens * H).
    """
    if student_h.shape != teacher_h.shape:
        raise ValueError(f"feature-map transfer needs equal shapes: student {tuple(student_h.shape)} vs "
                         f"teacher {tuple(teacher_h.shape)} (use a linear mapping for different widths)")
    h = student_h.shape[-1]
    s = F.layer_norm(student_h, (h,))
    t = F.layer_norm(teacher_h.detach(), (h,))
    w = _token_weights(student_h, attention_mask)  # [B, S]
    total = ((s - t) ** 2).sum(-1).mul(w).sum() / h
    return _reduce(total, w.sum(), denom)


def attention_transfer_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                            attention_mask: torch.Tensor | None = None, *, denom=None) -> torch.Tensor:
    """KL(teacher || student) over keys, per head and query, averaged over heads and real queries.

    Inputs are the masked pre-softmax scores [B, N, S, S] (padded keys already hold the mask
    value, so their probability is ~0 in both). ``denom`` counts real queries (not x heads).
    """
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"attention transfer needs equal shapes [B, heads, S, S]: student "
                         f"{tuple(student_scores.shape)} vs teacher {tuple(teacher_scores.shape)}")
    heads = student_scores.shape[1]
    log_s = F.log_softmax(student_scores.float(), dim=-1)
    log_t = F.log_softmax(teacher_scores.detach().float(), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # [B, N, S]: one KL per head and query
    w = _token_weights(student_scores[:, 0, :, 0], attention_mask)  # [B, S] queries
    total = (kl * w[:, None, :]).sum() / heads
    return _reduce(total, w.sum(), denom)


def mean_variance_loss(student_h: torch.Tensor, teacher_h: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       *, denom=None) -> torch.Tensor:
    """Match each token's feature mean and variance of the *same* layer (the original code compared
    every student layer with every teacher layer through a wrong index; this compares layer l with
    layer l only). Sum of |mean diff| + |var diff| per token, averaged over real tokens."""
    if student_h.shape != teacher_h.shape:
        raise ValueError(f"mean/variance matching needs equal shapes: {tuple(student_h.shape)} vs "
                         f"{tuple(teacher_h.shape)}")
    t = teacher_h.detach()
    dm = (student_h.mean(-1) - t.mean(-1)).abs()
    dv = (student_h.var(-1, unbiased=False) - t.var(-1, unbiased=False)).abs()
    w = _token_weights(student_h, attention_mask)
    return _reduce(((dm + dv) * w).sum(), w.sum(), denom)


def mlm_distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                          teacher_logits: torch.Tensor | None = None, *, alpha: float = 0.5,
                          temperature: float = 1.0, denom=None) -> torch.Tensor:
    """Cross-entropy of the student's MLM distribution against
    ``alpha * one_hot(label) + (1 - alpha) * softmax(teacher / T)`` at masked positions.

    ``student_logits``/``teacher_logits``: [..., V]; ``labels``: [...] with -100 where not masked.
    With no teacher (a teacher without an MLM head), the target is the one-hot label (alpha = 1).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    v = student_logits.shape[-1]
    sl = student_logits.reshape(-1, v)
    y = labels.reshape(-1)
    keep = y != -100
    sl = sl[keep]
    log_p = F.log_softmax(sl.float() / temperature, dim=-1)
    hard = -log_p.gather(1, y[keep].unsqueeze(1)).squeeze(1)  # [M]
    if teacher_logits is None or alpha == 1.0:
        total = hard.sum()
    else:
        tl = teacher_logits.reshape(-1, v)[keep].detach().float()
        soft = -(F.softmax(tl / temperature, dim=-1) * log_p).sum(-1)
        total = (alpha * hard + (1.0 - alpha) * soft).sum()
    return _reduce(total, keep.sum(), denom)


def sentence_pair_loss(logits: torch.Tensor, labels: torch.Tensor, *, denom=None) -> torch.Tensor:
    """NSP / sentence-order cross-entropy on the true labels, [B, 2] and [B]."""
    total = F.cross_entropy(logits.float(), labels.long(), reduction="sum")
    return _reduce(total, labels.numel(), denom)


def task_distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor | None = None,
                           teacher_logits: torch.Tensor | None = None, *, alpha: float = 0.5,
                           temperature: float = 2.0, denom=None) -> torch.Tensor:
    """Fine-tuning loss: ``alpha * CE(labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``.

    [B, C] logits. No teacher: plain cross-entropy. No labels: pure distillation (alpha ignored).
    """
    if labels is None and teacher_logits is None:
        raise ValueError("task distillation needs labels, teacher logits or both")
    n = student_logits.shape[0]
    parts = []
    if labels is not None:
        ce = F.cross_entropy(student_logits.float(), labels.long(), reduction="sum")
        parts.append((1.0 if teacher_logits is None else alpha) * ce)
    if teacher_logits is not None:
        t = temperature
        log_s = F.log_softmax(student_logits.float() / t, dim=-1)
        log_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
        kl = (log_t.exp() * (log_t - log_s)).sum()
        parts.append((1.0 if labels is None else 1.0 - alpha) * t * t * kl)
    return _reduce(sum(parts), n, denom)
