"""``predict`` and ``serve`` subcommands (nothing heavy imported at load)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def register(sub) -> None:
    s = sub.add_parser("predict", help="classify or embed texts with a converted model",
                       description="Run a bundle (or a .tflite with metadata / an .onnx) on texts.")
    s.add_argument("model", help="bundle directory, .tflite or .onnx")
    s.add_argument("texts", nargs="*", help="texts (or use --file)")
    s.add_argument("--file", help="one text per line (.txt; TAB separates a pair), .csv/.tsv with a 'text' "
                                  "column (+ 'text_pair'), or .jsonl")
    s.add_argument("--backend", default="litert", choices=["litert", "onnxruntime", "torch"])
    s.add_argument("--precision", help="which model of the bundle (default: its default_model)")
    s.add_argument("--threads", type=int)
    s.add_argument("--top-k", type=int)
    s.add_argument("--normalize", action="store_true", help="L2-normalise embeddings")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("serve", help="serve predict/embed over HTTP (JSON in and out; needs the 'serve' extra)",
                       description="Serve a model over HTTP with uvicorn: POST /predict, POST /embed, GET /health. "
                                   "Bodies are bounded in size and time; model calls run in a pool of workers.")
    s.add_argument("model", help="bundle directory, .tflite or .onnx")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=8080)
    s.add_argument("--backend", default="litert", choices=["litert", "onnxruntime", "torch"])
    s.add_argument("--precision")
    s.add_argument("--workers", type=_positive, help="model threads, each with its own interpreter "
                                                     "(default: 2 on 2+ cores, else 1)")
    s.add_argument("--threads", type=_positive, help="threads per interpreter (default: cores / workers)")
    s.add_argument("--max-batch", type=_positive, default=256)
    s.add_argument("--max-body", type=_positive, default=1 << 20, help="bytes")
    s.add_argument("--body-timeout", type=float, default=10.0, help="seconds a client has to send its body")
    s.set_defaults(func=cmd_serve)


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def _port(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {v!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {n}")
    return n


def read_inputs(path: str) -> list:
    """Texts from --file (the same reader and rules as calibration text, errors naming the file)."""
    from .converters.calibration import read_texts

    return read_texts(path, what="input file")


_CONTROL = {c: f"\\x{c:02x}" for c in list(range(0x20)) + [0x7f] if c != 0x09}
_CONTROL.update({c: f"\\x{c:02x}" for c in range(0x80, 0xa0)})


def shown(text) -> str:
    """Untrusted text made safe for a terminal: control characters (escape sequences, carriage
    returns, C1 controls) are printed as \\xNN instead of being obeyed."""
    s = text if isinstance(text, str) else " || ".join(text)
    return s.translate(_CONTROL)


def cmd_predict(args: argparse.Namespace) -> int:
    from .runtime import Predictor, PredictorError

    texts = list(args.texts)
    if args.file:
        texts += read_inputs(args.file)
    if not texts:
        raise PredictorError("no texts: give them as arguments or with --file")
    p = Predictor.load(args.model, backend=args.backend, num_threads=args.threads, model=args.precision)
    if p.task == "classification":
        res = p.predict(texts, top_k=args.top_k)
        if args.json:
            print(json.dumps([{"text": t, **r} for t, r in zip(texts, res)], indent=2, default=str))
        else:
            for t, r in zip(texts, res):
                print(f"{shown(r['label']):>12}  {r['score']:.4f}  {shown(t)[:90]}")
    elif p.task == "embedding":
        e = p.embed(texts, normalize=args.normalize)
        if args.json:
            print(json.dumps([{"text": t, "embedding": v.tolist()} for t, v in zip(texts, e)]))
        else:
            for t, v in zip(texts, e):
                print(f"[{', '.join(f'{x:.4f}' for x in v[:4])}, ... ({v.size} dims)]  {shown(t)[:70]}")
    else:
        out = p.logits(texts)
        print(json.dumps({k: v.tolist() for k, v in out.items()}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .runtime import Predictor
    from .runtime.server import Server, default_workers

    workers = args.workers or default_workers()
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    p = Predictor.load(args.model, backend=args.backend, num_threads=threads, model=args.precision,
                       max_workers=workers)
    srv = Server(p, args.host, args.port, max_batch=args.max_batch, max_body=args.max_body,
                 body_timeout=args.body_timeout, workers=workers)
    print(f"serving {p.task} model {p.source} on http://{args.host}:{srv.port} with {workers} worker(s) x "
          f"{threads} thread(s) (POST /predict, POST /embed, GET /health); Ctrl-C stops", file=sys.stderr, flush=True)
    srv.run()
    return 0
