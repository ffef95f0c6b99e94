"""The Android harness end to end: the real adb client drives stand-in phones (tests/adb_standin) through
`devices`, `bench` (several configurations, two phones in parallel), `--resume` and `bench-report`, and
every fault the harness must survive."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from adb_standin import Profile, pixel2, pixel4, pixel6
from conftest_android import *  # noqa: F401,F403
from conftest_android import adb, fake_elf, run_cli

FAST = ["--runs", "3", "--warmup-runs", "1", "--min-secs", "0", "--warmup-min-secs", "0", "--cooldown-poll", "0.1",
        "--no-progress"]


def lines(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(x) for x in fh if x.strip()]


def bench(model, serial, results, *extra):
    return run_cli("bench", model, "--device", serial, "--results", str(results), *FAST, *extra)


# ------------------------------------------------------------------------------------------ devices
def test_devices_lists_facts_and_states(standin):
    p4 = standin(pixel4())
    p2 = standin(pixel2())
    un = standin(Profile(unauthorized=True))
    rc, out, err = run_cli("devices", "--json")
    assert rc == 0, err
    rows = {r["serial"]: r for r in json.loads(out)}
    a = rows[p4.serial]
    assert a["state"] == "device" and a["model"] == "Pixel 4" and a["platform"] == "msmnile"
    assert a["soc"] == "SM8150" and a["android"] == "11" and a["sdk"] == 30 and a["abi"] == "arm64-v8a"
    assert a["cores"] == 8 and a["max_freq_khz"] == [1785600] * 4 + [2419200] * 3 + [2841600]
    assert a["big_cores"] == [4, 5, 6, 7] and a["taskset_mask"] == "f0"
    assert rows[p2.serial]["model"] == "Pixel 2" and rows[p2.serial]["sdk"] == 29
    assert rows[un.serial]["state"] == "unauthorized" and "USB debugging" in rows[un.serial]["hint"]
    rc, out, _ = run_cli("devices")
    assert rc == 0
    assert "unauthorized" in out and "4x1.79 3x2.42 1x2.84 GHz" in out and "4-7 (mask f0)" in out


def test_devices_console_script(standin):
    d = standin(pixel4())
    exe = os.path.join(os.path.dirname(sys.executable), "mobilebert-mobile")
    r = subprocess.run([exe, "devices", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert any(x["serial"] == d.serial and x["big_cores"] == [4, 5, 6, 7] for x in json.loads(r.stdout))


# ------------------------------------------------------------------------------------------ bench
def test_bench_two_phones_in_parallel_resume_and_report(standin, tiny_model, bench_binary, tmp_path):
    a = standin(pixel4())
    b = standin(pixel2(output_format="litert-percentiles"))
    res = tmp_path / "res.jsonl"
    rc, out, err = bench(tiny_model, f"{a.serial},{b.serial}", res, "--threads", "1,2", "--delegate",
                         "xnnpack,cpu", "--benchmark-binary", bench_binary)
    assert rc == 0, err + out
    recs = lines(res)
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs)
    for dev in (a, b):
        mine = [r for r in recs if r["device"]["serial"] == dev.serial]
        assert sorted((r["config"]["threads"], r["config"]["delegate"]) for r in mine) == [
            (1, "cpu"), (1, "xnnpack"), (2, "cpu"), (2, "xnnpack")]
        assert len(dev.bench_calls) == 4
        for call in dev.bench_calls:
            # the n fastest cores for n threads: the prime core alone, then it and the next fastest
            assert call["mask"] == {"1": "80", "2": "c0"}[call["flags"]["num_threads"]]
            # each range reached the input it names: the --input_layer list is in the model's order
            assert call["inputs"] == {"input_ids": {"low": 0, "high": 30521, "given": True, "flag_name": "input_ids"},
                                      "attention_mask": {"low": 1, "high": 1, "given": True,
                                                         "flag_name": "attention_mask"},
                                      "token_type_ids": {"low": 0, "high": 1, "given": True,
                                                         "flag_name": "token_type_ids"}}
            assert call["others_running"] == []
            assert call["flags"]["num_runs"] == "3" and call["flags"]["report_peak_memory_footprint"] == "true"
        assert {c["flags"]["num_threads"] for c in dev.bench_calls} == {"1", "2"}
        assert dev.files() == []  # the work directory is gone
        assert any(c.startswith("rm -rf /data/local/tmp/mobilebert-mobile") for c in dev.commands)
    r0 = recs[0]
    f = r0["figures"]
    for k in ("init_ms", "first_inference_ms", "warmup_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
              "peak_memory_mb"):
        assert isinstance(f[k], float), k
    assert f["count"] == 3
    assert r0["tool"]["version"] == "2.16.1" and r0["model"]["sha256"] and r0["model"]["vocab_size"] == 30522
    assert r0["thermal"]["before"]["status"] == 0 and r0["thermal"]["rose"] is False
    assert r0["cpu"]["before"]["governor"] == ["schedutil"] * 8 and len(r0["cpu"]["after"]["cur_freq_khz"]) == 8
    assert os.path.isfile(r0["raw_output"]) and "Inference timings in us" in open(r0["raw_output"]).read()
    assert any("p50_ms" in r["figures"] for r in recs if r["device"]["serial"] == b.serial)
    # the phones ran at the same time (one thread per device)
    ta = [c["started"] for c in a.bench_calls]
    tb = [c["started"] for c in b.bench_calls]
    assert min(ta) < max(tb) and min(tb) < max(ta)

    # --resume: nothing left to do; the device is not even written to
    n_cmds = len(a.commands)
    rc, out, err = bench(tiny_model, f"{a.serial},{b.serial}", res, "--threads", "1,2", "--delegate",
                         "xnnpack,cpu", "--resume")
    assert rc == 0, err
    assert len(lines(res)) == 8 and len(a.bench_calls) == 4 and "4 already done" in out
    assert not any("mkdir" in c for c in a.commands[n_cmds:])
    # an interrupted file: the last line cut short -> only that configuration runs again
    text = res.read_text().splitlines(True)
    res.write_text("".join(text[:-1]) + text[-1][: len(text[-1]) // 2])
    rc, out, err = bench(tiny_model, f"{a.serial},{b.serial}", res, "--threads", "1,2", "--delegate",
                         "xnnpack,cpu", "--resume")
    assert rc == 0, err
    assert len(a.bench_calls) + len(b.bench_calls) == 9

    # report
    rc, out, err = run_cli("bench-report", str(res), "--out", str(tmp_path / "rep"))
    assert rc == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Pixel 4" in md and "Pixel 2" in md and md.count("| tiny_bert.tflite |") == 8
    png = (tmp_path / "rep" / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, _ = run_cli("bench-report", str(res), "--out", str(tmp_path / "rep"), "--json")
    summary = json.loads(out)
    assert len(summary["rows"]) == 8 and summary["failures"] == 0


def test_bench_bundle_reads_vocab_and_quotes_hostile_names(standin, tiny_model, bench_binary, tmp_path):
    """A file name with spaces, quotes and ';' reaches the device shell quoted: no command is injected."""
    d = standin(pixel4(output_format="results-block"))
    bundle = tmp_path / "bun dle"
    bundle.mkdir()
    name = "tiny ';touch INJECTED; echo \"x $(id) && touch INJECTED2.tflite"
    shutil.copy(tiny_model, bundle / name)
    (bundle / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(30000)) + "\n")
    from mobilebert_mobile._io import sha256_file

    manifest = {"format": "mobilebert-mobile-bundle", "task": "classification", "labels": ["neg", "pos"],
                "max_seq_length": 128, "default_model": "fp32",
                "models": {"fp32": {"file": name, "sha256": sha256_file(bundle / name)}},
                "inputs": [{"name": n, "dtype": "int32", "shape": [1, 128]}
                           for n in ("input_ids", "attention_mask", "token_type_ids")],
                "outputs": [{"name": "logits"}]}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(str(bundle), d.serial, res, "--threads", "1", "--benchmark-binary", bench_binary)
    assert rc == 0, err + out
    rec = lines(res)[0]
    assert rec["status"] == "ok" and rec["figures"]["format"] == "litert-results"
    assert rec["model"]["precision"] == "fp32" and rec["model"]["vocab_size"] == 30000
    assert d.bench_calls[0]["inputs"]["input_ids"]["high"] == 29999
    assert d.bench_calls[0]["flags"]["graph"] == f"/data/local/tmp/mobilebert-mobile/{name}"
    assert ("SEND", f"/data/local/tmp/mobilebert-mobile/{name},33188") in d.sync_ops or \
        any(op == "SEND" and p.startswith(f"/data/local/tmp/mobilebert-mobile/{name},") for op, p in d.sync_ops)
    for _, _, files in os.walk(d.root):
        assert not any(f.startswith("INJECTED") for f in files)
    from adb_standin.shell import tokenize

    for c in d.commands:  # every hostile name arrived as one word
        words = [v for k, v in tokenize(c) if k == "word"]
        assert "touch" not in words and all(k == "word" for k, _ in tokenize(c))
    assert d.files() == []


# ------------------------------------------------------------------------------------------ thermal
def test_cooldown_wait_and_heat_up_flag(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(hot_for_s=2.0, heat_on_run=True, heat_cool_s=1.5))
    res = tmp_path / "r.jsonl"
    rc, out, err = run_cli("bench", tiny_model, "--device", d.serial, "--results", str(res), *FAST[:8],
                           "--threads", "1,2", "--cooldown-timeout", "20", "--cooldown-poll", "0.1",
                           "--benchmark-binary", bench_binary)  # progress bars on
    assert rc == 0, err
    r1, r2 = lines(res)
    assert r1["thermal"]["cooldown_s"] > 0 and not r1["thermal"]["cooldown_timed_out"]
    assert r1["thermal"]["before"]["status"] == 0 and r1["thermal"]["rose"] is True  # heated during the run
    assert r1["thermal"]["after"]["status"] == 2 and r1["thermal"]["after"]["battery_c"] == 45.2
    assert r2["thermal"]["cooldown_s"] > 0 and r2["thermal"]["before"]["status"] == 0
    assert "cooling down" in err and "thermal status rose" in err
    # the bench happened only after the phone was cool
    assert d.bench_calls[0]["started"] >= d.started_at + 2.0
    assert d.bench_calls[1]["started"] >= d.bench_calls[0]["ended"] + 1.4  # waited for the heat to go


def test_cooldown_timeout_is_bounded_and_flagged(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(hot_for_s=600))
    res = tmp_path / "r.jsonl"
    t0 = time.time()
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1", "--cooldown-timeout", "0.5",
                         "--benchmark-binary", bench_binary, "--op-profiling")
    assert time.time() - t0 < 30
    rec = lines(res)[0]
    ops = {r["node type"] for r in rec["figures"]["op_profile"]["Summary by node type"]}
    assert "GATHER" in ops and rec["config"]["op_profiling"] is True
    assert rec["status"] == "ok" and rec["thermal"]["cooldown_timed_out"] is True
    assert rec["thermal"]["before"]["status"] == 2
    assert "still warm" in err
    rc, out, err = run_cli("bench-report", str(res), "--out", str(tmp_path / "rep"))
    assert "started warm" in (tmp_path / "rep" / "report.md").read_text()


# ------------------------------------------------------------------------------------------ faults
def test_no_adb_installed(android_env, monkeypatch, tiny_model, tmp_path):
    rc, out, err = run_cli("devices", "--adb", str(tmp_path / "nope" / "adb"))
    assert rc == 2 and "adb not found" in err and "apt-get install adb" in err
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("MOBILEBERT_ADB", raising=False)
    rc, out, err = run_cli("bench", tiny_model, "--results", str(tmp_path / "r.jsonl"))
    assert rc == 2 and "was not found" in err and "--adb PATH" in err
    monkeypatch.setenv("MOBILEBERT_ADB", str(tmp_path / "missing-adb"))
    rc, out, err = run_cli("devices")
    assert rc == 2 and "MOBILEBERT_ADB" in err


def test_no_device_and_unknown_serial(android_env, tiny_model, tmp_path):
    rc, out, err = bench(tiny_model, "all", tmp_path / "r.jsonl")
    assert rc == 2 and "none attached" in err
    rc, out, err = bench(tiny_model, "10.1.2.3:5555", tmp_path / "r.jsonl")
    assert rc == 2 and "10.1.2.3:5555: not attached" in err
    rc, out, err = run_cli("devices")
    assert rc == 0 and "no devices attached" in out


def test_unauthorized_and_offline_devices(standin, tiny_model, bench_binary, tmp_path):
    un = standin(Profile(unauthorized=True))
    off = standin(pixel4())
    off.disconnect()  # the cable is pulled: adb keeps it as "offline"
    deadline = time.time() + 10
    while time.time() < deadline and f"{off.serial}\toffline" not in adb("devices").stdout:
        time.sleep(0.1)
    rc, out, err = run_cli("devices", "--json")
    states = {r["serial"]: r["state"] for r in json.loads(out)}
    assert states[un.serial] == "unauthorized" and states[off.serial] == "offline"
    rc, out, err = bench(tiny_model, f"{un.serial},{off.serial}", tmp_path / "r.jsonl", "--benchmark-binary",
                         bench_binary)
    assert rc == 2
    assert f"{un.serial}: device is unauthorized" in err and "Allow USB debugging" in err
    assert f"{off.serial}: device is offline" in err


def test_disconnect_mid_run_keeps_finished_results_and_other_phone(standin, tiny_model, bench_binary, tmp_path):
    flaky = standin(pixel4(disconnect_on_run=2))
    good = standin(pixel2())
    res = tmp_path / "r.jsonl"
    t0 = time.time()
    rc, out, err = bench(tiny_model, f"{flaky.serial},{good.serial}", res, "--threads", "1,2,4",
                         "--benchmark-binary", bench_binary, "--run-timeout", "30")
    assert time.time() - t0 < 60
    assert rc == 1
    recs = lines(res)
    mine = [r for r in recs if r["device"]["serial"] == flaky.serial]
    assert [r["status"] for r in mine] == ["ok", "failed"]
    assert "during benchmark_model" in mine[1]["error"] and "--resume" in mine[1]["error"]
    assert [r["status"] for r in recs if r["device"]["serial"] == good.serial] == ["ok"] * 3
    assert f"{flaky.serial}: 1 ok, 1 failed" in out and "--resume" in err
    assert good.files() == []


def test_missing_and_wrong_abi_binary(standin, tiny_model, fresh_cache, tmp_path):
    d = standin(pixel4())
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res)
    assert rc == 1 and "no benchmark_model binary for ABI arm64-v8a" in err
    assert "android_aarch64_benchmark_model" in err and "--benchmark-binary" in err
    assert d.sync_ops == []  # nothing pushed
    x86 = fake_elf(str(tmp_path / "benchmark_model_x86_64"), 62)
    rc, out, err = bench(tiny_model, d.serial, res, "--benchmark-binary", x86, "--abi", "arm64-v8a")
    assert rc == 2 and "built for x86_64 (ELF e_machine 62) but --abi says arm64-v8a" in err
    rc, out, err = bench(tiny_model, d.serial, res, "--benchmark-binary", x86)  # cached as x86_64
    assert rc == 1 and "no benchmark_model binary for ABI arm64-v8a" in err
    text = tmp_path / "not-elf"
    text.write_text("#!/bin/sh\necho hi\n")
    rc, out, err = bench(tiny_model, d.serial, res, "--benchmark-binary", str(text))
    assert rc == 2 and "not an Android executable" in err
    # a cached binary that is not what its ABI says (replaced by hand)
    arm = fake_elf(str(tmp_path / "android_aarch64_benchmark_model"), 183)
    assert bench(tiny_model, d.serial, res, "--benchmark-binary", arm, "--threads", "1")[0] == 0
    fake_elf(os.path.join(fresh_cache, "android", "benchmark_model", "arm64-v8a", "benchmark_model"), 40)
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "4")
    assert rc == 1 and "wrong ABI" in err
    assert d.files() == []


def test_model_too_large_for_free_space(standin, tiny_model, bench_binary, tmp_path):
    small = standin(pixel4(free_kb=600))  # the 1 MB model does not fit
    rc, out, err = bench(tiny_model, small.serial, tmp_path / "r.jsonl", "--benchmark-binary", bench_binary)
    assert rc == 1 and "not enough free space" in err and "MiB free" in err
    assert not any(op == "SEND" for op, _ in small.sync_ops)
    assert any(c.startswith("df -k") for c in small.commands)


def test_stale_work_directory_is_removed_before_the_space_check(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(free_kb=3000))
    stale = os.path.join(d.root, "data/local/tmp/mobilebert-mobile")
    os.makedirs(stale)
    with open(os.path.join(stale, "old-model.tflite"), "wb") as fh:
        fh.write(b"\0" * 2_500_000)  # an interrupted run's leftovers fill the device
    rc, out, err = bench(tiny_model, d.serial, tmp_path / "r.jsonl", "--threads", "1",
                         "--benchmark-binary", bench_binary)
    assert rc == 0, err
    assert d.files() == []
    assert lines(tmp_path / "r.jsonl")[0]["host"]["adb"].startswith("1.0.")


def test_push_fails_no_space(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(push_fails_no_space=True))
    rc, out, err = bench(tiny_model, d.serial, tmp_path / "r.jsonl", "--benchmark-binary", bench_binary)
    assert rc == 1 and "no space left on the device" in err and "No space left on device" in err
    assert d.files() == []  # cleaned


def test_benchmark_crash(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(bench_crash=True))
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1,4", "--benchmark-binary", bench_binary)
    assert rc == 1
    recs = lines(res)
    assert len(recs) == 2 and all(r["status"] == "failed" for r in recs)
    assert "exited with code 139 (killed by SIGSEGV: the tool crashed)" in recs[0]["error"]
    assert "Segmentation fault" in open(recs[0]["raw_output"]).read()
    assert d.files() == []


def test_benchmark_hang_times_out(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(bench_hang=True))
    res = tmp_path / "r.jsonl"
    t0 = time.time()
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1", "--run-timeout", "2",
                         "--benchmark-binary", bench_binary)
    assert time.time() - t0 < 30
    assert rc == 1
    rec = lines(res)[0]
    assert rec["status"] == "failed" and "did not finish within 2 s" in rec["error"]
    deadline = time.time() + 5
    while time.time() < deadline and not d.bench_calls[0].get("killed"):
        time.sleep(0.05)
    assert d.bench_calls[0].get("killed")  # stopped on the device, not only the local adb client
    assert d.running() == [] and d.kills and d.kills[0]["signal"] == 9
    assert "stopped on the device too" in rec["error"] and rec["stopped_on_device"]
    assert d.files() == []


def test_unparseable_output(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(bench_garbage=True))
    good = standin(pixel2())
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, f"{d.serial},{good.serial}", res, "--threads", "1",
                         "--benchmark-binary", bench_binary)
    assert rc == 1
    by = {r["device"]["serial"]: r for r in lines(res)}
    assert by[d.serial]["status"] == "failed" and "could not parse benchmark_model output" in by[d.serial]["error"]
    assert by[good.serial]["status"] == "ok"
    rc, out, err = run_cli("bench-report", str(res), "--out", str(tmp_path / "rep"))
    assert rc == 0 and "## Failed runs" in out and "could not parse" in out


def test_bad_inputs(android_env, tmp_path, tiny_model):
    rc, out, err = run_cli("bench", str(tmp_path / "missing.tflite"))
    assert rc == 2 and "model not found" in err
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    rc, out, err = run_cli("bench", str(junk))
    assert rc == 2 and "not a TFLite model" in err
    rc, out, err = run_cli("bench", tiny_model, "--delegate", "tpu")
    assert rc == 2 and "unknown delegate tpu" in err
    rc, out, err = run_cli("bench", tiny_model, "--threads", "x")
    assert rc == 2 and "--threads" in err
    rc, out, err = run_cli("bench-report", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "results file not found" in err
    (tmp_path / "empty.jsonl").write_text("{broken\n")
    rc, out, err = run_cli("bench-report", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "holds no benchmark results" in err


def test_harness_imports_nothing_heavy():
    code = ("import sys, mobilebert_mobile.android_harness.cli, mobilebert_mobile.android_harness.bench, "
            "mobilebert_mobile.android_harness.report; "
            "bad = [m for m in ('torch', 'tensorflow', 'ai_edge_litert', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["a b.tflite", "it's.tflite", "x;rm -rf y.tflite"])
def test_sh_join_round_trips_through_the_standin_shell(name):
    from adb_standin.shell import tokenize
    from mobilebert_mobile.android_harness.adb import sh_join

    line = sh_join(["taskset", "f0", "/data/local/tmp/b", f"--graph=/data/local/tmp/{name}"])
    assert [v for _, v in tokenize(line)] == ["taskset", "f0", "/data/local/tmp/b", f"--graph=/data/local/tmp/{name}"]


def test_interrupt_stops_each_phone_cleanly(standin, tiny_model, bench_binary, tmp_path):
    """Ctrl-C sets the stop event: phones finish their current run, clean up and report it."""
    from mobilebert_mobile.android_harness import binary as binmod
    from mobilebert_mobile.android_harness.adb import Adb
    from mobilebert_mobile.android_harness.bench import Config, Options, resolve_models, run_bench

    a, b = standin(pixel4(hot_for_s=600)), standin(pixel2())
    binmod.install(bench_binary)
    opts = Options(cooldown_timeout=60, cooldown_poll=0.1, progress=False, log=lambda m: None)
    import threading

    threading.Timer(0.5, opts.stop.set).start()
    t0 = time.time()
    outs = run_bench(Adb(), [a.serial, b.serial], resolve_models(tiny_model),
                     [Config(threads=t, num_runs=2, min_secs=0, warmup_min_secs=0) for t in (1, 2, 3, 4)],
                     str(tmp_path / "r.jsonl"), opts)
    assert time.time() - t0 < 30
    by = {o["serial"]: o for o in outs}
    assert by[a.serial]["kind"] == "interrupted" and by[a.serial]["ok"] == 0  # was cooling down
    assert "--resume" in by[a.serial]["error"]
    assert a.files() == [] and b.files() == []


# ------------------------------------------------------------------------------------------ issue 13
def test_input_layers_follow_the_model_input_order(standin, tiny_model, bench_binary, tmp_path):
    """--input_layer lists every input in the model's own order (the tool matches by position); with the real
    tool's handling a range without --input_layer aborts, so the run only succeeds with all three flags."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=tiny_model).get_input_details()
    order = [x["name"] for x in details]
    d = standin(pixel4())
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1", "--benchmark-binary", bench_binary)
    assert rc == 0, err + out
    call = d.bench_calls[0]
    assert call["flags"]["input_layer"] == ",".join(order)
    assert call["flags"]["input_layer_shape"] == ":".join(",".join(map(str, x["shape"])) for x in details)
    assert [r.split(",")[0] for r in call["flags"]["input_layer_value_range"].split(":")] == order
    assert all(v["flag_name"] == k and v["given"] for k, v in call["inputs"].items())
    raw = open(lines(res)[0]["raw_output"]).read()
    assert "WARN: Tensor #" not in raw and "Unconsumed" not in raw


