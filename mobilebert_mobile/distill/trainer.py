"""One training loop for distillation and fine-tuning: stages, optimizer per stage, exact resume,
data parallelism through ``torchrun``.

A *task* (see tasks.py) owns the model and the losses; the loop owns the rest:

    for each stage: build parameter groups (lr multipliers, frozen = absent), a fresh optimizer and
    warm-up + linear-decay schedule, wrap the trainable module in DistributedDataParallel when
    WORLD_SIZE > 1, then for each step: global batch (deterministic in the step) -> task.prepare
    (masking etc., on the global batch) -> this process's slice -> losses normalised by the
    *global* counts -> backward -> global-norm clipping -> step.

Checkpoints (every ``save_every`` steps, at each stage end, and at the end) hold model, optimizer,
scheduler, stage/step position, RNG states and a fingerprint of the configuration; they are
written to a temporary file and renamed over ``state.pt``, so a crash mid-write keeps the last
good one. ``resume=True`` continues from ``state.pt`` and refuses one of another configuration.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import StageError
from .data import Batches, shard
from .optim import make_optimizer, param_groups, warmup_linear


class TrainError(StageError):
    """Training cannot start or continue (bad resume, out of memory, non-finite loss)."""


@dataclass
class TrainConfig:
    out_dir: str
    global_batch: int = 32
    lr: float = 1e-3
    warmup_frac: float = 0.1
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0
    save_every: int = 0  # 0: only at stage ends and at the end
    log_every: int = 10
    amp: str = "auto"  # auto: bf16 on a GPU that has it, off on CPU; "bf16" / "off"
    resume: bool = False
    progress: bool = True
    max_seconds: float | None = None  # stop (with a checkpoint) after this wall time


def dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _init_dist(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_torch_save(obj, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class MetricsLog:
    """JSONL metrics (one line per logged step, flushed), plus TensorBoard when installed."""

    def __init__(self, path: str, enabled: bool):
        self.enabled = enabled
        self.fh = open(path, "a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(os.path.join(os.path.dirname(path), "tensorboard"))
            except Exception:
                self.tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.fh:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()


def _autocast(cfg: TrainConfig):
    import contextlib

    if cfg.amp not in ("auto", "bf16", "off"):
        raise TrainError(f"amp must be auto, bf16 or off, got {cfg.amp!r}")
    if cfg.amp == "off" or (cfg.amp == "auto" and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported())):
        return contextlib.nullcontext()
    # bf16, never fp16: fp16 training of MobileBERT gives NaN (documented for the released checkpoint)
    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)


def train(task, batches: Batches, cfg: TrainConfig, probe=None) -> dict:
    """Run every stage of ``task.stages``; returns a summary (steps, seconds, final losses).

    ``probe`` (optional, for diagnostics such as ``distill.diagnose``): an object with
    ``before_backward(step, stage, losses, module)`` and ``after_step(step, stage, module, opt, grad_norm)``;
    it must not change the model or the RNG streams of training."""
    rank, world = dist_info()
    _init_dist(world)
    if cfg.global_batch % world:
        raise TrainError(f"global batch {cfg.global_batch} is not divisible by {world} processes")
    os.makedirs(cfg.out_dir, exist_ok=True)
    state_path = os.path.join(cfg.out_dir, "state.pt")
    fp = fingerprint({"task": task.describe(), "batch": cfg.global_batch, "lr": cfg.lr, "opt": cfg.optimizer,
                      "wd": cfg.weight_decay, "warmup": cfg.warmup_frac, "clip": cfg.clip, "seed": cfg.seed})
    module: nn.Module = task.module
    start_stage, start_step, global_step, resumed = 0, 0, 0, None
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.resume and os.path.exists(state_path):
        try:
            resumed = torch.load(state_path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise TrainError(f"cannot read checkpoint {state_path}: {e}") from None
        if resumed.get("fingerprint") != fp:
            theirs, ours = resumed.get("describe", {}), task.describe()
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise TrainError(f"{state_path} is a checkpoint of another configuration (differs in: "
                             f"{', '.join(diff) or 'training settings'}); use a new --out or drop --resume")
        module.load_state_dict(resumed["module"])
        start_stage, start_step, global_step = resumed["stage"], resumed["step"], resumed["global_step"]
    metrics = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), rank == 0)
    stages = task.stages
    total = sum(s.steps for s in stages)
    t0 = time.time()
    last: dict = {}
    pbar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        pbar = tqdm(total=total, initial=global_step, desc="train", unit="step", dynamic_ncols=True)
    stopped_early = False
    try:
        for si in range(start_stage, len(stages)):
            stage = stages[si]
            first = start_step if si == start_stage else 0
            task.begin_stage(stage, first)  # a stage resumed part-way (first > 0) is not re-initialised
            for p in module.parameters():
                p.requires_grad_(True)
            groups = param_groups(module.named_parameters(), cfg.weight_decay, task.lr_scale(stage))
            if not groups:
                raise TrainError(f"stage {stage.name!r} has no trainable parameters")
            trainable = {id(p) for g in groups for p in g["params"]}
            for p in module.parameters():
                p.requires_grad_(id(p) in trainable)
            opt = make_optimizer(cfg.optimizer, groups, cfg.lr)
            warm = int(cfg.warmup_frac * stage.steps)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(stage.steps, warm))
            if resumed is not None and si == start_stage and resumed.get("optimizer") is not None and first > 0:
                opt.load_state_dict(resumed["optimizer"])
                sched.load_state_dict(resumed["scheduler"])
            if resumed is not None and si == start_stage:
                _set_rng_state(resumed["rng"])
            runner = module
            if world > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                runner = DDP(module, find_unused_parameters=True)
            module.train()
            for step in range(first, stage.steps):
                batch = task.prepare(batches.batch(global_step), global_step)
                counts = task.counts(batch)
                local = shard(batch, rank, world)
                denoms = {k: v / world for k, v in counts.items()}
                with _autocast(cfg):
                    teacher_out = task.teacher_outputs(local, stage)
                    losses = runner(local, teacher_out, denoms, stage)
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise TrainError(f"non-finite loss at step {global_step} ({stage.name}): lower --lr or use fp32")
                opt.zero_grad(set_to_none=True)
                if probe is not None:
                    probe.before_backward(global_step, stage, losses, module)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.clip) \
                    if cfg.clip > 0 else torch.tensor(0.0)
                opt.step()
                if probe is not None:
                    probe.after_step(global_step, stage, module, opt, float(gnorm))
                sched.step()
                global_step += 1
                last = {k: float(v.detach()) for k, v in losses.items()}
                if rank == 0 and (global_step % max(1, cfg.log_every) == 0 or step == stage.steps - 1):
                    metrics.write({"step": global_step, "stage": stage.name, "lr": sched.get_last_lr()[0],
                                   "grad_norm": float(gnorm), "seconds": round(time.time() - t0, 2), **last})
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix_str(f"{stage.name} loss={last['loss']:.4f}", refresh=False)
                done_stage = step == stage.steps - 1
                out_of_time = cfg.max_seconds is not None and time.time() - t0 > cfg.max_seconds
                if (cfg.save_every and global_step % cfg.save_every == 0) or done_stage or out_of_time:
                    nxt = (si + 1, 0) if done_stage else (si, step + 1)
                    if rank == 0:
                        _atomic_torch_save({
                            "module": module.state_dict(), "optimizer": None if done_stage else opt.state_dict(),
                            "scheduler": None if done_stage else sched.state_dict(), "stage": nxt[0],
                            "step": nxt[1], "global_step": global_step, "rng": _rng_state(),
                            "fingerprint": fp, "describe": task.describe()}, state_path)
                    if out_of_time and not done_stage:
                        stopped_early = True
                        break
            if stopped_early:
                break
    except RuntimeError as e:
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower() \
                or "DefaultCPUAllocator" in str(e):
            raise TrainError(f"out of memory at global batch {cfg.global_batch}: try a smaller --batch-size "
                             f"(or --seq-len)") from None
        raise
    finally:
        if pbar is not None:
            pbar.close()
        metrics.close()
        for p in module.parameters():
            p.requires_grad_(True)
    return {"steps": global_step, "total_steps": total, "seconds": round(time.time() - t0, 1),
            "stopped_early": stopped_early, "last": last, "world_size": world}
