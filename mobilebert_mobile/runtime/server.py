"""A small JSON-over-HTTP server on the standard library (ThreadingHTTPServer).

POST /predict {"texts": [...]} or {"pairs": [[a, b], ...]}, optional "top_k"
POST /embed   {"texts": [...], "normalize": bool}
GET  /health
Bad requests get a 4xx with {"error": "..."}; the process never dies of a request. Requests are
bounded in size and batch; one model call runs at a time (interpreters are not thread-safe).
"""
from __future__ import annotations

import json
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .backends import PredictorError


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def make_server(predictor, host: str = "127.0.0.1", port: int = 8080, *, max_batch: int = 256,
                max_body: int = 1 << 20) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "mobilebert-mobile"

        def log_message(self, fmt, *args):  # quiet by default
            pass

        def _send(self, status: int, obj) -> None:
            body = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self._send(200, {"status": "ok", "task": predictor.task, "labels": predictor.labels,
                                 "max_seq_length": predictor.max_seq_length})
            else:
                self._send(404, {"error": f"unknown path {self.path}"})

        def _body(self) -> dict:
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise _BadRequest(411, "Content-Length required") from None
            if n > max_body:
                raise _BadRequest(413, f"request body of {n} bytes exceeds the limit of {max_body}")
            raw = self.rfile.read(n)
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _BadRequest(400, f"body is not valid UTF-8 JSON: {e}") from None
            if not isinstance(obj, dict):
                raise _BadRequest(400, "body must be a JSON object")
            return obj

        def _texts(self, obj: dict) -> list:
            if "pairs" in obj:
                pairs = obj["pairs"]
                if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                    raise _BadRequest(400, "'pairs' must be a list of [text, text_pair] lists")
                texts = [tuple(p) for p in pairs]
            elif "texts" in obj:
                texts = obj["texts"]
                if isinstance(texts, str):
                    texts = [texts]
                if not isinstance(texts, list):
                    raise _BadRequest(400, "'texts' must be a list of strings")
            else:
                raise _BadRequest(400, "give 'texts' (or 'pairs')")
            if not texts:
                raise _BadRequest(400, "'texts' is empty")
            if len(texts) > max_batch:
                raise _BadRequest(413, f"{len(texts)} texts exceed the batch limit of {max_batch}")
            return texts

        def do_POST(self):
            try:
                if self.path not in ("/predict", "/embed"):
                    raise _BadRequest(404, f"unknown path {self.path}")
                obj = self._body()
                texts = self._texts(obj)
                with lock, warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if self.path == "/predict":
                        top_k = obj.get("top_k")
                        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                            raise _BadRequest(400, "'top_k' must be a positive integer")
                        result = predictor.predict(texts, top_k=top_k)
                    else:
                        result = predictor.embed(texts, normalize=bool(obj.get("normalize", False))).tolist()
                self._send(200, {"results": result, "warnings": [str(w.message) for w in caught]})
            except _BadRequest as e:
                self._send(e.status, {"error": str(e)})
            except PredictorError as e:
                self._send(422 if "model" in str(e) and "needs" in str(e) else 400, {"error": str(e)})
            except Exception as e:  # never let a request kill the server
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

        def do_PUT(self):
            self._send(405, {"error": "use POST"})

        do_DELETE = do_PATCH = do_PUT

    return ThreadingHTTPServer((host, port), Handler)
