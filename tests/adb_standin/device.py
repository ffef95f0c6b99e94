"""A stand-in phone: listens on 127.0.0.1, speaks the adb device protocol, keeps its files in a temporary
directory, answers device facts from a Profile and runs a LiteRT-backed ``benchmark_model``."""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
import threading
import time

from . import protocol
from .profiles import Profile
from .shell import Shell


class FileSystem:
    """Device paths map into ``root``; /proc and /sys cpu files are generated from the profile."""

    def __init__(self, device: "StandinDevice", root: str):
        self.device, self.root = device, root
        for d in ("data/local/tmp", "sdcard", "system/bin"):
            os.makedirs(os.path.join(root, d), exist_ok=True)

    @staticmethod
    def norm(path: str, cwd: str = "/") -> str:
        return posixpath.normpath(posixpath.join(cwd, path)) if path else cwd

    def host(self, path: str) -> str:
        p = self.norm(path).lstrip("/")
        return os.path.join(self.root, p) if p and p != "." else self.root

    def virtual(self, path: str) -> str | None:
        """Contents of generated files (cpuinfo, cpufreq, thermal zones), or None."""
        p = self.norm(path)
        prof = self.device.profile
        n = len(prof.core_max_khz)
        if p == "/proc/cpuinfo":
            out = []
            for i in range(n):
                big = prof.core_max_khz[i] > min(prof.core_max_khz)
                out += [f"processor\t: {i}", "BogoMIPS\t: 38.40", "Features\t: fp asimd evtstrm aes pmull sha1 sha2 "
                        "crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp", "CPU implementer\t: 0x51",
                        "CPU architecture: 8", "CPU variant\t: 0xd", f"CPU part\t: {'0x804' if big else '0x805'}",
                        "CPU revision\t: 14", ""]
            out.append(f"Hardware\t: Qualcomm Technologies, Inc {prof.soc_model}")
            return "\n".join(out) + "\n"
        if p in ("/sys/devices/system/cpu/possible", "/sys/devices/system/cpu/present"):
            return f"0-{n - 1}\n"
        parts = p.split("/")
        if len(parts) == 8 and parts[1:5] == ["sys", "devices", "system", "cpu"] and parts[6] == "cpufreq":
            core = parts[5]
            if not core.startswith("cpu") or not core[3:].isdigit() or int(core[3:]) >= n:
                return None
            i = int(core[3:])
            mx = prof.core_max_khz[i]
            running = self.device.running_benchmark
            f = {"cpuinfo_max_freq": mx, "scaling_max_freq": mx, "cpuinfo_min_freq": 300000,
                 "scaling_min_freq": 300000, "scaling_cur_freq": mx if running else min(mx, 1171200),
                 "cpuinfo_cur_freq": mx if running else min(mx, 1171200), "scaling_governor": prof.governor}
            name = parts[7]
            return f"{f[name]}\n" if name in f else None
        return None

    def exists(self, path: str) -> bool:
        return self.virtual(path) is not None or os.path.lexists(self.host(path))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.host(path))

    def read_bytes(self, path: str) -> bytes | None:
        v = self.virtual(path)
        if v is not None:
            return v.encode()
        h = self.host(path)
        if not os.path.isfile(h):
            return None
        with open(h, "rb") as fh:
            return fh.read()

    def stat(self, path: str, follow: bool = True):
        h = self.host(path)
        try:
            return os.stat(h) if follow else os.lstat(h)
        except OSError:
            return None

    def listdir_stat(self, path: str):
        h = self.host(path)
        if not os.path.isdir(h):
            return []
        out = []
        for name in sorted(os.listdir(h)):
            try:
                out.append((name, os.lstat(os.path.join(h, name))))
            except OSError:
                pass
        return out

    def used_kb(self) -> int:
        total = 0
        for d, _, files in os.walk(os.path.join(self.root, "data")):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(d, f))
                except OSError:
                    pass
        return total // 1024

    def write_pushed(self, path: str, data: bytes, mode: int, mtime: int) -> str | None:
        prof = self.device.profile
        if prof.push_fails_no_space or len(data) // 1024 > prof.free_kb - self.used_kb():
            return "No space left on device"
        h = self.host(path)
        if os.path.isdir(h):
            return "couldn't create file: Is a directory"
        os.makedirs(os.path.dirname(h), exist_ok=True)  # fixed_push_mkdir
        with open(h, "wb") as fh:
            fh.write(data)
        os.chmod(h, mode & 0o777)
        if mtime:
            os.utime(h, (mtime, mtime))
        return None


