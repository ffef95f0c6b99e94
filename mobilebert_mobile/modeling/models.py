"""The MobileBERT model family: backbone and task models, with transformers-layout checkpoints."""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from ..config import MobileBertConfig
from .block import MobileBertEncoder
from .checkpoint import CheckpointError, match_state_dict, read_state_dict, write_safetensors, WEIGHTS_NAME
from .embeddings import MobileBertEmbeddings
from .heads import MobileBertOnlyMLMHead, MobileBertPooler, MobileBertPreTrainingHeads, mean_pool
from .layers import NoNorm

log = logging.getLogger(__name__)


@dataclass
class ModelOutput:
    """What every model returns; fields a model does not produce stay None.

    ``hidden_states``: embedding output then every block's output (L + 1 tensors [B, S, H]);
    ``attentions``: per block, softmax probabilities [B, N, S, S];
    ``attention_scores``: per block, the masked pre-softmax scores (for attention transfer).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def attention_mask_bias(attention_mask: torch.Tensor | None, fill: float | None, dtype: torch.dtype):
    """[B, S] of 1 (token) / 0 (padding) -> additive bias [B, 1, 1, S]: 0 or ``fill``.

    Computed once per forward and shared by every block. ``fill=None`` uses the dtype's minimum
    (transformers' choice); int8 models need a small value such as -100.
    """
    if attention_mask is None:
        return None
    value = torch.finfo(dtype).min if fill is None else float(fill)
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * value


def _check_inputs(input_ids: torch.Tensor, vocab_size: int, *others: torch.Tensor | None) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be 2-D [batch, seq], got shape {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point:
        raise TypeError(f"input_ids must be integers, got {input_ids.dtype}")
    for t in others:
        if t is not None and tuple(t.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask/token_type_ids shape {tuple(t.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}")
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    if not tracing and input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}); got min {int(input_ids.min())}, "
                         f"max {int(input_ids.max())}")


class MobileBertPreTrainedModel(nn.Module):
    """Weight initialisation, parameter counts and transformers-layout load/save."""

    base_model_prefix = "mobilebert"
    is_base_model = False

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        if not isinstance(config, MobileBertConfig):
            raise TypeError(f"config must be a MobileBertConfig, got {type(config).__name__}")
        config.validate()
        self.config = config

    # ------------------------------------------------------------------ init
    def _init_module(self, m: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, (nn.LayerNorm, NoNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        self.apply(self._init_module)
        for m in self.modules():
            if hasattr(m, "predictions"):
                nn.init.zeros_(m.predictions.bias)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Tie the MLM decoder to the word embeddings (when the config says so)."""
        head = getattr(getattr(self, "cls", None), "predictions", None)
        if head is not None and self.config.tie_word_embeddings:
            head.decoder.weight = self.mobilebert.embeddings.word_embeddings.weight

    # ------------------------------------------------------------- counting
    def num_parameters(self, *, backbone_only: bool = False) -> int:
        module = self.mobilebert if (backbone_only and not self.is_base_model) else self
        seen, n = set(), 0
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    # ------------------------------------------------------------ save/load
    def _tied_aliases(self) -> set[str]:
        """State-dict keys that alias another tensor and are not written (as transformers does)."""
        aliases = set()
        if getattr(self, "cls", None) is not None:
            aliases.add("cls.predictions.decoder.bias")
            if self.config.tie_word_embeddings:
                aliases.add("cls.predictions.decoder.weight")
        return aliases

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
        d = os.fspath(directory)
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise PermissionError(f"checkpoint directory is not writable: {d}")
        aliases = self._tied_aliases()
        tensors = {k: v for k, v in self.state_dict().items() if k not in aliases}
        write_safetensors(os.path.join(d, WEIGHTS_NAME), tensors)
        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]
        config.to_json(os.path.join(d, "config.json"))

    def load_checkpoint_tensors(self, found: dict[str, torch.Tensor], *, strict: bool = True,
                                where: str = "<state dict>") -> dict[str, list[str]]:
        aliases = self._tied_aliases()
        expected = {k: v.shape for k, v in self.state_dict().items() if k not in aliases}
        load, missing, unused = match_state_dict(expected, found, prefix=self.base_model_prefix,
                                                 is_base_model=self.is_base_model, strict=strict, where=where)
        with torch.no_grad():
            own = self.state_dict(keep_vars=True)
            for k, v in load.items():
                own[k].copy_(v.to(own[k].dtype))
        self.tie_weights()
        if missing:
            log.warning("initialised, not loaded: %s", ", ".join(missing))
        return {"missing": missing, "unused": unused}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, strict: bool = True, **config_overrides):
        """Build from a transformers-layout checkpoint directory.

        ``config_overrides`` replace config fields (e.g. ``attention_mask_value=-100``).
        """
        d = os.fspath(directory)
        if not os.path.isdir(d):
            raise CheckpointError(f"checkpoint directory not found: {d}")
        if not os.path.isfile(os.path.join(d, "config.json")):
            raise CheckpointError(f"no config.json in {d}")
        config = MobileBertConfig.from_json(d)
        if config_overrides:
            values = config.to_dict()
            values.update(config_overrides)
            config = MobileBertConfig.from_dict(values)
        model = cls(config)
        tensors = read_state_dict(d)
        model.load_checkpoint_tensors(tensors, strict=strict, where=d)
        return model.eval()


