"""JSON-over-HTTP serving on a real server stack: uvicorn (HTTP/1.1 through h11) and Starlette.

    POST /predict {"texts": [...]} or {"pairs": [[a, b], ...]}, optional "top_k"
    POST /embed   {"texts": [...], "normalize": bool}
    GET  /health  (HEAD too)

What the stack gives us rather than our own HTTP code: request parsing that rejects malformed
framing (a negative or non-numeric Content-Length is a 400 from h11 before any body is read), a
listen backlog of 2048, keep-alive timeouts, 405 with ``Allow`` for wrong methods, HEAD, and a
graceful shutdown on SIGINT/SIGTERM. What we add: every body is bounded (Content-Length checked
against ``max_body`` before reading, chunked bodies counted while reading) and must arrive within
``body_timeout`` seconds (408 otherwise), so a slow client holds one coroutine, never a model;
model calls run in a pool of ``workers`` threads, each with an interpreter of its own (the
Predictor's pool), so concurrent requests use the cores.

Errors are JSON ``{"error": ...}``; statuses come from error types (``errors.py``), never from
message text. Needs the ``serve`` extra (uvicorn, starlette); the rest of the runtime does not.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import warnings

from ..errors import MobileBertMobileError

DEFAULT_BACKLOG = 2048


class ServeError(MobileBertMobileError, RuntimeError):
    """The server cannot start (port in use, bad address, missing extra)."""


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _imports():
    try:
        import anyio
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ServeError(f"serving needs the 'serve' extra (uvicorn, starlette): pip install "
                         f"'mobilebert-mobile[serve]' ({e})") from None
    return anyio


def make_app(predictor, *, max_batch: int = 256, max_body: int = 1 << 20, body_timeout: float = 10.0,
             workers: int = 1):
    """The Starlette application over ``predictor`` (shared by ``workers`` model threads)."""
    anyio = _imports()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    limiter = anyio.CapacityLimiter(workers)

    async def read_json(request) -> dict:
        cl = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if cl is None and not chunked:
            raise _HTTPError(411, "Content-Length required")
        if cl is not None:
            if not cl.strip().isdigit():  # h11 already refuses these; kept for other servers
                raise _HTTPError(400, f"invalid Content-Length {cl!r}")
            if int(cl) > max_body:
                raise _HTTPError(413, f"request body of {int(cl)} bytes exceeds the limit of {max_body}")
        body = bytearray()
        try:
            with anyio.fail_after(body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > max_body:
                        raise _HTTPError(413, f"request body exceeds the limit of {max_body} bytes")
        except TimeoutError:
            raise _HTTPError(408, f"request body not received within {body_timeout:g} s") from None
        except ClientDisconnect:  # nobody to answer; no traceback in the server's log
            raise _HTTPError(400, "the client disconnected before sending its body") from None
        try:
            obj = json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise _HTTPError(400, f"body is not valid UTF-8 JSON: {e}") from None
        if not isinstance(obj, dict):
            raise _HTTPError(400, "body must be a JSON object")
        return obj

    def texts_of(obj: dict) -> list:
        if "pairs" in obj:
            pairs = obj["pairs"]
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise _HTTPError(400, "'pairs' must be a list of [text, text_pair] lists")
            texts = [tuple(p) for p in pairs]
        elif "texts" in obj:
            texts = obj["texts"]
            if isinstance(texts, str):
                texts = [texts]
            if not isinstance(texts, list):
                raise _HTTPError(400, "'texts' must be a list of strings")
        else:
            raise _HTTPError(400, "give 'texts' (or 'pairs')")
        if not texts:
            raise _HTTPError(400, "'texts' is empty")
        if len(texts) > max_batch:
            raise _HTTPError(413, f"{len(texts)} texts exceed the batch limit of {max_batch}")
        return texts

    def run_model(fn, *args, **kw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args, **kw)
        return result, [str(w.message) for w in caught]

    async def predict(request):
        obj = await read_json(request)
        texts = texts_of(obj)
        top_k = obj.get("top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise _HTTPError(400, "'top_k' must be a positive integer")
        result, warns = await anyio.to_thread.run_sync(lambda: run_model(predictor.predict, texts, top_k=top_k),
                                                       limiter=limiter)
        return JSONResponse({"results": result, "warnings": warns})

    async def embed(request):
        obj = await read_json(request)
        texts = texts_of(obj)
        normalize = obj.get("normalize", False)
        if not isinstance(normalize, bool):
            raise _HTTPError(400, "'normalize' must be true or false")
        result, warns = await anyio.to_thread.run_sync(
            lambda: run_model(predictor.embed, texts, normalize=normalize), limiter=limiter)
        return JSONResponse({"results": result.tolist(), "warnings": warns})

    async def health(request):
        return JSONResponse({"status": "ok", "task": predictor.task, "labels": predictor.labels,
                             "max_seq_length": predictor.max_seq_length, "workers": workers})

    async def http_error(request, exc):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def starlette_error(request, exc):
        detail = {404: f"unknown path {request.url.path}",
                  405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def our_error(request, exc):
        status = exc.http_status if isinstance(exc, MobileBertMobileError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    async def unexpected(request, exc):  # never let a request kill the server
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    routes = [Route("/predict", predict, methods=["POST"]), Route("/embed", embed, methods=["POST"]),
              Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={
        _HTTPError: http_error, HTTPException: starlette_error, MobileBertMobileError: our_error,
        Exception: unexpected})


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket, or a ServeError naming the problem (port in use, bad address)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ServeError(f"port must be an integer in 0..65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"cannot resolve host {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


class Server:
    """A uvicorn server over ``make_app``; ``run()`` blocks (SIGINT/SIGTERM stop it gracefully),
    ``start()``/``stop()`` run it in a background thread (tests, embedding in an app)."""

    def __init__(self, predictor, host: str = "127.0.0.1", port: int = 8080, *, max_batch: int = 256,
                 max_body: int = 1 << 20, body_timeout: float = 10.0, workers: int = 1,
                 keep_alive: float = 5.0, backlog: int = DEFAULT_BACKLOG):
        _imports()
        import uvicorn

        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        app = make_app(predictor, max_batch=max_batch, max_body=max_body, body_timeout=body_timeout,
                       workers=workers)
        self.config = uvicorn.Config(app, http="h11", lifespan="off", log_level="warning", access_log=False,
                                     backlog=backlog, timeout_keep_alive=keep_alive,
                                     timeout_graceful_shutdown=10, server_header=False)
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.run, name="mobilebert-mobile-server", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self.server.started:
            raise ServeError(f"the server on {self.host}:{self.port} did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)


def default_workers() -> int:
    """Model threads for serving: 2 on machines with 2+ cores (measured faster for int8 models on
    2 cores than one interpreter with 2 threads; see the README), else 1."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1
