"""Load test of ``mobilebert-mobile serve`` on loopback: many concurrent clients, stalled clients
beside them, latency percentiles, throughput and errors. Bounded in count and time; loopback only.

    python -m mobilebert_mobile.benchmarks.serve_load BUNDLE [--clients 200] [--requests 3]
        [--stalled 20] [--workers N --threads N] [--out benchmarks/results/serve]

The server runs as its own process (the CLI, as a user would start it); the clients are threads
of this process, each with its own connection per request. ``--compare`` also runs the same load
against each (workers, threads) choice listed, side by side, for the README's choice of default.
Results are appended to ``OUT/serve_load.jsonl`` as they come and summarised in ``serve_load.md``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from mobilebert_mobile._io import atomic_write_text
from mobilebert_mobile._machine import machine

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is a mess and the acting is worse.",
    "an intelligent, moving film that never talks down to its audience.",
    "i could not wait for it to end.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes, timeout: float) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def _stall(port: int, hold: float, stop: threading.Event) -> None:
    """A client that announces a body and never sends it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=hold + 5) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"texts\": [")
            stop.wait(hold)
    except OSError:
        pass


def run_load(port: int, clients: int, requests: int, stalled: int, deadline_s: float) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    stallers = [threading.Thread(target=_stall, args=(port, deadline_s, stop), daemon=True) for _ in range(stalled)]
    for t in stallers:
        t.start()
    t_end = time.perf_counter() + deadline_s
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        barrier.wait()
        for k in range(requests):
            if time.perf_counter() > t_end:
                return
            body = json.dumps({"texts": [TEXTS[(i + k) % len(TEXTS)]]}).encode()
            t0 = time.perf_counter()
            try:
                s = _post(port, body, timeout=max(1.0, t_end - t0))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    errors.append(type(e).__name__)
                continue
            with lock:
                lat.append(time.perf_counter() - t0)
                statuses[s] = statuses.get(s, 0) + 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, t_end - time.perf_counter()) + 5)
    wall = time.perf_counter() - t0
    stop.set()
    ok = statuses.get(200, 0)
    a = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return {"clients": clients, "requests_per_client": requests, "stalled_clients": stalled,
            "sent": clients * requests, "ok": ok, "errors": len(errors) + sum(v for k, v in statuses.items() if k != 200),
            "error_kinds": sorted(set(errors)), "statuses": {str(k): v for k, v in statuses.items()},
            "p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(np.max(a)), 1), "throughput_rps": round(ok / wall, 1), "wall_s": round(wall, 2)}


def start_server(bundle: str, port: int, workers: int, threads: int, log_path: str) -> subprocess.Popen:
    """The server's stderr goes to a file (a pipe nobody reads would fill and block the server)."""
    log = open(log_path, "a", encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "mobilebert_mobile.cli", "serve", bundle, "--port", str(port),
                          "--workers", str(workers), "--threads", str(threads)], stdout=subprocess.DEVNULL,
                         stderr=log)
    log.close()
    t_end = time.time() + 120
    while time.time() < t_end:
        if p.poll() is not None:
            with open(log_path, encoding="utf-8") as fh:
                raise SystemExit(f"the server exited: {fh.read()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.2)
    p.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilebert_mobile.benchmarks.serve_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--stalled", type=int, default=20, help="clients that never send their body")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare", default="", help="more WORKERSxTHREADS choices, e.g. 1x2,2x2")
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds, per configuration")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "serve"))
    a = ap.parse_args(argv)
    if not (1 <= a.clients <= 1000 and 1 <= a.requests <= 100 and 0 <= a.stalled <= 200):
        ap.error("--clients 1..1000, --requests 1..100, --stalled 0..200 (the test stays bounded)")
    os.makedirs(a.out, exist_ok=True)
    configs = [(a.workers, a.threads)] + [tuple(int(x) for x in c.split("x")) for c in a.compare.split(",") if c]
    mach = machine()
    with open(os.path.join(a.bundle, "bundle.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    model_desc = (f"{manifest['task']} model `{manifest['default_model']}` of "
                  f"{manifest.get('source', {}).get('architecture', '?')}, seq {manifest['max_seq_length']}")
    rows = []
    jsonl = os.path.join(a.out, "serve_load.jsonl")
    for workers, threads in configs:
        port = _free_port()
        srv = start_server(a.bundle, port, workers, threads, os.path.join(a.out, "server.log"))
        try:
            _post(port, json.dumps({"texts": TEXTS}).encode(), 60)  # warm-up
            res = run_load(port, a.clients, a.requests, a.stalled, a.deadline)
        finally:
            srv.terminate()
            try:
                srv.wait(30)
            except subprocess.TimeoutExpired:
                srv.kill()
                raise SystemExit("the server did not stop within 30 s of SIGTERM") from None
        res.update({"workers": workers, "threads": threads, "bundle": os.path.abspath(a.bundle), "machine": mach,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        rows.append(res)
        with open(jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(res) + "\n")
        print(f"{workers} worker(s) x {threads} thread(s): {res['ok']}/{res['sent']} ok, {res['errors']} errors, "
              f"p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, {res['throughput_rps']} req/s "
              f"({a.stalled} stalled clients alongside)", flush=True)
    lines = [f"# Serving under load ({a.clients} concurrent clients x {a.requests} requests, {a.stalled} stalled "
             "clients alongside, loopback)", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, int8 ISA {mach['int8_isa']['best']}. Bundle: "
             f"`{os.path.basename(os.path.abspath(a.bundle))}` ({model_desc}). Command: `python -m "
             f"mobilebert_mobile.benchmarks.serve_load BUNDLE --compare {a.compare or '-'}`.", "",
             "| workers x threads | ok / sent | errors | p50 ms | p99 ms | max ms | req/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} x {r['threads']} | {r['ok']} / {r['sent']} | {r['errors']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r['max_ms']} | {r['throughput_rps']} |")
    atomic_write_text(os.path.join(a.out, "serve_load.md"), "\n".join(lines) + "\n")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
