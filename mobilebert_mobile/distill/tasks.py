"""What is trained and with which losses: layer-wise / pre-training distillation, and fine-tuning
(with optional task distillation from a fine-tuned teacher). Used by trainer.train."""
from __future__ import annotations

import torch
from torch import nn

from ..modeling import attention_mask_bias
from . import losses as L
from .data import mask_tokens, sentence_order, step_generator
from .strategies import Stage, lr_scale_fn, plan
from .teachers import QK_INITS, DistillError, FeatureMapping, Teacher, check_pair, init_qk


def encode(backbone, batch: dict, upto: int | None = None):
    """Embeddings + the first ``upto`` blocks: (hidden states incl. the embedding output, masked scores)."""
    mask = batch["attention_mask"]
    h = backbone.embeddings(batch["input_ids"], batch["token_type_ids"])  # [B, S, H]
    bias = attention_mask_bias(mask, backbone.config.attention_mask_value, h.dtype)
    hidden, scores = [h], []
    layers = backbone.encoder.layer if upto is None else backbone.encoder.layer[:upto]
    for layer in layers:
        h, s, _ = layer(h, bias)
        hidden.append(h)
        scores.append(s)
    return hidden, scores


def _masked_rows(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return h[labels != -100]  # [M, H]


class DistillModule(nn.Module):
    def __init__(self, student, mapping: FeatureMapping | None, pair: dict, weights: dict, teacher_has_mlm: bool,
                 sop: bool):
        super().__init__()
        self.student = student
        self.mapping = mapping
        self.pair, self.w, self.teacher_has_mlm, self.sop = pair, weights, teacher_has_mlm, sop

    def _proj(self, i: int, h):
        return self.mapping(i, h) if self.mapping is not None else h

    def forward(self, batch, t_out, denoms, stage: Stage):
        nl = self.student.config.num_hidden_layers
        upto = None if stage.pretrain else stage.run_layers
        hidden, scores = encode(self.student.mobilebert, batch, upto)
        mask = batch["attention_mask"]
        out = {}
        zero = hidden[0].new_zeros(())
        fm, at, mv = zero, zero, zero
        t_hidden, t_scores = t_out["hidden"], t_out["scores"]
        if stage.embedding_loss:
            fm = fm + L.feature_map_loss(self._proj(0, hidden[0]), t_hidden[0], mask, denom=denoms["tokens"])
        for l in stage.layers:
            tl = self.pair["layer_map"][l]
            sh = self._proj(l + 1, hidden[l + 1])
            fm = fm + L.feature_map_loss(sh, t_hidden[tl + 1], mask, denom=denoms["tokens"])
            if self.pair["attention"] and self.w["at"]:
                at = at + L.attention_transfer_loss(scores[l], t_scores[tl], mask, denom=denoms["tokens"])
            if self.w["mv"]:
                mv = mv + L.mean_variance_loss(sh, t_hidden[tl + 1], mask, denom=denoms["tokens"])
        for l in stage.attention_layers:  # attention only (kept on through pre-training distillation)
            if l not in stage.layers and self.pair["attention"] and self.w["at"]:
                at = at + L.attention_transfer_loss(scores[l], t_scores[self.pair["layer_map"][l]], mask,
                                                    denom=denoms["tokens"])
        total = zero
        if stage.layers or stage.embedding_loss:
            out["feature_map"] = fm * self.w["fm"] / nl
            total = total + out["feature_map"]
            if self.w["mv"]:
                out["mean_var"] = mv * self.w["mv"] / nl
                total = total + out["mean_var"]
        if stage.layers or stage.embedding_loss or stage.attention_layers:
            out["attention"] = at * self.w["at"] / nl
            total = total + out["attention"]
        if stage.pretrain:
            cls = self.student.cls
            last = hidden[-1]
            s_logits = cls.predictions(_masked_rows(last, batch["labels"]))  # [M, V]
            sel = batch["labels"][batch["labels"] != -100]
            out["mlm"] = L.mlm_distillation_loss(s_logits, sel, t_out.get("mlm_logits"), alpha=self.w["alpha"],
                                                 denom=denoms["masked"])
            total = total + out["mlm"]
            if self.sop:
                out["sentence_order"] = L.sentence_pair_loss(cls.seq_relationship(last[:, 0]),
                                                             batch["next_sentence_label"], denom=denoms["rows"])
                total = total + out["sentence_order"]
            if not self.teacher_has_mlm:
                # a teacher without an MLM head still teaches through its last hidden state
                tl = self.pair["layer_map"][-1]
                out["output_feature_map"] = L.feature_map_loss(self._proj(nl, last), t_hidden[tl + 1], mask,
                                                               denom=denoms["tokens"]) * self.w["fm"] / nl
                total = total + out["output_feature_map"]
        out["loss"] = total
        return out


class DistillTask:
    """Layer-wise transfer + pre-training distillation of a MobileBertForPreTraining student."""

    def __init__(self, teacher: Teacher, student, *, strategy: str, steps: int, fm_weight: float = 100.0,
                 at_weight: float = 1.0, mv_weight: float = 0.0, alpha: float = 0.5, sop: bool = False,
                 mapping: bool = False, lower: str = "freeze", lower_rate: float = 0.1, current_rate: float = 1.0,
                 freeze_embeddings: bool = False, mlm_prob: float = 0.15, seed: int = 0, qk_init: str = "teacher",
                 qk_ridge: float = 1e-3, keep_attention: bool = True, calibration: dict | None = None,
                 special_ids: tuple[int, ...] = (0, 101, 102), mask_id: int = 103, sep_id: int = 102):
        if qk_init not in QK_INITS:
            raise DistillError(f"unknown Q/K initialisation {qk_init!r}; choose one of {', '.join(QK_INITS)}")
        self.teacher = teacher
        self.pair = check_pair(teacher.config, student.config, mapping=mapping)
        nl = student.config.num_hidden_layers
        fmap = None
        if self.pair["project"]:
            fmap = FeatureMapping(student.config.hidden_size, teacher.config.hidden_size, nl + 1)
        self.module = DistillModule(student, fmap, self.pair,
                                    {"fm": fm_weight, "at": at_weight, "mv": mv_weight, "alpha": alpha},
                                    teacher.has_mlm, sop)
        self.stages = plan(strategy, steps, nl, keep_attention=keep_attention)
        self.opts = dict(strategy=strategy, steps=steps, fm=fm_weight, at=at_weight, mv=mv_weight, alpha=alpha,
                         sop=sop, mapping=mapping, lower=lower, lower_rate=lower_rate, current_rate=current_rate,
                         freeze_embeddings=freeze_embeddings, mlm_prob=mlm_prob, seed=seed, qk_init=qk_init,
                         qk_ridge=qk_ridge, keep_attention=keep_attention)
        self.calibration = calibration  # unmasked [B, S] inputs for the Q/K initialisation
        self.qk_log: list[dict] = []
        self.special_ids, self.mask_id, self.sep_id, self.seed = special_ids, mask_id, sep_id, seed

    def describe(self) -> dict:
        return {**self.opts, "student": self.module.student.config.to_dict(), "teacher": self.teacher.source}

    def lr_scale(self, stage: Stage):
        o = self.opts
        return lr_scale_fn(stage, lower=o["lower"], lower_rate=o["lower_rate"], current_rate=o["current_rate"],
                           freeze_embeddings=o["freeze_embeddings"])

    def begin_stage(self, stage: Stage, first_step: int = 0) -> None:
        """At the start of a layer-wise stage, initialise the Q/K of the layers it trains from the teacher
        (``qk_init``, see teachers.init_qk), on the student's current inputs of those layers: progressive
        stages do their own layer once its inputs are trained; auxiliary and joint do every layer, in order."""
        if (first_step or self.opts["qk_init"] == "random" or not self.pair["attention"] or not stage.layers
                or self.calibration is None or self.pair["project"]):
            return
        student, tenc = self.module.student.mobilebert, self.teacher.encoder()
        b = self.calibration
        mask = b["attention_mask"]
        lm = self.pair["layer_map"]
        with torch.no_grad():
            hs = student.embeddings(b["input_ids"], b["token_type_ids"])
            ht = tenc.embeddings(b["input_ids"], b["token_type_ids"])
            bs = attention_mask_bias(mask, student.config.attention_mask_value, hs.dtype)
            bt = attention_mask_bias(mask, tenc.config.attention_mask_value, ht.dtype)
            t_hidden = [ht]
            for layer in tenc.encoder.layer[:max(lm[l] for l in stage.layers) + 1]:
                t_hidden.append(layer(t_hidden[-1], bt)[0])
            for l in range(max(stage.layers) + 1):
                layer = student.encoder.layer[l]
                if l in stage.layers:
                    info = init_qk(layer, tenc.encoder.layer[lm[l]], hs, t_hidden[lm[l]], mask, self.opts["qk_init"],
                                   ridge=self.opts["qk_ridge"])
                    self.qk_log.append({"stage": stage.name, "layer": l, **info})
                hs = layer(hs, bs)[0]

    def prepare(self, batch: dict, step: int) -> dict:
        g = step_generator(self.seed, step)
        if self.opts["sop"]:
            batch = sentence_order(batch, g, sep_id=self.sep_id)
        return mask_tokens(batch, g, vocab_size=self.module.student.config.vocab_size, mask_id=self.mask_id,
                           special_ids=self.special_ids, prob=self.opts["mlm_prob"])

    @staticmethod
    def counts(batch: dict) -> dict:
        return {"tokens": float(batch["attention_mask"].sum()), "masked": float((batch["labels"] != -100).sum()),
                "rows": float(batch["input_ids"].shape[0])}

    @torch.no_grad()
    def teacher_outputs(self, batch: dict, stage: Stage) -> dict:
        lm = self.pair["layer_map"]
        need = [lm[l] + 1 for l in set(stage.layers) | set(stage.attention_layers)]
        if stage.pretrain:
            need.append(self.teacher.config.num_hidden_layers)
        upto = max(need) if need else 0
        hidden, scores = encode(self.teacher.encoder(), batch, upto)
        out = {"hidden": hidden, "scores": scores}
        if stage.pretrain and self.teacher.has_mlm and len(hidden) == self.teacher.config.num_hidden_layers + 1:
            out["mlm_logits"] = self.teacher.model.cls.predictions(_masked_rows(hidden[-1], batch["labels"]))
        return out


# ----------------------------------------------------------------------------- fine-tuning
class FinetuneModule(nn.Module):
    def __init__(self, model, task: str, alpha: float, temperature: float):
        super().__init__()
        self.model, self.task, self.alpha, self.temperature = model, task, alpha, temperature

    def forward(self, batch, t_out, denoms, stage):
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        if self.task == "classification":
            loss = L.task_distillation_loss(out.logits, batch["labels"], t_out.get("logits"), alpha=self.alpha,
                                            temperature=self.temperature, denom=denoms["rows"])
        else:
            loss = 0.5 * (
                L.task_distillation_loss(out.start_logits, batch["start_positions"], t_out.get("start_logits"),
                                         alpha=self.alpha, temperature=self.temperature, denom=denoms["rows"])
                + L.task_distillation_loss(out.end_logits, batch["end_positions"], t_out.get("end_logits"),
                                           alpha=self.alpha, temperature=self.temperature, denom=denoms["rows"]))
        return {"loss": loss}


class FinetuneTask:
    def __init__(self, model, task: str, steps: int, *, teacher=None, alpha: float = 0.5, temperature: float = 2.0):
        if task not in ("classification", "qa"):
            raise ValueError(f"fine-tuning supports classification and qa, not {task!r}")
        self.module = FinetuneModule(model, task, alpha, temperature)
        self.teacher = teacher.eval() if teacher is not None else None
        self.stages = [Stage("fine-tune", steps, pretrain=True)]
        self.task = task
        self.opts = dict(task=task, steps=steps, alpha=alpha, temperature=temperature, teacher=teacher is not None)

    def describe(self) -> dict:
        return {**self.opts, "model": self.module.model.config.to_dict()}

    def lr_scale(self, stage):
        return lambda name: 1.0

    def begin_stage(self, stage, first_step: int = 0) -> None:
        pass

    def prepare(self, batch, step):
        return batch

    @staticmethod
    def counts(batch):
        return {"rows": float(batch["input_ids"].shape[0])}

    @torch.no_grad()
    def teacher_outputs(self, batch, stage) -> dict:
        if "teacher_logits" in batch:  # precomputed once for the whole training set
            return {"logits": batch["teacher_logits"]}
        if self.teacher is None:
            return {}
        out = self.teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        if self.task == "classification":
            return {"logits": out.logits}
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
