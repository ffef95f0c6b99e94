"""A thin wrapper around the real ``adb`` client: every call has a timeout and a clear error.

Commands for ``adb shell`` are built with :func:`sh_join` only: every argument is quoted with
``shlex.quote`` so file names with spaces, quotes or ``;`` cannot inject commands on the device.
"""
from __future__ import annotations

import os
import re
import selectors
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from mobilebert_mobile.errors import StageError

ENV_VAR = "MOBILEBERT_ADB"
INSTALL_HINT = ("adb (the Android Debug Bridge client) was not found: install Debian/Ubuntu's package "
                "(`sudo apt-get install adb`; ./run.sh's set-up does this when run as root) or the Android "
                "SDK platform-tools, or point to it with --adb PATH or the MOBILEBERT_ADB environment variable")


class AdbError(StageError):
    """adb itself is missing or broken (affects every device)."""


class DeviceError(StageError):
    """One device failed; ``kind`` says how (unauthorized, offline, disconnected, timeout, no-space, ...)."""

    def __init__(self, serial: str | None, message: str, kind: str = "error"):
        super().__init__(f"{serial}: {message}" if serial else message)
        self.serial, self.message, self.kind = serial, message, kind


def sh_join(args) -> str:
    """One shell command line from arguments, each quoted."""
    return " ".join(shlex.quote(str(a)) for a in args)


def find_adb(path: str | None = None) -> str:
    cand = path or os.environ.get(ENV_VAR)
    if cand:
        if os.path.isdir(cand):
            cand = os.path.join(cand, "adb")
        if not (os.path.isfile(cand) and os.access(cand, os.X_OK)):
            found = shutil.which(cand) if os.sep not in cand else None
            if not found:
                src = "--adb" if path else ENV_VAR
                raise AdbError(f"adb not found at {cand!r} (from {src}); {INSTALL_HINT}")
            cand = found
        return os.path.abspath(cand)
    found = shutil.which("adb")
    if not found:
        raise AdbError(INSTALL_HINT)
    return found


@dataclass
class ShellResult:
    rc: int | None
    stdout: str
    stderr: str
    # (1 stdout | 2 stderr, bytes) in the order they arrived: shell v2 keeps the streams apart, the order
    # between them is only known from when the client wrote them
    chunks: list = field(default_factory=list, repr=False)

    @property
    def output(self) -> str:
        """stdout and stderr interleaved in the order they arrived."""
        if self.chunks:
            return b"".join(b for _, b in self.chunks).decode("utf-8", "replace")
        return self.stdout + (("\n" if self.stdout and not self.stdout.endswith("\n") else "") + self.stderr
                              if self.stderr else "")

    def tail(self, n: int = 4, limit: int = 400) -> str:
        """The last ``n`` non-empty lines (both streams, arrival order), joined with `` | ``."""
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        return " | ".join(lines[-n:])[-limit:]


class ShellStopped(DeviceError):
    """``adb shell`` was stopped (timeout or stop event); ``partial`` holds the output that came so far."""

    def __init__(self, serial: str | None, message: str, kind: str, partial: ShellResult):
        super().__init__(serial, message, kind)
        self.partial = partial


_DEVICE_ERR = re.compile(r"error: (device offline|device unauthorized|device '.*' not found|device not found|"
                         r"closed|no devices/emulators found|protocol fault.*|connection reset.*)", re.I)