class Process:
    """A program running on the stand-in (only benchmark_model runs long enough to matter)."""

    def __init__(self, pid: int, argv: list[str]):
        self.pid, self.argv = pid, argv
        self.cmdline = " ".join(argv)  # /proc/PID/cmdline with spaces, what pgrep -f matches
        self.killed = threading.Event()
        self.signal: int | None = None

    def kill(self, sig: int) -> None:
        if not self.killed.is_set():
            self.signal = sig
            self.killed.set()


class StandinDevice:
    def __init__(self, profile: Profile | None = None, root: str | None = None):
        self.profile = profile or Profile()
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="adb-standin-")
        self.fs = FileSystem(self, self.root)
        self.shell = Shell(self)
        self.started_at = time.time()
        self.hot_until = self.started_at + self.profile.hot_for_s
        self.commands: list[str] = []      # every shell command line received
        self.sync_ops: list[tuple[str, str]] = []
        self.bench_calls: list[dict] = []  # argv, affinity mask, input ranges of each benchmark run
        self.running_benchmark = False
        self.current_mask: str | None = None
        self.bench_runs = 0
        self.processes: dict[int, Process] = {}  # running programs by pid
        self.next_pid = 4000
        self.kills: list[dict] = []  # every pkill: signal and pids
        self.lock = threading.Lock()
        self.listener: protocol.Listener | None = None

    # ---- network
    def start(self, port: int = 0) -> "StandinDevice":
        self.listener = protocol.Listener(self, port)
        return self

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def disconnect(self) -> None:
        """Pull the cable: stop listening and drop every connection."""
        if self.listener:
            self.listener.close()

    def spawn(self, argv: list[str]) -> Process:
        with self.lock:
            self.next_pid += 1
            p = self.processes[self.next_pid] = Process(self.next_pid, argv)
        return p

    def reap(self, p: Process) -> None:
        with self.lock:
            self.processes.pop(p.pid, None)

    def running(self, pattern: str = "") -> list[Process]:
        with self.lock:
            return [p for p in self.processes.values() if re.search(pattern, p.cmdline)]

    def close(self) -> None:
        for p in self.running():
            p.kill(9)
        self.disconnect()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def banner(self) -> str:
        p = self.profile
        return (f"device::ro.product.name={p.name};ro.product.model={p.model};ro.product.device={p.device};"
                f"features={p.features}")

    def service_handler(self, service: str):
        if service.startswith("shell"):
            return lambda st: protocol.shell_service(self, st)
        if service == "sync:":
            return lambda st: protocol.sync_service(self, st)
        return None

    # ---- logs
    def log_command(self, line: str) -> None:
        with self.lock:
            self.commands.append(line)

    def log_sync(self, op: str, path: str) -> None:
        with self.lock:
            self.sync_ops.append((op, path))

    # ---- thermal
    def thermal_status(self) -> int:
        return self.profile.hot_status if time.time() < self.hot_until else 0

    def battery_temp_tenths(self) -> int:
        p = self.profile
        return p.hot_battery_temp_tenths if time.time() < self.hot_until else p.battery_temp_tenths

    def heat_up(self) -> None:
        self.hot_until = max(self.hot_until, time.time() + self.profile.heat_cool_s)

    def files(self, device_dir: str = "/data/local/tmp") -> list[str]:
        """Every file and directory under a device directory (device paths)."""
        base = self.fs.host(device_dir)
        out = []
        for d, dirs, files in os.walk(base):
            for n in dirs + files:
                out.append(posixpath.join(device_dir, os.path.relpath(os.path.join(d, n), base)))
        return sorted(out)
