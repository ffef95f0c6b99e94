"""The benchmark suite's quick mode (CI smoke) and its pieces."""
import json
import os
import subprocess
import sys

import pytest

from mobilebert_mobile import MobileBertConfig
from mobilebert_mobile.benchmarks import macs


def test_mac_count_matches_the_paper_recount():
    m = macs.model_macs(MobileBertConfig.from_preset("mobilebert"), 128)
    assert round(m["total"] / 1e9, 2) == 2.69 and round(m["ffn_share"], 2) == 0.60
    tiny = macs.model_macs(MobileBertConfig.from_preset("mobilebert-tiny"), 128)
    assert tiny["total"] < m["total"]
    assert "FFNs" in macs.format_breakdown(m)


def test_quick_mode_end_to_end(tmp_path):
    out = tmp_path / "res"
    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.cli", "bench-host", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    rows = res["variants"]["2"]
    for name in ("ours TFLite fp32", "ours TFLite int8", "ours TFLite dynamic-int8", "onnxruntime fp32",
                 "onnxruntime dynamic-int8", "torch eager (ours)", "transformers eager"):
        assert rows[name]["status"] == "ok", (name, rows[name])
        assert rows[name]["median_ms"] > 0 and rows[name]["p10_ms"] <= rows[name]["median_ms"] <= rows[name]["p90_ms"]
        assert rows[name]["fidelity"]["label_agreement"] >= 0.75
        assert 0 < rows[name]["peak_rss_mb"] < 4096
    assert rows["ours TFLite fp32"]["fidelity"]["max_abs_diff"] < 1e-4
    assert res["floor"]["fp32_ms"] > 0 and res["floor"]["int8_ms"] > 0
    sf = res["floor"]["shape_aware"]  # every GEMM shape of the model timed alone, fp32 and int8
    assert sf["fp32_ms"] > 0 and sf["int8_ms"] > 0 and {s["op"] for s in sf["shapes"]} == {"FULLY_CONNECTED",
                                                                                            "BATCH_MATMUL"}
    assert rows["ours TFLite int8"]["x_shape_floor"] > 0 and res["machine"]["int8_isa"]["best"]
    assert res["versions"]["tensorflow"] and res["machine"]["flags"]
    # the fully integer model is measured too, and the conversion time is recorded per stage
    assert rows["ours TFLite int8-full"]["status"] == "ok", rows["ours TFLite int8-full"]
    assert res["conversion_total_s"] > 0 and res["conversion"]["tflite int8"]["time_s"] > 0
    assert "Our conversion of 5 precision(s)" in (out / "results.md").read_text()
    assert [r["seq_len"] for r in res["scaling"]["rows"]] == [16, 32, 32]
    for f in ("results.md", "latency.png", "scaling.png", "results.jsonl"):
        assert (out / f).stat().st_size > 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) and all(json.loads(x)["variant"] for x in lines)
    assert "x floor" in (out / "results.md").read_text() and "x shape floor" in (out / "results.md").read_text()
    assert not (out / "work").exists()


def test_bad_inputs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.cli", "bench-host", "--preset", "bert-huge",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown preset 'bert-huge'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mobilebert_mobile.cli", "bench-host", "--checkpoint",
                        str(tmp_path / "nope"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "checkpoint directory not found" in r.stderr


def test_missing_peer_and_crashing_variant_are_reported(tmp_path):
    from mobilebert_mobile.benchmarks import host

    root = str(tmp_path)  # no peers venv here
    got = host.convert_with_litert_torch("ck", str(tmp_path / "o"), 32, 1, root)
    assert all("not installed" in v for v in got.values())
    feeds = {k: __import__("numpy").ones((1, 8), "int32") for k in ("input_ids", "attention_mask", "token_type_ids")}
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    res = host.measure_variants({"broken": {"kind": "tflite", "path": str(tmp_path / "bad.tflite")},
                                 "missing": "peer not installed"}, 1, feeds, feeds, runs=2, warmup=1, rounds=1,
                                log=lambda m: None)
    assert res["missing"] == {"status": "skipped", "reason": "peer not installed"}
    assert res["broken"]["status"] in ("skipped", "crashed") and res["broken"]["reason"]


def test_work_bundle_is_reused_only_when_made_by_the_same_converter(tmp_path, monkeypatch):
    """bench-host keeps converted models in OUT/work for reruns; a bundle made by other converter code
    (its .source stamp differs) or with other arguments is converted again, never measured."""
    import mobilebert_mobile.converters as conv
    from mobilebert_mobile.benchmarks import host

    calls = []

    def fake_convert(ckpt, out, **kw):
        calls.append(kw)
        os.makedirs(out)
        (tmp_path / "b" / "bundle.json").write_text("{}")
        (tmp_path / "b" / "model.tflite").write_text(str(len(calls)))

    monkeypatch.setattr(conv, "convert", fake_convert)
    ck, out = str(tmp_path / "ck"), str(tmp_path / "b")
    host.convert_reusing(ck, out, seq_len=128)
    host.convert_reusing(ck, out, seq_len=128)
    assert len(calls) == 1  # same code, same arguments: reused
    host.convert_reusing(ck, out, seq_len=64)
    assert len(calls) == 2 and (tmp_path / "b" / "model.tflite").read_text() == "2"
    (tmp_path / "b.source").write_text("made by another version of the converter\n")
    host.convert_reusing(ck, out, seq_len=64)
    assert len(calls) == 3


def test_presets_table_marks_the_default_and_draws_the_chart(tmp_path):
    from mobilebert_mobile.benchmarks import convert_presets

    row = dict(size_mb=1.0, max_rel_diff=1e-3, metric="agreement", score=1.0, meets_target=True, partitions=1,
               ops_outside=4, conversion_s=10.0)
    row["machine"] = {"cpu": "Some CPU", "cores": 2, "int8_isa": {"best": "AVX2", "int8_dot_product": False}}
    rows = [{"preset": "p", "precision": "dynamic-int8", "ms": 2.0, "default": False, **row},
            {"preset": "p", "precision": "int8", "ms": 1.5, "default": True, **row},
            {"preset": "q (4 layers)", "error": "MemoryError: killed"}]
    assert convert_presets.write_table(rows, str(tmp_path)) == 0
    md = (tmp_path / "presets.md").read_text()
    lines = {ln.split("|")[2].strip(): ln.split("|")[1:-1] for ln in md.splitlines() if ln.startswith("| p |")}
    assert lines["int8"][9].strip() == "yes" and lines["dynamic-int8"][9].strip() == ""
    assert "| q (4 layers) | error: MemoryError: killed" in md
    assert md.startswith("Machine: Some CPU, 2 cores, int8 ISA: AVX2 (dot product: no).")  # where it was measured
    assert (tmp_path / "presets.png").read_bytes()[:4] == b"\x89PNG" and "![presets](presets.png)" in md
