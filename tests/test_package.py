"""Packaging, the light import path, the CLI."""
import json
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT


def test_import_is_light():
    code = ("import sys, mobilebert_mobile as m; m.MobileBertConfig.from_preset('mobilebert'); "
            "m.Tokenizer; heavy=[x for x in ('torch','tensorflow','transformers','onnx') if x in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_wheel_maps_folders_under_our_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), ROOT], check=True, capture_output=True)
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"mobilebert_mobile", "mobilebert_mobile-0.1.0.dist-info"}
    for sub in ("converters", "benchmarks", "android_harness", "modeling"):
        assert f"mobilebert_mobile/{sub}/__init__.py" in names


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mobilebert_mobile.cli", *args], capture_output=True, text=True)


def test_cli_help_and_subcommand_help():
    out = _cli("--help")
    assert out.returncode == 0 and "demo" in out.stdout and "presets" in out.stdout
    for sub in ("demo", "presets", "info", "tokenize"):
        assert _cli(sub, "--help").returncode == 0


def test_cli_demo_json(tmp_path):
    out = _cli("demo", "--preset", "mobilebert-tiny", "--sentences", "2", "--out", str(tmp_path), "--json",
               "--skip-convert")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["reload_max_abs_diff"] == 0.0 and len(rep["predictions"]) == 2
    assert rep["predictions"][0]["label"] in ("negative", "positive")
    assert os.path.isfile(tmp_path / "model.safetensors")
    info = _cli("info", str(tmp_path))
    assert info.returncode == 0 and json.loads(info.stdout)["parameters"] == rep["parameters"]


def test_cli_errors_are_clear(tmp_path):
    out = _cli("demo", "--preset", "nope")
    assert out.returncode == 2 and "unknown preset 'nope'" in out.stderr and "Traceback" not in out.stderr
    out = _cli("info", str(tmp_path))
    assert out.returncode == 2 and "no config.json" in out.stderr


def test_cli_demo_converts_and_predicts(tmp_path):
    out = _cli("demo", "--preset", "mobilebert-tiny", "--layers", "2", "--sentences", "20", "--seq-len", "32", "--out",
               str(tmp_path / "ck"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert set(rep["tflite"]) == {"fp32", "dynamic-int8", "int8"}
    assert rep["tflite"]["fp32"]["max_abs_diff_vs_torch"] < 1e-4
    default = rep["predictor"]["default_model"]
    # the converter's gate for the default model: label agreement off near-ties (verify.TIE_MARGIN)
    assert rep["tflite"][default]["decided_label_agreement"] >= 0.99
    assert rep["predictor"]["agreement_with_pytorch"] >= 0.95  # 20 other sentences: at most one flip
    assert os.path.isfile(tmp_path / "ck-bundle" / "bundle.json")


def test_cli_tokenize():
    out = _cli("tokenize", "hello world", "--json")
    assert json.loads(out.stdout)[0]["input_ids"] == [101, 7592, 2088, 102]
