"""The paper's three layer-wise strategies as stage plans, and what each stage trains.

* auxiliary   one stage: layer-wise losses of every layer + the pre-training distillation loss.
* joint       stage 1: layer-wise losses of every layer; stage 2: pre-training distillation only.
* progressive stages 1..L: layer l's losses only, layer l trained, lower layers frozen
              (``lower="freeze"``) or at a reduced rate (``lower="reduced"``, ``lower_rate``,
              0.1 by default; the original code used 0.3x lower / 3x current), higher layers
              untouched; then pre-training distillation of everything.

``keep_attention`` (the default) keeps every layer's attention-transfer term on, at its layer-wise
weight, in the pre-training distillation stage that ends joint and progressive: without it that
stage undid the transferred attention within 40 steps (held-out KL 0.37 -> 4.2; issue 15,
benchmarks/results/distill/diagnosis.md). ``keep_attention=False`` is the paper's plain stage.

Every strategy gets the same step budget: joint and progressive spend half on layer-wise
transfer (progressive splits that half evenly over the layers) and half on pre-training
distillation. Embeddings train with the first layer-wise stage and then follow the lower-layer
rule (``freeze_embeddings`` keeps them as copied from the teacher, the paper's choice when the
copy is exact). Heads outside the encoder train only in pre-training distillation stages.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

STRATEGIES = ("auxiliary", "joint", "progressive")
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")
_MAP = re.compile(r"mapping\.maps\.(\d+)\.")


@dataclass
class Stage:
    name: str
    steps: int
    layers: list[int] = field(default_factory=list)  # layers whose layer-wise losses are on
    embedding_loss: bool = False  # the embedding output's feature-map loss
    pretrain: bool = False  # MLM (+ sentence-order) distillation on
    current: int | None = None  # progressive: the layer being trained
    run_layers: int | None = None  # forward only this many layers (progressive); None = all
    attention_layers: list[int] = field(default_factory=list)  # attention term only (no feature map)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan(strategy: str, steps: int, num_layers: int, *, embedding_loss: bool = True,
         keep_attention: bool = True) -> list[Stage]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if steps < (2 * num_layers if strategy == "progressive" else 2 if strategy == "joint" else 1):
        raise ValueError(f"{steps} steps are too few for the {strategy} strategy with {num_layers} layers")
    every = list(range(num_layers))
    if strategy == "auxiliary":
        return [Stage("auxiliary", steps, every, embedding_loss, pretrain=True)]
    half = steps // 2
    final = Stage("pre-training distillation", steps - half, pretrain=True,
                  attention_layers=every if keep_attention else [])
    if strategy == "joint":
        return [Stage("layer-wise", half, every, embedding_loss), final]
    per, extra = divmod(half, num_layers)
    stages = [Stage(f"layer {l + 1}/{num_layers}", per + (1 if l < extra else 0), [l], embedding_loss and l == 0,
                    current=l, run_layers=l + 1) for l in range(num_layers)]
    return stages + [final]


def lr_scale_fn(stage: Stage, *, lower: str = "freeze", lower_rate: float = 0.1, current_rate: float = 1.0,
                freeze_embeddings: bool = False):
    """``name -> learning-rate multiplier`` (0 = frozen) for the parameters of the student
    (``student.*``) and the optional mapping (``mapping.maps.i.*``, i = 0 embeddings, i = l + 1 layer l)."""
    if lower not in ("freeze", "reduced"):
        raise ValueError(f"lower must be 'freeze' or 'reduced', got {lower!r}")
    low = 0.0 if lower == "freeze" else lower_rate

    def scale(name: str) -> float:
        is_emb = ".embeddings." in name or name.startswith("embeddings.")
        m = _LAYER.search(name)
        mm = _MAP.search(name)
        if stage.current is None:  # auxiliary, joint, pre-training stages
            if is_emb and freeze_embeddings:
                return 0.0
            if stage.pretrain or m or is_emb or mm:
                return 1.0
            return 0.0  # heads during a pure layer-wise stage
        c = stage.current
        if mm:
            i = int(mm.group(1)) - 1  # map index 0 is the embedding output
            return current_rate if i == c or (i == -1 and c == 0) else 0.0
        if is_emb:
            if freeze_embeddings:
                return 0.0
            return current_rate if c == 0 else low
        if m:
            layer = int(m.group(1))
            return current_rate if layer == c else (low if layer < c else 0.0)
        return 0.0  # heads: untouched until pre-training distillation

    return scale
