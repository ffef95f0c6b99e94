"""Quantization-aware fine-tuning: fake-quant where the TFLite int8 converter quantizes.

What is simulated, and after which TFLite rule:

* weights of every ``nn.Linear``: per output channel, symmetric int8 in [-127, 127],
  scale = max|w_c| / 127 (TFLite's per-channel FULLY_CONNECTED weights); straight-through
  gradient inside the range;
* activations at the op boundaries of the converted graph: per tensor, asymmetric int8 in
  [-128, 127] over a range that always contains 0 (TFLite's calibrated activations); the range is
  an exponential moving average of the batch min / max (TensorFlow's QAT observers), observed
  for ``observe_steps`` training steps before the fake-quant is switched on, so that ranges have
  settled before they bite.

The activation points, by module (names are the model's own module paths, ``<path>:in`` for a
module's input and ``<path>:out`` for its output):

* ``<linear>:out`` for every Linear, except where the converter leaves no tensor there: a Linear
  followed directly by a NoNorm (folded into the Linear) and a Linear followed by ReLU / ReLU6
  (fused into FULLY_CONNECTED); for those, the point is after the norm / activation;
* ``<norm>:out`` for every norm, and ``<norm>:in`` where a residual sum enters it; for a NoNorm
  there also ``<norm>:mul``, its product ``x * gamma`` before beta is added: the converter leaves
  such a NoNorm as an int8 MUL and an int8 ADD, and the product is rounded to int8 between them;
* ``<attention output dense>:in``: the attention context, where the float attention island
  (BATCH_MATMUL, SOFTMAX) hands back to int8.

Some points have no tensor of their own in a given converted graph (the NoNorm folds also reach
some residual sums); they only add simulated noise in training. ``convert`` finds each point's
tensor in the calibrated TFLite model by value (``converters.quantize.apply_learned_ranges``) and
reports how many it matched.

The ranges are saved beside the weights as ``qat_ranges.json``; ``convert`` uses them instead
of calibrating (automatically, or ``--ranges-from``). The weights are saved in float: the
converter's per-channel quantization reproduces the simulated one exactly.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._io import atomic_write_text, read_json_bounded
from ..errors import InputError

# Which activation points QAT simulates (a model trained with another set is stale for the demo's cache):
# 1 - linear, norm and attention-context points; 2 - also the product of each residual NoNorm.
POINTS_VERSION = 2
RANGES_FILE = "qat_ranges.json"
RANGES_FORMAT = "mobilebert-mobile.qat-ranges/1"
MAX_RANGES_BYTES = 16 << 20


class QatError(InputError):
    """A QAT ranges file that cannot be used."""


class PerChannelWeightFakeQuant(nn.Module):
    """Parametrization of a Linear weight [out, in]: symmetric int8 per output row."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = (w.detach().abs().amax(dim=1) / 127.0).clamp_min(1e-12).float()
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


def tflite_qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of an int8 [-128, 127] tensor over [lo, hi], widened to contain 0."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = ((hi - lo) / 255.0).clamp_min(1e-8)
    zero = torch.clamp(torch.round(-128.0 - lo / scale), -128, 127).to(torch.int32)
    return scale.reshape(1).float(), zero.reshape(1)


class ActivationFakeQuant(nn.Module):
    """EMA min/max observer + per-tensor int8 fake-quant (on after ``observe_steps`` training calls)."""

    def __init__(self, observe_steps: int = 100, momentum: float = 0.99):
        super().__init__()
        self.observe_steps, self.momentum = observe_steps, momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @property
    def active(self) -> bool:
        return int(self.calls) > self.observe_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                lo, hi = (v.float() for v in torch.aminmax(x.detach()))
                if int(self.calls) == 0:
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                else:
                    m = self.momentum
                    self.lo.mul_(m).add_((1 - m) * lo)
                    self.hi.mul_(m).add_((1 - m) * hi)
                self.calls += 1
        if not self.active:
            return x
        scale, zero = tflite_qparams(self.lo, self.hi)
        return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, -128, 127).to(x.dtype)


def _is_nonorm(m: nn.Module) -> bool:
    from ..modeling.layers import NoNorm

    return isinstance(m, NoNorm)


def activation_points(model: nn.Module) -> list[str]:
    """The fake-quant points of ``model`` (see the module docstring), in module order."""
    from ..modeling.attention import BottleneckLayer, MobileBertSelfOutput
    from ..modeling.block import FFNOutput, MobileBertIntermediate, MobileBertOutput, OutputBottleneck
    from ..modeling.embeddings import MobileBertEmbeddings

    mods = dict(model.named_modules())
    skip: set[str] = set()
    points: list[str] = []
    residual_norm = (FFNOutput, MobileBertSelfOutput, OutputBottleneck, MobileBertOutput, MobileBertEmbeddings)
    for name, m in mods.items():
        pre = f"{name}." if name else ""
        if isinstance(m, BottleneckLayer) and _is_nonorm(m.LayerNorm):
            skip.add(pre + "dense")  # folded into the Linear by the converter
        if isinstance(m, MobileBertIntermediate) and getattr(m.act, "__name__", "") in ("relu", "relu6"):
            skip.add(pre + "dense")  # fused into FULLY_CONNECTED
            points.append(f"{name}:out")
        if isinstance(m, MobileBertSelfOutput):
            points.append(f"{pre}dense:in")
        if isinstance(m, residual_norm) and hasattr(m, "LayerNorm"):
            points.append(f"{pre}LayerNorm:in")
            if _is_nonorm(m.LayerNorm):
                points.append(f"{pre}LayerNorm:mul")
    for name, m in mods.items():
        if isinstance(m, nn.Linear) and name not in skip:
            points.append(f"{name}:out")
        if _is_nonorm(m) or isinstance(m, nn.LayerNorm):
            points.append(f"{name}:out")
    seen, ordered = set(), []
    index = {n: i for i, n in enumerate(mods)}
    where = {"in": 0, "mul": 1, "out": 2}
    for p in sorted(points, key=lambda p: (index[p.rsplit(":", 1)[0]], where[p.rsplit(":", 1)[1]])):
        if p not in seen:
            seen.add(p)
            ordered.append(p)
    return ordered


