"""The adb device stand-in against the real adb client (Debian's adb): handshake, shell v2 exit codes and
stream separation, the v1 shell, sync push/pull/stat/list, AUTH, FAIL and disconnects; and its small shell."""
import os
import time

import pytest
from adb_standin import Profile, pixel4
from adb_standin.shell import ShellSyntaxError, tokenize
from conftest_android import *  # noqa: F401,F403
from conftest_android import adb


def test_connect_and_devices_l_shows_the_banner(standin):
    d = standin(pixel4())
    out = adb("devices", "-l").stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(d.serial))
    assert "device" in line.split() and "product:flame" in line and "model:Pixel_4" in line
    assert adb("-s", d.serial, "get-state").stdout.strip() == "device"


def test_shell_v2_exit_codes_and_separate_streams(standin):
    d = standin(pixel4())
    r = adb("-s", d.serial, "shell", "echo out; cat /nope; getprop ro.product.model")
    assert r.returncode == 1 - 1 and r.stdout == "out\nPixel 4\n"  # the last command decides the status
    assert "cat: /nope: No such file or directory" in r.stderr
    assert adb("-s", d.serial, "shell", "exit 3").returncode == 3
    r = adb("-s", d.serial, "shell", "frobnicate")
    assert r.returncode == 127 and "inaccessible or not found" in r.stderr
    r = adb("-s", d.serial, "shell", "false && echo no || echo yes")
    assert r.returncode == 0 and r.stdout == "yes\n"
    r = adb("-s", d.serial, "shell", "echo a | cat")
    assert r.returncode == 2 and "unsupported shell syntax" in r.stderr


def test_shell_v1_without_the_shell_protocol(standin):
    d = standin(pixel4())
    r = adb("-s", d.serial, "shell", "-x", "echo hello; getprop ro.build.version.sdk")
    assert r.stdout.replace("\r\n", "\n") == "hello\n30\n"
    assert any(c == "echo hello; getprop ro.build.version.sdk" for c in d.commands)


