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
    assert d.bench_calls[0]["inputs"]["input_ids"] == {"low": 0, "high": 99, "given": False}  # the tool's default
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