class MobileBertModel(MobileBertPreTrainedModel):
    """The encoder: embeddings -> L blocks (-> first-token pooler)."""

    is_base_model = True

    def __init__(self, config: MobileBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MobileBertEmbeddings(config)
        self.encoder = MobileBertEncoder(config)
        self.pooler = MobileBertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
                output_hidden_states: bool = False, output_attentions: bool = False,
                output_attention_scores: bool = False) -> ModelOutput:
        _check_inputs(input_ids, self.config.vocab_size, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # [B, S, H]
        bias = attention_mask_bias(attention_mask, self.config.attention_mask_value, x.dtype)
        collect = output_hidden_states or output_attentions or output_attention_scores
        h, hidden, scores, probs = self.encoder(x, bias, collect=collect)
        return ModelOutput(
            last_hidden_state=h,
            pooler_output=self.pooler(h) if self.pooler is not None else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(probs) if output_attentions else None,
            attention_scores=tuple(scores) if output_attention_scores else None,
        )


def _backbone_kwargs(kwargs: dict) -> dict:
    keys = ("output_hidden_states", "output_attentions", "output_attention_scores", "position_ids")
    return {k: kwargs[k] for k in keys if k in kwargs}


class MobileBertForPreTraining(MobileBertPreTrainedModel):
    """MLM (widened output embedding) + next-sentence prediction."""

    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=True)
        self.cls = MobileBertPreTrainingHeads(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, labels=None,
                next_sentence_label=None, **kwargs) -> ModelOutput:
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, **_backbone_kwargs(kwargs))
        out.logits, out.seq_relationship_logits = self.cls(out.last_hidden_state, out.pooler_output)
        if labels is not None and next_sentence_label is not None:
            mlm = F.cross_entropy(out.logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
            nsp = F.cross_entropy(out.seq_relationship_logits.reshape(-1, 2), next_sentence_label.reshape(-1))
            out.loss = mlm + nsp
        return out


class MobileBertForMaskedLM(MobileBertPreTrainedModel):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.cls = MobileBertOnlyMLMHead(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, labels=None, **kwargs):
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, **_backbone_kwargs(kwargs))
        out.logits = self.cls(out.last_hidden_state)  # [B, S, V]
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
        return out


class MobileBertForSequenceClassification(MobileBertPreTrainedModel):
    """Pooled first token -> dropout -> Linear(H, num_labels)."""

    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, labels=None, **kwargs):
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, **_backbone_kwargs(kwargs))
        out.logits = self.classifier(self.dropout(out.pooler_output))  # [B, num_labels]
        if labels is not None:
            if self.num_labels == 1:
                out.loss = F.mse_loss(out.logits.squeeze(-1), labels.float())
            else:
                out.loss = F.cross_entropy(out.logits, labels.long())
        return out


class MobileBertForTokenClassification(MobileBertPreTrainedModel):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, labels=None, **kwargs):
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, **_backbone_kwargs(kwargs))
        out.logits = self.classifier(self.dropout(out.last_hidden_state))  # [B, S, num_labels]
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return out


class MobileBertForQuestionAnswering(MobileBertPreTrainedModel):
    """Span extraction: Linear(H, 2) -> start and end logits per token."""

    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, start_positions=None,
                end_positions=None, **kwargs):
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, **_backbone_kwargs(kwargs))
        start, end = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)
        out.start_logits, out.end_logits = start.squeeze(-1), end.squeeze(-1)  # [B, S] each
        if start_positions is not None and end_positions is not None:
            s = out.start_logits.size(1)
            sp, ep = start_positions.clamp(0, s), end_positions.clamp(0, s)
            out.loss = (F.cross_entropy(out.start_logits, sp, ignore_index=s)
                        + F.cross_entropy(out.end_logits, ep, ignore_index=s)) / 2
        return out


class MobileBertForSentenceEmbedding(MobileBertPreTrainedModel):
    """Sentence embeddings: mean of token states over the mask (or the first token), optionally L2-normalised.

    Checkpoint layout is the backbone's (``mobilebert.*``); the pooling mode is the config's
    extra field ``sentence_pooling`` ("mean" default, or "cls").
    """

    def __init__(self, config: MobileBertConfig, pooling: str | None = None, normalize: bool | None = None):
        super().__init__(config)
        self.pooling = pooling or config.extra.get("sentence_pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"unknown pooling {self.pooling!r}; expected 'mean' or 'cls'")
        self.normalize = bool(config.extra.get("sentence_normalize", False) if normalize is None else normalize)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        out = self.mobilebert(input_ids, attention_mask, token_type_ids, **_backbone_kwargs(kwargs))
        h = out.last_hidden_state
        e = mean_pool(h, attention_mask) if self.pooling == "mean" else h[:, 0]
        out.embedding = F.normalize(e, dim=-1) if self.normalize else e  # [B, H]
        return out

    def save_pretrained(self, directory):
        self.config.extra["sentence_pooling"] = self.pooling
        self.config.extra["sentence_normalize"] = self.normalize
        super().save_pretrained(directory)


TASK_MODELS = {
    "base": MobileBertModel,
    "pretraining": MobileBertForPreTraining,
    "mlm": MobileBertForMaskedLM,
    "classification": MobileBertForSequenceClassification,
    "token-classification": MobileBertForTokenClassification,
    "qa": MobileBertForQuestionAnswering,
    "embedding": MobileBertForSentenceEmbedding,
}

ARCHITECTURES = {cls.__name__: cls for cls in TASK_MODELS.values()}


def model_class_for(directory: str | os.PathLike):
    """The model class a checkpoint's ``config.json`` names in ``architectures``."""
    config = MobileBertConfig.from_json(directory)
    for name in config.architectures or []:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise CheckpointError(f"{directory}: config.json names no known architecture ({config.architectures}); "
                          f"known: {', '.join(ARCHITECTURES)}")