def test_sync_push_pull_stat_and_list(standin, tmp_path):
    d = standin(pixel4())
    data = os.urandom(2_500_000)  # > 1 MiB max payload, many 64 KiB DATA chunks
    src = tmp_path / "a file 'with' quotes;.bin"
    src.write_bytes(data)
    os.chmod(src, 0o755)
    assert adb("-s", d.serial, "shell", "mkdir -p '/data/local/tmp/d x'").returncode == 0
    r = adb("-s", d.serial, "push", str(src), "/data/local/tmp/d x/")
    assert r.returncode == 0, r.stderr
    remote = "/data/local/tmp/d x/a file 'with' quotes;.bin"
    host = os.path.join(d.root, remote.lstrip("/"))
    assert open(host, "rb").read() == data and os.stat(host).st_mode & 0o777 == 0o755
    ops = [op for op, _ in d.sync_ops]
    assert "STA2" in ops and "SEND" in ops
    back = tmp_path / "back.bin"
    r = adb("-s", d.serial, "pull", remote, str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == data
    # a directory pull lists it (ls_v2) and stats the entries
    r = adb("-s", d.serial, "pull", "/data/local/tmp/d x", str(tmp_path / "dir"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dir" / "a file 'with' quotes;.bin").read_bytes() == data
    assert any(op in ("LIS2", "LIST") for op, _ in d.sync_ops)
    r = adb("-s", d.serial, "pull", "/data/local/tmp/missing", str(tmp_path / "m"))
    assert r.returncode != 0 and "failed to stat remote object" in r.stdout + r.stderr


def test_old_device_without_shell_v2_stat_v2_ls_v2(standin, tmp_path):
    """adb falls back to `shell:` (no exit code) and to STAT/LIST for a device without the v2 features."""
    d = standin(pixel4(features="fixed_push_mkdir"))
    r = adb("-s", d.serial, "shell", "echo old; exit 3")
    assert r.stdout.replace("\r\n", "\n") == "old\n" and r.returncode == 0  # v1 has no exit codes
    (tmp_path / "f").write_bytes(b"y" * 70000)
    assert adb("-s", d.serial, "push", str(tmp_path / "f"), "/data/local/tmp/o/f").returncode == 0
    r = adb("-s", d.serial, "pull", "/data/local/tmp/o", str(tmp_path / "o"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "o" / "f").read_bytes() == b"y" * 70000
    ops = {op for op, _ in d.sync_ops}
    assert {"STAT", "LIST", "SEND", "RECV"} <= ops and not ops & {"STA2", "LIS2", "LST2"}


def test_push_fail_message_reaches_adb(standin, tmp_path):
    d = standin(pixel4(push_fails_no_space=True))
    (tmp_path / "f").write_bytes(b"x" * 1000)
    r = adb("-s", d.serial, "push", str(tmp_path / "f"), "/data/local/tmp/f")
    assert r.returncode != 0 and "No space left on device" in r.stderr + r.stdout
    assert d.files() == []


def test_unauthorized_device(standin):
    d = standin(Profile(unauthorized=True))
    assert f"{d.serial}\tunauthorized" in adb("devices").stdout
    r = adb("-s", d.serial, "shell", "echo hi")
    assert r.returncode != 0 and "unauthorized" in r.stderr
    assert d.commands == []


def test_disconnect_turns_the_device_offline(standin):
    d = standin(pixel4())
    assert adb("-s", d.serial, "shell", "echo hi").stdout == "hi\n"
    d.disconnect()
    deadline = time.time() + 10
    while time.time() < deadline and f"{d.serial}\toffline" not in adb("devices").stdout:
        time.sleep(0.1)
    r = adb("-s", d.serial, "shell", "echo hi")
    assert r.returncode != 0 and "offline" in r.stderr


def test_benchmark_standin_through_adb(standin, tiny_model, bench_binary):
    d = standin(pixel4())
    for local, remote in ((bench_binary, "/data/local/tmp/bm"), (tiny_model, "/data/local/tmp/m.tflite")):
        assert adb("-s", d.serial, "push", local, remote).returncode == 0
    r = adb("-s", d.serial, "shell", "/data/local/tmp/bm --graph=/data/local/tmp/m.tflite --num_runs=2 "
                                     "--min_secs=0 --warmup_min_secs=0")
    assert r.returncode == 0, r.stderr
    assert "count=2 " in r.stdout and "Inference timings in us: Init:" in r.stdout
    assert d.bench_calls[0]["inputs"]["input_ids"] == {"low": 0, "high": 99, "given": False,
                                                         "flag_name": None}  # the tool's default
    r = adb("-s", d.serial, "shell", "chmod 644 /data/local/tmp/bm; /data/local/tmp/bm")
    assert r.returncode == 126 and "Permission denied" in r.stderr
    r = adb("-s", d.serial, "shell", "taskset 100 /data/local/tmp/bm")
    assert r.returncode == 1 and "Invalid argument" in r.stderr  # core 8 does not exist


def test_virtual_proc_and_sys_files(standin):
    d = standin(pixel4())
    r = adb("-s", d.serial, "shell", "grep -H . /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor "
                                     "/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq")
    assert r.stdout.splitlines() == ["/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor:schedutil",
                                     "/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq:2841600"]
    cpuinfo = adb("-s", d.serial, "shell", "cat /proc/cpuinfo").stdout
    assert cpuinfo.count("processor\t:") == 8
    th = adb("-s", d.serial, "shell", "dumpsys thermalservice").stdout
    assert "Thermal Status: 0" in th and "mName=battery" in th
    assert "temperature: 301" in adb("-s", d.serial, "shell", "dumpsys battery").stdout
    df = adb("-s", d.serial, "shell", "df -k /data/local/tmp").stdout.splitlines()
    assert df[0].split()[3] == "Available" and int(df[1].split()[3]) > 1000


@pytest.mark.parametrize("line,words", [
    ("a 'b c' \"d e\" f\\ g", ["a", "b c", "d e", "f g"]),
    ("x'y'\"z\"", ["xyz"]),
    ("'it'\\''s'", ["it's"]),
    ("'a;b' ';' '&&'", ["a;b", ";", "&&"]),
])
def test_tokenizer_quoting(line, words):
    toks = tokenize(line)
    assert all(k == "word" for k, _ in toks) and [v for _, v in toks] == words


def test_tokenizer_operators_and_rejections():
    assert tokenize("a;b && c || d") == [("word", "a"), ("op", ";"), ("word", "b"), ("op", "&&"),
                                         ("word", "c"), ("op", "||"), ("word", "d")]
    for bad in ("a | b", "a > f", "echo $HOME", "echo `id`", "ls *", "echo 'open", "echo \"$x\""):
        with pytest.raises(ShellSyntaxError):
            tokenize(bad)


# ------------------------------------------------------------------ benchmark_model flag handling (real tool's)
def _push_tool(d, tiny_model, bench_binary):
    for local, remote in ((bench_binary, "/data/local/tmp/bm"), (tiny_model, "/data/local/tmp/m.tflite")):
        assert adb("-s", d.serial, "push", local, remote).returncode == 0


FAST_RUN = "/data/local/tmp/bm --graph=/data/local/tmp/m.tflite --num_runs=1 --min_secs=0 --warmup_min_secs=0 "


@pytest.mark.parametrize("flags,rc,stderr_has,stdout_has", [
    # benchmark_tflite_model.cc PopulateInputValueRanges -> FindLayerInfoIndex: TFLITE_LOG(FATAL) -> abort
    ("--input_layer_value_range=input_ids,0,30521", 134,
     ["FATAL: Cannot find the corresponding input_layer name(input_ids) in --input_layer as ", "Aborted"], []),
    ("--input_layer=input_ids --input_layer_shape=1,128 --input_layer_value_range=attention_mask,1,1", 134,
     ["FATAL: Cannot find the corresponding input_layer name(attention_mask) in --input_layer as input_ids"], []),
    # PopulateInputLayerInfo: TFLITE_TOOLS_CHECK(SplitAndParse(...)) -> abort
    ("--input_layer=input_ids --input_layer_shape=1,x", 134, ["FATAL: Incorrect size string specified: 1,x"], []),
    ("--input_layer=a,b --input_layer_shape=1,128", 1,
     ["ERROR: The number of items in --input_layer_shape (1,128, with 1 items) must match the number of items in "
      "--input_layer (a,b, with 2 items).", "ERROR: Benchmarking failed."], []),
    ("--input_layer=a --input_layer_shape=1,-1", 1, ["Any unknown sizes in the shapes (-1's)"], []),
    ("--input_layer=a --input_layer_shape=1,128 --input_layer_value_range=a,5,1", 1,
     ["ERROR: Wrong low and high value of the input value range specified: a,5,1"], []),
    ("--input_layer=a --input_layer_shape=1,128 --input_layer_value_range=a,1", 1,
     ["ERROR: Wrong input value range item specified: a,1"], []),
    # the model has 3 inputs: TFLITE_TOOLS_CHECK_EQ -> abort
    ("--input_layer=a --input_layer_shape=1,128", 134, ["FATAL: Inputs mismatch: Model inputs #:1 expected: 3"], []),
    # command_line_flags.cc: a value that does not parse fails with the usage text; unknown flags only warn
    ("--num_threads=abc", 1, ["ERROR: Failed to parse flag 'num_threads' against argv '--num_threads=abc'",
                              "usage: /data/local/tmp/bm <flags>", "ERROR: Benchmarking failed."], []),
    ("--use_xnnpack=yes", 1, ["ERROR: Failed to parse flag 'use_xnnpack' against argv '--use_xnnpack=yes'"], []),
    ("--frobnicate=1 --use_gpu --num_threads=2x", 0, [],
     ["WARN: Unconsumed cmdline flags: --frobnicate=1 --use_gpu", "INFO: Num threads: [2]", "count=1"]),
])
def test_benchmark_standin_flag_handling(standin, tiny_model, bench_binary, flags, rc, stderr_has, stdout_has):
    d = standin(pixel4())
    _push_tool(d, tiny_model, bench_binary)
    r = adb("-s", d.serial, "shell", FAST_RUN + flags)
    assert r.returncode == rc, r.stdout + r.stderr
    assert r.stdout.startswith("INFO: STARTING!\n")
    for s in stderr_has:
        assert s in r.stderr, r.stderr
    for s in stdout_has:
        assert s in r.stdout, r.stdout
    if rc == 134:
        assert r.stderr.rstrip().endswith("Aborted") and "count=" not in r.stdout


def test_benchmark_standin_needs_graph_and_matches_inputs_by_position(standin, tiny_model, bench_binary):
    d = standin(pixel4())
    _push_tool(d, tiny_model, bench_binary)
    r = adb("-s", d.serial, "shell", "/data/local/tmp/bm --num_runs=1")
    assert r.returncode == 1 and "ERROR: Please specify the name of your TF Lite input file with --graph" in r.stderr
    from ai_edge_litert.interpreter import Interpreter

    order = [x["name"] for x in Interpreter(model_path=tiny_model).get_input_details()]
    wrong = list(reversed(order))
    r = adb("-s", d.serial, "shell", FAST_RUN + f"--input_layer={','.join(wrong)} "
            "--input_layer_shape=1,128:1,128:1,128 " + f"--input_layer_value_range={wrong[0]},7,7")
    assert r.returncode == 0, r.stderr
    assert "WARN: Tensor # " in r.stdout and f"is named {order[0]} but flags call it {wrong[0]}" in r.stdout
    # the range went to the model's *first* input, whatever its name
    assert d.bench_calls[-1]["inputs"][order[0]] == {"low": 7, "high": 7, "given": True, "flag_name": wrong[0]}


def test_benchmark_standin_gpu_missing_and_failing_delegate(standin, tiny_model, bench_binary):
    d = standin(pixel4(gpu_available=False, failing_delegates=("NNAPI",)))
    _push_tool(d, tiny_model, bench_binary)
    r = adb("-s", d.serial, "shell", FAST_RUN + "--use_gpu=true")
    assert r.returncode == 1
    assert "INFO: GPU delegate created." in r.stdout and "INFO: Going to apply 1 delegates" in r.stdout
    assert "TfLiteGpuDelegate Init: Can not open OpenCL library" in r.stderr
    assert r.stderr.splitlines()[-3:] == ["ERROR: Restored original execution plan after delegate application failure.",
                                          "ERROR: Failed to apply GPU delegate.", "ERROR: Benchmarking failed."]
    r = adb("-s", d.serial, "shell", FAST_RUN + "--use_nnapi=true")
    assert r.returncode == 1 and "ERROR: Failed to apply NNAPI delegate." in r.stderr
    r = adb("-s", d.serial, "shell", FAST_RUN + "--use_xnnpack=true")
    assert r.returncode == 0 and "Explicitly applied XNNPACK delegate" in r.stdout


def test_benchmark_survives_hangup_until_killed(standin, tiny_model, bench_binary):
    """A real adbd does not stop a raw shell's process when the host hangs up: only pkill does."""
    import subprocess

    d = standin(pixel4(bench_hang=True))
    _push_tool(d, tiny_model, bench_binary)
    with pytest.raises(subprocess.TimeoutExpired):
        adb("-s", d.serial, "shell", FAST_RUN, timeout=2)
    time.sleep(0.5)
    assert [p.cmdline.split()[0] for p in d.running()] == ["/data/local/tmp/bm"]
    pid = d.running()[0].pid
    r = adb("-s", d.serial, "shell", "pgrep -f '^/data/local/tmp/bm'")
    assert r.returncode == 0 and r.stdout.split() == [str(pid)]
    assert adb("-s", d.serial, "shell", "pkill -KILL -f '^/data/local/tmp/bm'").returncode == 0
    deadline = time.time() + 5
    while time.time() < deadline and d.running():
        time.sleep(0.05)
    assert d.running() == [] and d.bench_calls[0]["killed"]
    assert adb("-s", d.serial, "shell", "pgrep -f '^/data/local/tmp/bm'").returncode == 1


def test_shell_output_keeps_arrival_order(standin, android_env):
    """stderr that came before stdout stays before it (shell v2 sends them as separate streams)."""
    from mobilebert_mobile.android_harness.adb import Adb

    d = standin(pixel4())
    res = Adb().shell(d.serial, "cat /nope; sleep 0.3; echo after", timeout=30)
    assert res.rc == 0 and res.stdout == "after\n" and "No such file" in res.stderr
    assert res.output.splitlines() == ["cat: /nope: No such file or directory", "after"]
    assert res.tail(2) == "cat: /nope: No such file or directory | after"
