"""The HTTP server: JSON in and out, clear 4xx, never dies of a request."""
import http.client
import json
import threading

import pytest

from conftest_convert import make_checkpoint
from mobilebert_mobile import Predictor
from mobilebert_mobile.converters import convert
from mobilebert_mobile.runtime.server import make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("srv")
    convert(make_checkpoint(d / "ck", layers=1), d / "b", precisions=("fp32",), seq_len=32, calibration_size=8,
            heldout_size=8, quiet=True)
    httpd = make_server(Predictor.load(d / "b"), "127.0.0.1", 0, max_batch=4, max_body=2048)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _req(port, method, path, body=None, raw=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def test_predict_and_health(server):
    s, r = _req(server, "POST", "/predict", {"texts": ["a gorgeous film", "a dull film"], "top_k": 1})
    assert s == 200 and len(r["results"]) == 2 and r["results"][0]["label"] in ("negative", "positive")
    s, r = _req(server, "POST", "/predict", {"pairs": [["a", "b"]]})
    assert s == 200
    s, r = _req(server, "GET", "/health")
    assert s == 200 and r["task"] == "classification"


@pytest.mark.parametrize("body, raw, status, msg", [
    (None, b"{not json", 400, "not valid UTF-8 JSON"),
    (None, b"\xff\xfe", 400, "not valid UTF-8 JSON"),
    ([1, 2], None, 400, "must be a JSON object"),
    ({"texts": []}, None, 400, "empty"),
    ({"texts": [None]}, None, 400, "must be a str"),
    ({"texts": "x", "top_k": 0}, None, 400, "top_k"),
    ({"pairs": [["only one"]]}, None, 400, "pairs"),
    ({"nothing": 1}, None, 400, "give 'texts'"),
    ({"texts": ["x"] * 5}, None, 413, "batch limit of 4"),
    ({"texts": ["x" * 3000]}, None, 413, "exceeds the limit"),
])
def test_bad_requests(server, body, raw, status, msg):
    s, r = _req(server, "POST", "/predict", body, raw)
    assert s == status and msg in r["error"]


def test_wrong_task_paths_and_methods(server):
    s, r = _req(server, "POST", "/embed", {"texts": ["x"]})
    assert s in (400, 422) and "classification model" in r["error"]
    assert _req(server, "POST", "/nope", {"texts": ["x"]})[0] == 404
    assert _req(server, "GET", "/nope")[0] == 404
    assert _req(server, "PUT", "/predict", {"texts": ["x"]})[0] == 405
    assert _req(server, "GET", "/health")[0] == 200  # still alive
