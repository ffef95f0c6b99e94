"""Fixtures for the Android harness tests: the real adb client with a private server, stand-in devices
(tests/adb_standin) connected to it over TCP, a tiny real .tflite with BERT inputs, fake benchmark binaries.

Import what a test module needs: ``from conftest_android import *  # noqa``.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from adb_standin import StandinDevice  # noqa: E402

_TINY_MODEL = r'''
import sys
import tensorflow as tf
emb = tf.Variable(tf.random.stateless_normal([30522, 8], seed=[1, 2]) * 0.1)
w = tf.Variable(tf.random.stateless_normal([8, 2], seed=[3, 4]))
spec = [tf.TensorSpec([1, 128], tf.int32, name=n) for n in ("input_ids", "attention_mask", "token_type_ids")]
@tf.function(input_signature=spec)
def serve(input_ids, attention_mask, token_type_ids):
    x = tf.gather(emb, input_ids) + tf.cast(token_type_ids, tf.float32)[..., None]
    m = tf.cast(attention_mask, tf.float32)[..., None]
    pooled = tf.reduce_sum(x * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
    return {"logits": tf.matmul(pooled, w)}
conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], serve)
open(sys.argv[1], "wb").write(conv.convert())
'''


_SHARED: dict = {}  # session fixtures shared by every module that imports this file


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _find_or_install_adb() -> str | None:
    found = shutil.which("adb")
    if found:
        return found
    # CI installs it through scripts/setup.sh; a root shell with apt can still get it here
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "adb"], env=env, capture_output=True, timeout=600)
        if not shutil.which("adb"):
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", "adb"], env=env, capture_output=True, timeout=600)
    return shutil.which("adb")


@pytest.fixture(scope="session")
def adb_path():
    p = _find_or_install_adb()
    if not p:
        pytest.skip("the adb client is not installed and could not be installed (Debian package 'adb'; "
                    "scripts/setup.sh installs it when run as root)")
    return p


@pytest.fixture(scope="session")
def adb_server(adb_path, tmp_path_factory):
    """A private adb server on a free port (never the user's server on 5037); killed at the end.
    The environment that points at it is applied per test by ``android_env``."""
    if "adb_server" in _SHARED:  # the fixture is imported by several modules: one server per session
        yield _SHARED["adb_server"]
        return
    home = str(tmp_path_factory.mktemp("android-home"))
    cache = str(tmp_path_factory.mktemp("mm-cache"))
    port = _free_port()
    env = {"ADB_SERVER_SOCKET": f"tcp:localhost:{port}", "ANDROID_SDK_HOME": home, "MOBILEBERT_MOBILE_CACHE": cache}
    full = dict(os.environ, **env)
    full.pop("MOBILEBERT_ADB", None)
    r = subprocess.run([adb_path, "start-server"], capture_output=True, text=True, timeout=60, env=full)
    assert r.returncode == 0, r.stderr
    _SHARED["adb_server"] = srv = {"adb": adb_path, "port": port, "cache": cache, "env": env}
    yield srv
    _SHARED.pop("adb_server", None)
    subprocess.run([adb_path, "kill-server"], capture_output=True, timeout=60, env=full)


@pytest.fixture
def android_env(adb_server, monkeypatch):
    """For one test: the environment pointing at the private adb server, and a temporary binary cache."""
    for k, v in adb_server["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MOBILEBERT_ADB", raising=False)
    return adb_server


def adb(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("adb"), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def standin(android_env):
    """``standin(profile, connect=True)`` -> a started stand-in device, attached with ``adb connect``."""
    made = []

    def make(profile=None, connect=True):
        d = StandinDevice(profile).start()
        made.append(d)
        if connect:
            r = adb("connect", d.serial)
            assert r.returncode == 0, r.stderr
        return d

    yield make
    for d in made:
        adb("disconnect", d.serial)
        d.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A real .tflite (Embedding over the 30522-token vocabulary + mean + Dense) with int32 inputs
    input_ids, attention_mask, token_type_ids of shape [1, 128]."""
    if "tiny_model" in _SHARED:
        return _SHARED["tiny_model"]
    d = tmp_path_factory.mktemp("tiny-model")
    path = str(d / "tiny_bert.tflite")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-c", _TINY_MODEL, path], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    _SHARED["tiny_model"] = path
    return path


def fake_elf(path: str, machine: int = 183) -> str:
    """A file with an ELF64 header for ``machine`` (the stand-in runs its own benchmark for it)."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x1000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    with open(path, "wb") as fh:
        fh.write(header + b"stand-in benchmark_model; TfLite version 2.16.1\0" + bytes(4096))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def bench_binary(tmp_path):
    return fake_elf(str(tmp_path / "android_aarch64_benchmark_model"), 183)


@pytest.fixture
def fresh_cache(android_env, monkeypatch):
    """An empty binary cache for one test."""
    d = tempfile.mkdtemp(prefix="mm-cache-")
    monkeypatch.setenv("MOBILEBERT_MOBILE_CACHE", d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_cli(*argv) -> tuple[int, str, str]:
    """mobilebert-mobile in this process (so the stand-ins' logs are visible); returns (rc, stdout, stderr)."""
    import contextlib
    import io

    from mobilebert_mobile.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


__all__ = ["adb_path", "adb_server", "android_env", "standin", "tiny_model", "bench_binary", "fresh_cache", "adb",
           "fake_elf",
           "run_cli", "StandinDevice"]