def test_cores_per_thread_count_on_a_pixel6(standin, tiny_model, bench_binary, tmp_path):
    """4 little 1.8 GHz + 2 mid 2.25 GHz + 2 prime 2.8 GHz: 1-2 threads on the prime cores only."""
    d = standin(pixel6())
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1,2,4,8", "--benchmark-binary", bench_binary)
    assert rc == 0, err + out
    by = {r["config"]["threads"]: r["affinity"] for r in lines(res)}
    assert by[1] == {"taskset_mask": "80", "cores": [7], "max_freq_khz": [2802000]}
    assert by[2] == {"taskset_mask": "c0", "cores": [6, 7], "max_freq_khz": [2802000] * 2}
    assert by[4] == {"taskset_mask": "f0", "cores": [4, 5, 6, 7], "max_freq_khz": [2253000] * 2 + [2802000] * 2}
    assert by[8]["taskset_mask"] == "ff" and by[8]["cores"] == list(range(8))
    assert [c["mask"] for c in d.bench_calls] == ["80", "c0", "f0", "ff"]
    from mobilebert_mobile.android_harness.devices import cores_for_threads

    assert cores_for_threads([1785600] * 4 + [2419200] * 3 + [2841600], 2) == [6, 7]  # Pixel 4: prime + one big


