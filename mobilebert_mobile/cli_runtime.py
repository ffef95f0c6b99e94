"""``predict`` and ``serve`` subcommands (nothing heavy imported at load)."""
from __future__ import annotations

import argparse
import csv
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

    s = sub.add_parser("serve", help="serve predict/embed over HTTP on localhost (JSON in and out)")
    s.add_argument("model", help="bundle directory, .tflite or .onnx")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--backend", default="litert", choices=["litert", "onnxruntime", "torch"])
    s.add_argument("--precision")
    s.add_argument("--threads", type=int)
    s.add_argument("--max-batch", type=int, default=256)
    s.add_argument("--max-body", type=int, default=1 << 20, help="bytes")
    s.set_defaults(func=cmd_serve)


def read_inputs(path: str) -> list:
    from .converters.calibration import CalibrationError, read_texts

    try:
        return read_texts(path)
    except CalibrationError as e:
        raise FileNotFoundError(str(e).replace("calibration file", "input file")) if "not found" in str(e) \
            else ValueError(str(e).replace("calibration file", "input file")) from None


def cmd_predict(args: argparse.Namespace) -> int:
    from .runtime import Predictor, PredictorError

    texts = list(args.texts)
    if args.file:
        try:
            texts += read_inputs(args.file)
        except ValueError as e:
            raise PredictorError(str(e)) from None
    if not texts:
        raise PredictorError("no texts: give them as arguments or with --file")
    p = Predictor.load(args.model, backend=args.backend, num_threads=args.threads, model=args.precision)
    if p.task == "classification":
        res = p.predict(texts, top_k=args.top_k)
        if args.json:
            print(json.dumps([{"text": t, **r} for t, r in zip(texts, res)], indent=2, default=str))
        else:
            for t, r in zip(texts, res):
                shown = t if isinstance(t, str) else " || ".join(t)
                print(f"{r['label']:>12}  {r['score']:.4f}  {shown[:90]}")
    elif p.task == "embedding":
        e = p.embed(texts, normalize=args.normalize)
        if args.json:
            print(json.dumps([{"text": t, "embedding": v.tolist()} for t, v in zip(texts, e)]))
        else:
            for t, v in zip(texts, e):
                print(f"[{', '.join(f'{x:.4f}' for x in v[:4])}, ... ({v.size} dims)]  {str(t)[:70]}")
    else:
        out = p.logits(texts)
        print(json.dumps({k: v.tolist() for k, v in out.items()}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .runtime import Predictor
    from .runtime.server import make_server

    p = Predictor.load(args.model, backend=args.backend, num_threads=args.threads, model=args.precision)
    httpd = make_server(p, args.host, args.port, max_batch=args.max_batch, max_body=args.max_body)
    print(f"serving {p.task} model {p.source} on http://{args.host}:{httpd.server_address[1]} "
          f"(POST /predict, POST /embed, GET /health)", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0
