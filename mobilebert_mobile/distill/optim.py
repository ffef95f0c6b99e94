"""Optimizers and the learning-rate schedule.

AdamW is PyTorch's own. LAMB (You et al., 2019; MobileBERT's optimizer) has no well-kept
implementation installable here: timm's ``Lamb`` needs torchvision, which does not import beside
the CPU torch 2.13 wheel, and ``torch-optimizer`` has had no release since 2021. So LAMB is
written here, following the paper's Algorithm 2 (bias-corrected Adam update, decoupled weight
decay inside the trust ratio ||w|| / ||update||, ratio 1 where either norm is 0), and tested
against a hand-computed step and a numpy transcription of the algorithm over several steps with
weight decay.

Which tensors get the trust ratio: all of them, biases and norms included, as Algorithm 2 writes
it. Google's BERT LAMB (``exclude_from_layer_adaptation``) leaves biases and LayerNorm parameters
at ratio 1. We keep the paper's form because the default model and the committed ablation were
trained with it; a group with ``adapt=False`` gives Google's behaviour. (Issue 15's diagnosis
found the trust ratio was not what froze Q and K: their scores started at 1e-5.)
"""
from __future__ import annotations


import torch

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias", "norm.weight", "norm.bias")


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 adapt: bool = True):
        if lr < 0 or eps <= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError(f"invalid LAMB hyper-parameters lr={lr} betas={betas} eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adapt=adapt))
        self.record = False  # when True, ``last`` maps each stepped parameter to its step's numbers
        self.last: dict = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update.add(p, alpha=group["weight_decay"])
                if group.get("adapt", True):
                    w_norm, u_norm = p.norm(), update.norm()
                    ratio = (w_norm / u_norm).item() if w_norm > 0 and u_norm > 0 else 1.0
                else:
                    ratio = 1.0
                if self.record:
                    self.last[p] = {"trust_ratio": ratio, "update_norm": float(update.norm()),
                                    "weight_norm": float(p.norm()), "lr": group["lr"]}
                p.add_(update, alpha=-group["lr"] * ratio)
        return loss


def param_groups(named_params, weight_decay: float, lr_scale=None) -> list[dict]:
    """Weight decay on matrices only (not on norms and biases); ``lr_scale(name) -> float`` gives
    per-parameter learning-rate multipliers (progressive distillation), grouped by value."""
    groups: dict[tuple[float, float], list] = {}
    names: dict[tuple[float, float], list] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        wd = 0.0 if (p.ndim < 2 or any(k in name for k in NO_DECAY)) else weight_decay
        scale = 1.0 if lr_scale is None else float(lr_scale(name))
        if scale == 0.0:
            continue
        key = (wd, scale)
        groups.setdefault(key, []).append(p)
        names.setdefault(key, []).append(name)
    return [{"params": ps, "weight_decay": k[0], "lr_scale": k[1], "names": names[k]} for k, ps in groups.items()]


def make_optimizer(name: str, groups: list[dict], lr: float):
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if name == "lamb":
        return Lamb(clean, lr=lr, betas=(0.9, 0.999), eps=1e-6)
    if name == "adamw":
        return torch.optim.AdamW(clean, lr=lr, betas=(0.9, 0.999), eps=1e-6)
    raise ValueError(f"unknown optimizer {name!r}: choose lamb or adamw")


def warmup_linear(total_steps: int, warmup_steps: int):
    """Multiplier for LambdaLR: linear warm-up to 1, then linear decay to 0 at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        rest = max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - (step - warmup_steps) / rest)

    return f