def test_gpu_unavailable_and_failing_delegate_are_failures_with_the_tool_lines(standin, tiny_model, bench_binary,
                                                                               tmp_path):
    d = standin(pixel4(gpu_available=False, failing_delegates=("NNAPI",)))
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1", "--delegate", "gpu,nnapi,xnnpack",
                         "--benchmark-binary", bench_binary)
    assert rc == 1
    by = {r["config"]["delegate"]: r for r in lines(res)}
    assert by["xnnpack"]["status"] == "ok"
    g = by["gpu"]["error"]
    assert g.startswith("benchmark_model exited with code 1: ")
    assert g.endswith("ERROR: Failed to apply GPU delegate. | ERROR: Benchmarking failed.")
    assert "ERROR: Failed to apply NNAPI delegate." in by["nnapi"]["error"]


def test_error_summary_shows_the_lines_just_before_the_abort(standin, tiny_model, bench_binary, tmp_path,
                                                            monkeypatch):
    """The FATAL of a range naming an input missing from --input_layer (what every real phone run hit)."""
    from mobilebert_mobile.android_harness import bench as benchmod

    monkeypatch.setattr(benchmod.ModelSpec, "input_flags",
                        lambda self: [f"--input_layer_value_range={self.range_flag()}"])  # the old command
    d = standin(pixel4())
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1", "--benchmark-binary", bench_binary)
    assert rc == 1
    e = lines(res)[0]["error"]
    assert "exited with code 134 (killed by SIGABRT: the tool aborted" in e
    assert e.endswith("INFO: STARTING! | FATAL: Cannot find the corresponding input_layer name(input_ids) in "
                      "--input_layer as | Aborted")


