"""The HTTP server (uvicorn + Starlette): JSON in and out, HTTP semantics, bounded bodies and time,
statuses from error types, concurrent clients, labels equal to the Predictor's."""
import http.client
import json
import socket
import subprocess
import threading
import time

import pytest

from conftest_convert import make_checkpoint
from mobilebert_mobile import Predictor, assets
from mobilebert_mobile.converters import convert
from mobilebert_mobile.runtime.server import Server, ServeError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("srv")
    convert(make_checkpoint(d / "ck", layers=1), d / "b", precisions=("fp32",), seq_len=32, calibration_size=8,
            heldout_size=8, quiet=True)
    return d / "b"


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor.load(bundle, max_workers=2, num_threads=1)


@pytest.fixture(scope="module")
def server(predictor):
    srv = Server(predictor, "127.0.0.1", 0, max_batch=4, max_body=2048, body_timeout=1.0, workers=2).start()
    yield srv.port
    srv.stop()


def _req(port, method, path, body=None, raw=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
    r = c.getresponse()
    payload = r.read()
    c.close()
    return r.status, (json.loads(payload) if payload else {}), r


def _raw(port, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, return what the server answers (until it closes or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"}" in out:
                    break
        except socket.timeout:
            pass
        return out


def test_labels_equal_the_predictor(server, predictor):
    texts = assets.sample_sentences(6, offset=700)
    s, r, _ = _req(server, "POST", "/predict", {"texts": texts[:4], "top_k": 1})
    assert s == 200
    want = predictor.predict(texts[:4])
    assert [x["label"] for x in r["results"]] == [x["label"] for x in want]
    assert all(abs(a["score"] - b["score"]) < 1e-6 for a, b in zip(r["results"], want))
    assert all(len(x["top_k"]) == 1 for x in r["results"])
    s, r, _ = _req(server, "POST", "/predict", {"pairs": [[texts[4], texts[5]]]})
    assert s == 200 and r["results"][0]["label"] == predictor.predict([(texts[4], texts[5])])[0]["label"]
    s, r, _ = _req(server, "GET", "/health")
    assert s == 200 and r["task"] == "classification" and r["workers"] == 2


@pytest.mark.parametrize("body, raw, status, msg", [
    (None, b"{not json", 400, "not valid UTF-8 JSON"),
    (None, b"\xff\xfe", 400, "not valid UTF-8 JSON"),
    ([1, 2], None, 400, "must be a JSON object"),
    ({"texts": []}, None, 400, "empty"),
    ({"texts": [None]}, None, 400, "must be a str"),
    ({"texts": {"good movie": 1}}, None, 400, "must be a list"),
    ({"texts": "x", "top_k": 0}, None, 400, "top_k"),
    ({"texts": "x", "top_k": True}, None, 400, "top_k"),
    ({"pairs": [["only one"]]}, None, 400, "pairs"),
    ({"nothing": 1}, None, 400, "give 'texts'"),
    ({"texts": ["x"] * 5}, None, 413, "batch limit of 4"),
    ({"texts": ["x" * 3000]}, None, 413, "exceeds the limit"),
])
def test_bad_requests(server, body, raw, status, msg):
    s, r, _ = _req(server, "POST", "/predict", body, raw)
    assert s == status and msg in r["error"]


def test_status_comes_from_the_error_type(server):
    s, r, _ = _req(server, "POST", "/embed", {"texts": ["x"]})
    assert s == 422 and "classification model" in r["error"]


def test_http_semantics(server):
    assert _req(server, "POST", "/nope", {"texts": ["x"]})[0] == 404
    s, r, resp = _req(server, "GET", "/predict")
    assert s == 405 and "not allowed" in r["error"] and resp.getheader("Allow") == "POST"
    assert _req(server, "POST", "/health", {})[0] == 405
    assert _req(server, "PUT", "/predict", {"texts": ["x"]})[0] == 405
    s, r, resp = _req(server, "OPTIONS", "/predict")
    assert s == 405 and resp.getheader("Content-Type") == "application/json"
    c = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    c.request("HEAD", "/health")
    resp = c.getresponse()
    assert resp.status == 200 and resp.read() == b""
    c.close()


def test_negative_and_oversized_content_length_are_refused_before_reading(server):
    t = time.perf_counter()
    out = _raw(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + b"x" * 100)
    assert out.startswith(b"HTTP/1.1 400") and time.perf_counter() - t < 3
    # 100 MB announced, nothing sent: refused at once from the header
    t = time.perf_counter()
    out = _raw(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413") and b"exceeds the limit" in out and time.perf_counter() - t < 3


def test_slow_client_gets_408_and_does_not_stall_others(server):
    got = {}

    def slow():
        got["slow"] = _raw(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: 50\r\n\r\n{\"texts\"", wait=10)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.1)
    t = time.perf_counter()
    for _ in range(5):
        assert _req(server, "POST", "/predict", {"texts": ["fine"]})[0] == 200
    assert time.perf_counter() - t < 5
    th.join(15)
    assert got["slow"].startswith(b"HTTP/1.1 408"), got["slow"][:80]


def test_concurrent_clients_all_answered(server, predictor):
    texts = assets.sample_sentences(40, offset=300)
    want = [r["label"] for r in predictor.predict(texts)]
    results, errors = [None] * 120, []

    def client(i):
        try:
            s, r, _ = _req(server, "POST", "/predict", {"texts": [texts[i % 40]]})
            results[i] = (s, r["results"][0]["label"])
        except Exception as e:  # noqa: BLE001 - counted below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(120)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(r == (200, want[i % 40]) for i, r in enumerate(results))


def test_busy_port_and_bad_port(predictor, server, python):
    with pytest.raises(ServeError, match="cannot listen on 127.0.0.1:"):
        Server(predictor, "127.0.0.1", server)
    with pytest.raises(ServeError, match="0..65535"):
        Server(predictor, "127.0.0.1", 70000)
    r = subprocess.run([python, "-m", "mobilebert_mobile.cli", "serve", "nowhere", "--port", "70000"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "port must be in 0..65535" in r.stderr and "Traceback" not in r.stderr


def test_serve_cli_starts_answers_and_stops_on_sigterm(bundle, python):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([python, "-m", "mobilebert_mobile.cli", "serve", str(bundle), "--port", str(port)],
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "serving classification model" in line, line
        for _ in range(100):
            try:
                if _req(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert _req(port, "POST", "/predict", {"texts": ["a fine film"]})[0] == 200
        for _ in range(5):  # clients that hang up mid-body or mid-response: no tracebacks in the log
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"te")
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"texts\": [\"ok\"]}")
        time.sleep(1.0)
        assert _req(port, "GET", "/health")[0] == 200
    finally:
        p.terminate()
        rest = p.communicate(timeout=30)[1]
    assert p.returncode in (0, 143) and "Traceback" not in rest and "INFO: Created TensorFlow Lite" not in rest