class Adb:
    def __init__(self, path: str | None = None, timeout: float = 60.0):
        self.path = find_adb(path)
        self.timeout = timeout

    def run(self, args: list[str], *, serial: str | None = None, timeout: float | None = None,
            what: str | None = None) -> subprocess.CompletedProcess:
        cmd = [self.path] + (["-s", serial] if serial else []) + list(args)
        t = self.timeout if timeout is None else timeout
        try:
            return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=t)
        except subprocess.TimeoutExpired:
            raise DeviceError(serial, f"{what or 'adb ' + args[0]} did not finish within {t:g} s (timed out)",
                              "timeout") from None
        except OSError as e:
            raise AdbError(f"cannot run {self.path}: {e}") from None

    def cached_version(self) -> str:
        if getattr(self, "_version", None) is None:
            try:
                self._version = self.version()
            except (AdbError, DeviceError):
                self._version = "?"
        return self._version

    def version(self) -> str:
        r = self.run(["version"], timeout=20)
        out = r.stdout.decode("utf-8", "replace")
        m = re.search(r"^Version (\S+)", out, re.M)
        m2 = re.search(r"Android Debug Bridge version (\S+)", out)
        return " ".join(x for x in ((m2.group(1) if m2 else None), (f"({m.group(1)})" if m else None)) if x) or "?"

    def devices(self) -> list[dict]:
        """``adb devices -l`` -> [{serial, state, product, model, device, transport_id}]."""
        r = self.run(["devices", "-l"], timeout=30)
        text = r.stdout.decode("utf-8", "replace")
        if r.returncode != 0:
            raise AdbError(f"`adb devices` failed: {(r.stderr.decode('utf-8', 'replace') or text).strip()}")
        out = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("List of devices", "*", "adb ")):
                continue
            parts = line.split()
            if len(parts) < 2:
                continue
            d = {"serial": parts[0], "state": parts[1]}
            rest = parts[2:]
            if d["state"] == "no" and rest[:1] == ["permissions"]:
                d["state"] = "no-permissions"
            for p in rest:
                if ":" in p:
                    k, v = p.split(":", 1)
                    d[k] = v.replace("_", " ") if k == "model" else v
            out.append(d)
        return out

    def state(self, serial: str) -> str:
        """device / unauthorized / offline / missing."""
        for d in self.devices():
            if d["serial"] == serial:
                return d["state"]
        return "missing"

    def _device_failed(self, serial: str, stderr: str, action: str) -> DeviceError:
        try:
            st = self.state(serial)
        except (AdbError, DeviceError):
            st = "unknown"
        if st == "unauthorized":
            return DeviceError(serial, "device unauthorized: unlock the phone and accept the USB debugging "
                                       "prompt (\"Allow USB debugging\"), then run again", "unauthorized")
        if st in ("offline", "missing"):
            return DeviceError(serial, f"device {'disconnected' if st == 'missing' else 'went offline'} during "
                                       f"{action} ({stderr.strip() or 'no message'}); reconnect it and run again "
                                       "with --resume", "disconnected")
        return DeviceError(serial, f"{action} failed: {stderr.strip() or 'adb returned an error'}", "error")

    def _shell_streams(self, serial: str, command: str, timeout: float, what: str,
                       stop: threading.Event | None) -> ShellResult:
        """``adb shell`` reading stdout and stderr as they come (their order kept in ``chunks``); on timeout or
        ``stop`` the client is killed and ShellStopped carries what came so far."""
        cmd = [self.path, "-s", serial, "shell", command]
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise AdbError(f"cannot run {self.path}: {e}") from None
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ, 1)
        sel.register(p.stderr, selectors.EVENT_READ, 2)
        chunks: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        why = None
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    why = "timeout"
                    break
                if stop is not None and stop.is_set():
                    why = "interrupted"
                    break
                # stdout before stderr when both are ready: the tool logs INFO to stdout, errors to stderr
                for key, _ in sorted(sel.select(min(left, 0.1)), key=lambda kv: kv[0].data):
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks.append((key.data, data))
                    else:
                        sel.unregister(key.fileobj)
        finally:
            sel.close()
            if why:
                p.kill()
            rc = p.wait()
            p.stdout.close()
            p.stderr.close()
        res = ShellResult(None if why else rc, b"".join(b for i, b in chunks if i == 1).decode("utf-8", "replace"),
                          b"".join(b for i, b in chunks if i == 2).decode("utf-8", "replace"), chunks)
        if why == "timeout":
            raise ShellStopped(serial, f"{what} did not finish within {timeout:g} s (timed out)", "timeout", res)
        if why:
            raise ShellStopped(serial, f"{what} was interrupted", "interrupted", res)
        return res

    def shell(self, serial: str, command: str, *, timeout: float | None = None, what: str | None = None,
              check: bool = False, stop: threading.Event | None = None) -> ShellResult:
        """Run one command line on the device (shell v2: the exit code comes back). On timeout (or when
        ``stop`` is set) the local client is killed and ShellStopped is raised: the command may still be
        running on the device."""
        what = what or f"`{command[:60]}`"
        res = self._shell_streams(serial, command, self.timeout if timeout is None else timeout, what, stop)
        if res.rc != 0 and (_DEVICE_ERR.search(res.stderr.strip().splitlines()[0] if res.stderr.strip() else "")
                            or (res.rc == 255 and not res.stdout)):
            problem = self._device_failed(serial, res.stderr, what)
            if problem.kind != "error":  # the device is gone; otherwise the command itself failed
                raise problem
        if check and res.rc != 0:
            raise DeviceError(serial, f"{what} failed (exit {res.rc}): "
                                      f"{(res.stderr or res.stdout).strip()[:300]}")
        return res

    def push(self, serial: str, local: str, remote: str, *, timeout: float | None = None) -> None:
        r = self.run(["push", local, remote], serial=serial, timeout=timeout,
                     what=f"adb push {os.path.basename(local)}")
        if r.returncode != 0:
            msg = (r.stderr.decode("utf-8", "replace") + r.stdout.decode("utf-8", "replace")).strip()
            if "No space left" in msg:
                why = next(ln for ln in msg.splitlines() if "No space left" in ln).strip()
                raise DeviceError(serial, f"pushing {os.path.basename(local)} failed: no space left on the device "
                                          f"({why})", "no-space")
            if _DEVICE_ERR.search(msg) or "failed to get feature set" in msg:
                raise self._device_failed(serial, msg, "push")
            raise DeviceError(serial, f"pushing {os.path.basename(local)} failed: {msg}")

    def pull(self, serial: str, remote: str, local: str, *, timeout: float | None = None) -> None:
        r = self.run(["pull", remote, local], serial=serial, timeout=timeout, what="adb pull")
        if r.returncode != 0:
            msg = (r.stderr.decode("utf-8", "replace") + r.stdout.decode("utf-8", "replace")).strip()
            raise DeviceError(serial, f"pulling {remote} failed: {msg}")