def test_timeout_after_warmup_stops_the_tool_and_is_not_a_result(standin, tiny_model, bench_binary, tmp_path):
    d = standin(pixel4(bench_hang_after_warmup=True))
    res = tmp_path / "r.jsonl"
    rc, out, err = bench(tiny_model, d.serial, res, "--threads", "1,2", "--run-timeout", "3",
                         "--benchmark-binary", bench_binary)
    assert rc == 1
    recs = lines(res)
    assert [r["status"] for r in recs] == ["failed", "failed"] and "figures" not in recs[0]
    assert "did not finish within 3 s" in recs[0]["error"] and "count=" in recs[0]["error"]
    # each run was killed on the device before the next configuration started
    assert [c["others_running"] for c in d.bench_calls] == [[], []]
    assert all(c.get("killed") for c in d.bench_calls) and len(d.kills) >= 2
    assert d.running() == [] and d.files() == []


def test_interrupt_during_a_run_stops_it_on_the_device(standin, tiny_model, bench_binary, tmp_path):
    import threading

    from mobilebert_mobile.android_harness import binary as binmod
    from mobilebert_mobile.android_harness.adb import Adb
    from mobilebert_mobile.android_harness.bench import Config, Options, resolve_models, run_bench

    d = standin(pixel4(bench_hang=True))
    binmod.install(bench_binary)
    opts = Options(cooldown_poll=0.1, progress=False, run_timeout=120, log=lambda m: None)
    threading.Timer(3.0, opts.stop.set).start()
    t0 = time.time()
    outs = run_bench(Adb(), [d.serial], resolve_models(tiny_model), [Config(threads=1), Config(threads=2)],
                     str(tmp_path / "r.jsonl"), opts)
    assert time.time() - t0 < 60
    assert outs[0]["kind"] == "interrupted" and len(d.bench_calls) == 1
    assert d.bench_calls[0].get("killed") and d.running() == [] and d.files() == []
    rec = lines(tmp_path / "r.jsonl")[0]
    assert rec["status"] == "failed" and "interrupted" in rec["error"] and rec["stopped_on_device"]