def _key(point: str) -> str:
    return point.replace(".", "/")  # ModuleDict keys cannot hold dots


class QAT:
    """Fake-quant attached to a model: weights parametrized, activations through hooks.

    ``observers`` is an ``nn.ModuleDict`` (its buffers belong in a training checkpoint; attach it
    to the module the trainer saves). ``ranges()`` reads the learned ranges; ``remove()`` takes
    everything off again and leaves the float weights."""

    def __init__(self, model: nn.Module, *, observe_steps: int = 100, momentum: float = 0.99,
                 points: list[str] | None = None):
        self.model = model
        self.points = activation_points(model) if points is None else list(points)
        mods = dict(model.named_modules())
        for p in self.points:
            name, _, where = p.rpartition(":")
            if name not in mods or where not in ("in", "out", "mul") or (where == "mul" and not _is_nonorm(mods[name])):
                raise QatError(f"bad QAT point {p!r} (expected <module>:in, <module>:out or <NoNorm>:mul of "
                               f"this model)")
        self.observers = nn.ModuleDict({_key(p): ActivationFakeQuant(observe_steps, momentum) for p in self.points})
        self.handles = []
        for p in self.points:
            name, where = p.rsplit(":", 1)
            mod, fq = mods[name], self.observers[_key(p)]
            if where == "out":
                self.handles.append(mod.register_forward_hook(lambda _m, _i, out, fq=fq: fq(out)))
            elif where == "mul":  # a NoNorm as the converter leaves it: int8 MUL, then int8 ADD
                self.handles.append(mod.register_forward_hook(
                    lambda m, args, _out, fq=fq: fq(args[0] * m.weight) + m.bias))
            else:
                self.handles.append(mod.register_forward_pre_hook(
                    lambda _m, args, fq=fq: (fq(args[0]),) + tuple(args[1:])))
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for lin in self.linears:
            parametrize.register_parametrization(lin, "weight", PerChannelWeightFakeQuant())

    def ranges(self) -> dict[str, list[float]]:
        return {p: [float(self.observers[_key(p)].lo), float(self.observers[_key(p)].hi)] for p in self.points}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for lin in self.linears:
            if parametrize.is_parametrized(lin, "weight"):
                parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)


def save_ranges(model_dir: str, ranges: dict[str, list[float]], settings: dict) -> str:
    path = os.path.join(model_dir, RANGES_FILE)
    atomic_write_text(path, json.dumps({
        "format": RANGES_FORMAT, "weights": "per-channel symmetric int8 [-127, 127] (every Linear)",
        "activations": "per-tensor asymmetric int8 [-128, 127], EMA min/max", **settings, "points": ranges},
        indent=1))
    return path


def load_ranges(path: str) -> dict[str, tuple[float, float]]:
    """``{point: (lo, hi)}`` from a ``qat_ranges.json`` or a checkpoint folder holding one."""
    if os.path.isdir(path):
        path = os.path.join(path, RANGES_FILE)
    if not os.path.isfile(path):
        raise QatError(f"no QAT ranges at {path} (fine-tune with --qat to make them)")
    doc = read_json_bounded(path, MAX_RANGES_BYTES, QatError, "QAT ranges file")
    if not isinstance(doc, dict) or doc.get("format") != RANGES_FORMAT or not isinstance(doc.get("points"), dict):
        raise QatError(f"{path} is not a QAT ranges file (expected format {RANGES_FORMAT!r})")
    out = {}
    for p, r in doc["points"].items():
        ok = isinstance(p, str) and ":" in p and isinstance(r, list) and len(r) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e30 for v in r)
        if not ok or r[0] > r[1]:
            raise QatError(f"{path}: bad range for {p!r}: {r!r} (expected [lo, hi] with lo <= hi)")
        out[p] = (float(r[0]), float(r[1]))
    return out


@torch.no_grad()
def point_activations(model: nn.Module, points, feeds: dict) -> dict[str, torch.Tensor]:
    """Each point's float activation on ``feeds`` (one forward pass, no fake-quant)."""
    mods = dict(model.named_modules())
    acts: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for p in points:
            name, where = p.rsplit(":", 1)
            if name not in mods:
                raise QatError(f"QAT point {p!r} names no module of this model (ranges of another model?)")
            if where == "out":
                handles.append(mods[name].register_forward_hook(
                    lambda _m, _i, out, p=p: acts.__setitem__(p, out.detach().clone())))
            elif where == "in":
                handles.append(mods[name].register_forward_pre_hook(
                    lambda _m, args, p=p: acts.__setitem__(p, args[0].detach().clone())))
            elif where == "mul" and _is_nonorm(mods[name]):
                handles.append(mods[name].register_forward_hook(
                    lambda m, args, _out, p=p: acts.__setitem__(p, (args[0] * m.weight).detach().clone())))
            else:
                raise QatError(f"bad QAT point {p!r} (expected <module>:in, <module>:out or <NoNorm>:mul)")
        model.eval()
        model(**feeds)
    finally:
        for h in handles:
            h.remove()
    return acts
