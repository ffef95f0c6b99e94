"""``mobilebert-mobile``: one CLI, one subcommand per stage. Heavy modules are imported lazily,
so ``mobilebert-mobile --help`` stays fast and torch-free."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


# --------------------------------------------------------------------------- presets
def cmd_presets(args) -> int:
    from .config import PRESETS, MobileBertConfig
    from .config_params import count_parameters

    rows = []
    for name in PRESETS:
        cfg = MobileBertConfig.from_preset(name)
        rows.append({"preset": name, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                     "intra": cfg.intra_bottleneck_size, "heads": cfg.num_attention_heads,
                     "ffn": f"{cfg.intermediate_size}x{cfg.num_feedforward_networks}",
                     "act/norm": f"{cfg.hidden_act}/{cfg.normalization_type}",
                     "backbone_params": count_parameters(cfg)})
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'preset':<20}{'layers':>7}{'hidden':>7}{'intra':>7}{'heads':>6}{'ffn':>9}  {'act/norm':<18}{'params':>10}")
    for r in rows:
        print(f"{r['preset']:<20}{r['layers']:>7}{r['hidden']:>7}{r['intra']:>7}{r['heads']:>6}{r['ffn']:>9}  "
              f"{r['act/norm']:<18}{r['backbone_params'] / 1e6:>9.2f}M")
    return 0


# ------------------------------------------------------------------------------ info
def cmd_info(args) -> int:
    from .config import MobileBertConfig

    cfg = MobileBertConfig.from_json(args.checkpoint)
    out = {"checkpoint": os.path.abspath(args.checkpoint), "architectures": cfg.architectures,
           "config": cfg.to_dict()}
    if not args.no_weights:
        from .modeling import model_class_for

        model = model_class_for(args.checkpoint).from_pretrained(args.checkpoint)
        out["parameters"] = model.num_parameters()
    _print_json(out)
    return 0


# -------------------------------------------------------------------------- tokenize
def cmd_tokenize(args) -> int:
    from . import assets
    from .tokenizer import Tokenizer

    tok = Tokenizer.from_file(args.vocab or assets.vocab_path(), lowercase=not args.cased,
                              max_length=args.max_length)
    enc = tok(args.texts, padding="longest")
    rows = []
    for i, text in enumerate(args.texts):
        n = int(enc.attention_mask[i].sum())
        ids = enc.input_ids[i, :n].tolist()
        rows.append({"text": text, "tokens": tok.convert_ids_to_tokens(ids), "input_ids": ids,
                     "truncated": bool(enc.truncated[i])})
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(" ".join(r["tokens"]))
    return 0


# ------------------------------------------------------------------------------ demo
def cmd_demo(args) -> int:
    """The README's main job. Default: the real distilled sentiment classifier, converted to int8,
    benchmarked and used through the Predictor. ``--preset``: a random-weight round trip of a preset."""
    if args.preset is None:
        return _demo_default_model(args)
    import numpy as np
    import torch

    from . import assets
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
                "label_agreement": st.get("label_agreement"), "xnnpack_partitions": st["xnnpack"].get("partitions"),
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

    from .converters import convert
    from .distill import default_model
    from .runtime import Predictor

    say = (lambda *a: None) if args.json else print
    t_all = time.perf_counter()
    rec = default_model.build(say=say, progress=not args.json)
    report: dict = {"default_model": rec}
    say(f"[default model] {'cached: ' if rec['cached'] else ''}{rec['model']}: "
        f"{rec['student_parameters'] / 1e6:.1f}M-parameter student classifier, "
        f"distilled in {rec['distill_s']:.0f} s + fine-tuned in {rec['finetune_s']:.0f} s; PyTorch accuracy on "
        f"{rec['held_out']} held-out Rotten Tomatoes sentences: {rec['held_out_accuracy']:.3f}")
    bundle = rec["model"].rstrip("/") + f"-bundle-{args.seq_len}"
    if not os.path.isfile(os.path.join(bundle, "bundle.json")):
        say(f"[convert] int8 TFLite for Android (seq {args.seq_len}, verified stage by stage) into {bundle} ...")
        convert(rec["model"], bundle, precisions=("dynamic-int8", "int8"), seq_len=args.seq_len,
                calibration_size=200, heldout_size=200, quiet=args.json)
    with open(os.path.join(bundle, "report.json"), encoding="utf-8") as fh:
        rep = json.load(fh)
    report["tflite"] = {}
    for st in rep["stages"]:
        if st["stage"].startswith("tflite"):
            report["tflite"][st["precision"]] = {k: st.get(k) for k in (
                "size_mb", "label_agreement", "latency_ms_median_2threads", "max_abs_diff")}
            say(f"[host] {st['precision']:>12}: {st['size_mb']:.1f} MB, label agreement with float "
                f"{st.get('label_agreement', 0):.3f}, {st['latency_ms_median_2threads']:.2f} ms median "
                f"(seq {args.seq_len}, 2 threads, LiteRT/XNNPACK)")
    report["phones"] = _demo_phones(bundle, say)
    p = Predictor.load(bundle, num_threads=args.threads)
    _, test = default_model.split_rotten_tomatoes()
    texts, labels = [t for t, _ in test], [y for _, y in test]
    t0 = time.perf_counter()
    res = p.predict(texts)
    dt = time.perf_counter() - t0
    acc = float(np.mean([r["label"] == ("positive" if y else "negative") for r, y in zip(res, labels)]))
    with open(os.path.join(bundle, "bundle.json"), encoding="utf-8") as fh:
        default = json.load(fh)["default_model"]
    report["predictor"] = {"model": default,
                           "held_out_accuracy": acc, "sentences_per_s": round(len(texts) / dt, 1)}
    say(f"[predict] Predictor.load('{bundle}'): held-out accuracy {acc:.3f} on {len(texts)} sentences "
        f"({len(texts) / dt:.0f} sentences/s); a few of them:")
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
    rc = main(["bench", bundle, "--device", ",".join(ready)])
    return {"devices": ready, "exit_code": rc}


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilebert-mobile",
                                description="MobileBERT-class models: build, convert, benchmark, predict.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("demo", help="build the distilled default classifier, convert to int8, benchmark, predict",
                       description="Default: build (once, cached) a real MobileBERT sentiment classifier distilled "
                                   "from all-MiniLM-L6-v2, convert it to verified int8 TFLite, benchmark it on the "
                                   "host and on attached phones, and classify held-out sentences through the "
                                   "Predictor. With --preset: a random-weight round trip of that preset "
                                   "(build, save, reload, convert, predict).")
    s.add_argument("--preset", default=None, help="random-weight round trip of a preset instead (e.g. mobilebert)")
    s.add_argument("--out", help="checkpoint directory (default: the cache)")
    s.add_argument("--layers", type=int, help="override the preset's layer count")
    s.add_argument("--sentences", type=int, default=6)
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--skip-convert", action="store_true", help="stop after the PyTorch round trip")
    s.add_argument("--json", action="store_true", help="print a JSON report")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("presets", help="list the model presets with parameter counts")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("info", help="describe a checkpoint directory")
    s.add_argument("checkpoint")
    s.add_argument("--no-weights", action="store_true", help="read config.json only")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("tokenize", help="show WordPiece tokens and ids of texts")
    s.add_argument("texts", nargs="+")
    s.add_argument("--vocab", help="vocab.txt or tokenizer.json (default: the BERT uncased vocabulary)")
    s.add_argument("--cased", action="store_true")
    s.add_argument("--max-length", type=int, default=128)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tokenize)

    for register in _extensions():
        register(sub)
    return p


def _extensions():
    """Subcommands of later stages register themselves here (their modules import nothing heavy at load)."""
    from . import cli_runtime
    from .android_harness import cli as android_cli
    from .benchmarks import cli as bench_cli
    from .converters import cli as convert_cli
    from .distill import cli as distill_cli

    return [convert_cli.register, cli_runtime.register, bench_cli.register, android_cli.register,
            distill_cli.register]


def _version() -> str:
    from . import __version__

    return __version__


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    for sub in parser._subparsers._group_actions[0].choices.values():  # every subcommand
        sub.add_argument("--verbose", action="store_true",
                         help="show TensorFlow / LiteRT log lines and full warning locations")


def _plain_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line, without pointing at our internal source line."""
    text = f"warning: {message}\n"
    try:
        (file or sys.stderr).write(text)
    except (OSError, ValueError):
        pass


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so clean-up (temporary folders) runs as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    # TensorFlow start-up noise off, and oneDNN's reordered float math off (reproducible numbers)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    parser = build_parser()
    _add_verbose(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import contextlib
    import signal
    import warnings

    from ._native_log import NativeLogFilter
    from .errors import exit_code

    verbose = getattr(args, "verbose", False)
    if not verbose:
        warnings.showwarning = _plain_warning
    with contextlib.ExitStack() as stack:
        if not verbose:
            stack.enter_context(NativeLogFilter())
        if threading_main():
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        try:
            return int(args.func(args) or 0)
        except (KeyboardInterrupt, _Terminated) as e:
            terminated = isinstance(e, _Terminated)
            print(f"{'terminated (SIGTERM)' if terminated else 'interrupted (Ctrl-C)'}: stopped; nothing "
                  "half-written was left", file=sys.stderr)
            return 143 if terminated else 130
        except BrokenPipeError:
            # the reader (e.g. `| head`) went away: no traceback, and no second error at exit
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except Exception as e:
            code = exit_code(e)
            if code is None and isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError,
                                               NotADirectoryError)):
                code = 2
            if code is None:
                raise  # a bug: show it in full
            print(f"error: {e}", file=sys.stderr)
            return code


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
