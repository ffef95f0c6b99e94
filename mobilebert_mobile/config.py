"""MobileBERT configuration: named presets, validation, and the transformers ``config.json`` format.

Pure Python (no torch): the runtime reads configs too.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ._io import atomic_write_text
from .errors import ConfigError  # noqa: F401  (re-exported: defined in errors.py)

ACTIVATIONS = ("relu", "relu6", "gelu", "gelu_new", "gelu_pytorch_tanh", "tanh", "silu")
NORMALIZATIONS = ("no_norm", "layer_norm")


@dataclass
class MobileBertConfig:
    """Hyper-parameters of a MobileBERT-family encoder.

    Field names and defaults follow transformers' ``MobileBertConfig`` so a ``config.json``
    moves between this SDK and transformers unchanged. Extra fields of ours
    (``attention_mask_value``) are stored alongside and ignored by transformers.
    """

    vocab_size: int = 30522
    hidden_size: int = 512  # inter-block width
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512  # FFN width
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    embedding_size: int = 128
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128  # intra-block width (bottleneck, or inverted bottleneck)
    use_bottleneck_attention: bool = False  # Q, K, V all from the input bottleneck (tiny)
    key_query_shared_bottleneck: bool = True  # Q, K from a shared attention bottleneck
    num_feedforward_networks: int = 4  # stacked FFNs per block
    normalization_type: str = "no_norm"
    # transformers' default is True; the released checkpoints (and our presets) say False.
    classifier_activation: bool = True
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    # Added to masked attention scores. None = the dtype's minimum (what transformers does);
    # int8 models need a small value such as -100 (see the converters).
    attention_mask_value: float | None = None
    # Standard BERT applies layer_norm_eps to every norm; transformers' MobileBERT leaves the
    # embedding norm and the last FFN's norm at torch's default (1e-5). True = the BERT way.
    uniform_layer_norm_eps: bool = False
    # Task metadata (transformers names).
    id2label: dict[int, str] | None = None
    architectures: list[str] | None = None
    # Anything else found in a config.json, kept so a round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- derived
    @property
    def true_hidden_size(self) -> int:
        """Width inside a block: the bottleneck size, or the block width without bottleneck."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def attention_head_size(self) -> int:
        return self.true_hidden_size // self.num_attention_heads

    @property
    def query_key_input_size(self) -> int:
        """Width of the tensor Q and K are computed from.

        From a bottleneck (shared or input) it is the intra size; otherwise the block input.
        transformers always assumes the intra size, which is why it cannot build IB-BERT.
        """
        if not self.use_bottleneck or self.use_bottleneck_attention or self.key_query_shared_bottleneck:
            return self.true_hidden_size
        return self.hidden_size

    @property
    def value_input_size(self) -> int:
        return self.true_hidden_size if self.use_bottleneck_attention else self.hidden_size

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def label_names(self) -> list[str]:
        if not self.id2label:
            return [f"LABEL_{i}" for i in range(2)]
        return [self.id2label[i] for i in range(len(self.id2label))]

    @property
    def transformers_compatible(self) -> bool:
        """Whether transformers' MobileBERT can build this config (it cannot build IB-BERT)."""
        return self.query_key_input_size == self.true_hidden_size

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                     "embedding_size", "intra_bottleneck_size", "num_feedforward_networks"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v > 0,
                 f"{name} must be a positive integer, got {v!r}")
        need(self.hidden_act in ACTIVATIONS,
             f"unknown activation hidden_act={self.hidden_act!r}; expected one of {', '.join(ACTIVATIONS)}")
        need(self.normalization_type in NORMALIZATIONS,
             f"unknown normalization_type={self.normalization_type!r}; expected one of {', '.join(NORMALIZATIONS)}")
        need(self.true_hidden_size % self.num_attention_heads == 0,
             f"the attention width ({'intra_bottleneck_size' if self.use_bottleneck else 'hidden_size'}="
             f"{self.true_hidden_size}) is not divisible by num_attention_heads={self.num_attention_heads}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            need(isinstance(p, (int, float)) and 0.0 <= p < 1.0, f"{name} must be in [0, 1), got {p!r}")
        if self.classifier_dropout is not None:
            need(0.0 <= self.classifier_dropout < 1.0,
                 f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        need(0 <= self.pad_token_id < self.vocab_size,
             f"pad_token_id={self.pad_token_id} is outside the vocabulary (vocab_size={self.vocab_size})")
        need(self.hidden_size >= self.embedding_size,
             f"embedding_size={self.embedding_size} is larger than hidden_size={self.hidden_size}: the "
             f"trigram projection and the widened MLM output embedding need embedding_size <= hidden_size")
        if self.use_bottleneck_attention:
            need(self.use_bottleneck, "use_bottleneck_attention=True needs use_bottleneck=True")
        if self.key_query_shared_bottleneck and self.use_bottleneck_attention:
            # transformers ignores the shared bottleneck then; keep it simple and explicit.
            raise ConfigError("use_bottleneck_attention and key_query_shared_bottleneck are exclusive: "
                              "choose where Q and K come from")
        if self.key_query_shared_bottleneck:
            need(self.use_bottleneck, "key_query_shared_bottleneck=True needs use_bottleneck=True")
        if self.attention_mask_value is not None:
            need(isinstance(self.attention_mask_value, (int, float)) and self.attention_mask_value < 0,
                 f"attention_mask_value must be a negative number, got {self.attention_mask_value!r}")
        need(self.architectures is None or (isinstance(self.architectures, list)
                                            and all(isinstance(a, str) for a in self.architectures)),
             f"architectures must be a list of class names, got {self.architectures!r}")
        if self.id2label is not None:
            keys = sorted(self.id2label)
            need(keys == list(range(len(keys))),
                 f"id2label keys must be 0..N-1, got {keys}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MobileBertConfig":
        """Build a named preset; keyword overrides replace single fields."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
        values = dict(classifier_activation=False)
        values.update(PRESETS[name])
        unknown = set(overrides) - _FIELD_NAMES
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        return cls(**values)

    # --------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name == "id2label":
                if v is None:
                    continue
                d["id2label"] = {str(k): lab for k, lab in v.items()}
                d["label2id"] = {lab: k for k, lab in v.items()}
                continue
            if f.name in ("architectures", "attention_mask_value") and v is None:
                continue
            if f.name == "uniform_layer_norm_eps" and not v:
                continue
            d[f.name] = copy.deepcopy(v)
        d["model_type"] = "mobilebert"
        d["true_hidden_size"] = self.true_hidden_size  # transformers writes it; derived here
        for k, v in self.extra.items():
            d.setdefault(k, copy.deepcopy(v))
        return dict(sorted(d.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` (atomically)."""
        atomic_write_text(path, self.to_json_string())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MobileBertConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        model_type = d.pop("model_type", "mobilebert")
        if model_type != "mobilebert":
            raise ConfigError(f"config.json has model_type={model_type!r}; expected 'mobilebert' "
                              f"(BERT-family checkpoints are converted by the converters, not loaded here)")
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        d.pop("label2id", None)
        for k, v in d.items():
            if k in _FIELD_NAMES and k != "extra":
                kwargs[k] = v
            else:
                extra[k] = v
        if kwargs.get("id2label") is not None:
            try:
                kwargs["id2label"] = {int(k): str(v) for k, v in kwargs["id2label"].items()}
            except (ValueError, AttributeError) as e:
                raise ConfigError(f"id2label must map integer ids to names: {e}") from None
        # transformers writes num_labels implicitly through id2label only.
        extra.pop("num_labels", None)
        extra.pop("true_hidden_size", None)  # derived from use_bottleneck / intra_bottleneck_size
        # transformers 5 writes some keys we do not model; keep them for the round trip.
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> "MobileBertConfig":
        """Read a ``config.json`` path (or a directory holding one, or a JSON string)."""
        text: str
        p = os.fspath(path_or_text)
        if p.lstrip().startswith("{"):
            text = p
            where = "<string>"
        else:
            if os.path.isdir(p):
                p = os.path.join(p, "config.json")
            if not os.path.isfile(p):
                raise FileNotFoundError(f"no config.json at {p}")
            with open(p, "rb") as fh:
                raw = fh.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{p} is not UTF-8 text") from None
            where = p
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None

    def with_labels(self, labels: list[str]) -> "MobileBertConfig":
        c = copy.deepcopy(self)
        c.id2label = {i: str(lab) for i, lab in enumerate(labels)}
        c.validate()
        return c


_FIELD_NAMES = {f.name for f in dataclasses.fields(MobileBertConfig)}

PRESETS: dict[str, dict[str, Any]] = {
    # The released student: 24 x (512 wide, 128 bottleneck, 4 heads, 4 stacked FFNs), NoNorm + ReLU.
    "mobilebert": dict(classifier_activation=False),
    # MobileBERT-tiny: Q, K, V all from the input bottleneck, 2 stacked FFNs.
    "mobilebert-tiny": dict(use_bottleneck_attention=True, key_query_shared_bottleneck=False,
                            num_feedforward_networks=2),
    # MobileBERT without the operational optimisations: GELU and LayerNorm.
    "mobilebert-no-opt": dict(hidden_act="gelu", normalization_type="layer_norm"),
    # The quantization-aware-training variant: ReLU6.
    "mobilebert-relu6": dict(hidden_act="relu6"),
    # IB-BERT-large teacher: inverted bottleneck 512 -> 1024, 4 heads of 256, one 4096 FFN.
    "ib-bert-teacher": dict(intra_bottleneck_size=1024, intermediate_size=4096, num_feedforward_networks=1,
                            key_query_shared_bottleneck=False, hidden_act="gelu",
                            normalization_type="layer_norm"),
}
