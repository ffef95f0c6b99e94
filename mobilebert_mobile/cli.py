"""``mobilebert-mobile``: one CLI, one subcommand per stage. Heavy modules are imported lazily,
so ``mobilebert-mobile --help`` stays fast and torch-free."""
from __future__ import annotations

import argparse
import json
import os
import sys


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
    from . import demo

    return demo.run(args)


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
