"""A small POSIX-like shell for the stand-in: quoting like sh, ``;`` / ``&&`` / ``||`` sequences, and the
commands the harness sends. Anything it does not know (pipes, redirections, ``$``, globs, backticks) is
an error, so a command that the harness failed to quote shows up in the tests."""
from __future__ import annotations

import os
import re
import shutil
import time

UNSUPPORTED = set("|&<>$`()*?{}")


class ShellSyntaxError(ValueError):
    pass


def tokenize(line: str) -> list[tuple[str, str]]:
    """[('word', text) | ('op', ';'|'&&'|'||')] with sh quoting rules (single, double, backslash)."""
    toks: list[tuple[str, str]] = []
    i, n = 0, len(line)
    word: list[str] | None = None

    def flush():
        nonlocal word
        if word is not None:
            toks.append(("word", "".join(word)))
            word = None

    while i < n:
        c = line[i]
        if c in " \t\n":
            flush()
            i += 1
        elif c == ";":
            flush()
            toks.append(("op", ";"))
            i += 1
        elif line.startswith("&&", i) or line.startswith("||", i):
            flush()
            toks.append(("op", line[i:i + 2]))
            i += 2
        elif c == "#" and word is None:
            break  # comment to end of line
        elif c == "'":
            j = line.find("'", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated '")
            word = (word or []) + [line[i + 1:j]]
            i = j + 1
        elif c == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\$`\n':
                    buf.append(line[i + 1])
                    i += 2
                elif line[i] in "$`":
                    raise ShellSyntaxError(f"unsupported expansion {line[i]!r} in double quotes")
                else:
                    buf.append(line[i])
                    i += 1
            if i >= n:
                raise ShellSyntaxError('unterminated "')
            word = (word or []) + ["".join(buf)]
            i += 1
        elif c == "\\":
            if i + 1 < n:
                word = (word or []) + [line[i + 1]]
            i += 2
        elif c in UNSUPPORTED:
            raise ShellSyntaxError(f"unsupported shell syntax {c!r}")
        else:
            word = (word or []) + [c]
            i += 1
    flush()
    return toks


class Shell:
    def __init__(self, device):
        self.device = device

    # -------------------------------------------------------------- sequences
    def run(self, line: str, out, err, cancel) -> int:
        self.device.log_command(line)
        try:
            toks = tokenize(line)
        except ShellSyntaxError as e:
            err(f"/system/bin/sh: syntax error: {e}\n".encode())
            return 2
        rc = 0
        cmd: list[str] = []
        pending_op = ";"
        for kind, val in toks + [("op", ";")]:
            if kind == "word":
                cmd.append(val)
                continue
            if cmd:
                if pending_op == ";" or (pending_op == "&&" and rc == 0) or (pending_op == "||" and rc != 0):
                    rc = self.exec(cmd, out, err, cancel)
                    if isinstance(rc, tuple):  # exit
                        return rc[1]
            cmd = []
            pending_op = val
            if cancel.is_set():
                break
        return rc

    # -------------------------------------------------------------- commands
    def exec(self, argv: list[str], out, err, cancel):
        name, args = argv[0], argv[1:]
        if "/" in name:
            return self._run_file(name, args, out, err, cancel)
        fn = getattr(self, "c_" + name.replace("-", "_"), None)
        if fn is None:
            err(f"/system/bin/sh: {name}: inaccessible or not found\n".encode())
            return 127
        return fn(args, out, err, cancel)

    def _run_file(self, path, args, out, err, cancel):
        fs = self.device.fs
        h = fs.host(path)
        if not os.path.isfile(h):
            err(f"/system/bin/sh: {path}: inaccessible or not found\n".encode())
            return 127
        if not os.access(h, os.X_OK):
            err(f"/system/bin/sh: {path}: can't execute: Permission denied\n".encode())
            return 126
        with open(h, "rb") as fh:
            head = fh.read(4)
        if head != b"\x7fELF":
            err(f"/system/bin/sh: {path}: not executable: magic {head.hex()}\n".encode())
            return 126
        from .benchmark import run_benchmark

        # its own process: the adb stream closing (``cancel``) does not stop it; pkill does, and a write to the
        # closed stream ends it (SIGPIPE)
        proc = self.device.spawn([path] + list(args))
        try:
            return run_benchmark(self.device, path, args, out, err, proc)
        finally:
            self.device.reap(proc)

    def c_true(self, a, out, err, cancel):
        return 0

    def c_false(self, a, out, err, cancel):
        return 1

    def c_exit(self, a, out, err, cancel):
        return ("exit", int(a[0]) if a else 0)

    def c_echo(self, a, out, err, cancel):
        out((" ".join(a) + "\n").encode())
        return 0

    def c_sleep(self, a, out, err, cancel):
        cancel.wait(float(a[0]) if a else 0)
        return 0

    def c_getprop(self, a, out, err, cancel):
        props = self.device.profile.props()
        if a:
            out((props.get(a[0], a[1] if len(a) > 1 else "") + "\n").encode())
        else:
            out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())).encode())
        return 0

    def c_cat(self, a, out, err, cancel):
        rc = 0
        for p in a:
            data = self.device.fs.read_bytes(p)
            if data is None:
                err(f"cat: {p}: No such file or directory\n".encode())
                rc = 1
            else:
                out(data)
        return rc

    def c_grep(self, a, out, err, cancel):
        flags = [x for x in a if x.startswith("-") and len(x) > 1]
        rest = [x for x in a if not (x.startswith("-") and len(x) > 1)]
        if not rest:
            err(b"grep: no pattern\n")
            return 2
        pat, files = re.compile(rest[0]), rest[1:]
        show = "-H" in flags or len(files) > 1
        found, rc = False, 0
        for p in files:
            data = self.device.fs.read_bytes(p)
            if data is None:
                err(f"grep: {p}: No such file or directory\n".encode())
                rc = 2
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                if pat.search(line):
                    found = True
                    out(((p + ":" if show else "") + line + "\n").encode())
        return rc if rc else (0 if found else 1)

    def c_ls(self, a, out, err, cancel):
        paths = [x for x in a if not x.startswith("-")] or ["/"]
        rc = 0
        for p in paths:
            h = self.device.fs.host(p)
            if os.path.isdir(h):
                for n in sorted(os.listdir(h)):
                    out((n + "\n").encode())
            elif os.path.lexists(h):
                out((p + "\n").encode())
            else:
                err(f"ls: {p}: No such file or directory\n".encode())
                rc = 1
        return rc

    def c_mkdir(self, a, out, err, cancel):
        parents = "-p" in a
        for p in (x for x in a if not x.startswith("-")):
            h = self.device.fs.host(p)
            try:
                os.makedirs(h, exist_ok=True) if parents else os.mkdir(h)
            except OSError as e:
                err(f"mkdir: '{p}': {e.strerror}\n".encode())
                return 1
        return 0

    def c_rm(self, a, out, err, cancel):
        opts = "".join(x[1:] for x in a if x.startswith("-"))
        rc = 0
        for p in (x for x in a if not x.startswith("-")):
            if self.device.fs.norm(p) in ("/", "/data", "/data/local", "/data/local/tmp"):
                err(f"rm: refusing to remove {p}\n".encode())
                rc = 1
                continue
            h = self.device.fs.host(p)
            if os.path.isdir(h) and not os.path.islink(h):
                if "r" not in opts:
                    err(f"rm: {p}: is a directory\n".encode())
                    rc = 1
                else:
                    shutil.rmtree(h, ignore_errors=True)
            elif os.path.lexists(h):
                os.unlink(h)
            elif "f" not in opts:
                err(f"rm: {p}: No such file or directory\n".encode())
                rc = 1
        return rc

    def c_chmod(self, a, out, err, cancel):
        if len(a) < 2:
            err(b"chmod: needs MODE FILE\n")
            return 1
        try:
            mode = int(a[0], 8)
        except ValueError:
            mode = 0o755 if "x" in a[0] else 0o644
        for p in a[1:]:
            h = self.device.fs.host(p)
            if not os.path.lexists(h):
                err(f"chmod: {p}: No such file or directory\n".encode())
                return 1
            os.chmod(h, mode)
        return 0

    def c_df(self, a, out, err, cancel):
        free = max(0, self.device.profile.free_kb - self.device.fs.used_kb())
        total = max(free * 2, 1_000_000)
        used = total - free
        pct = int(round(100 * used / total))
        out(("Filesystem     1K-blocks     Used Available Use% Mounted on\n"
             f"/dev/block/dm-8 {total:>9} {used:>8} {free:>9} {pct:>3}% /data\n").encode())
        return 0

    def c_taskset(self, a, out, err, cancel):
        if len(a) < 2:
            err(b"usage: taskset [-ap] [mask] [PID | cmd [args...]]\n")
            return 1
        try:
            mask = int(a[0], 16)
        except ValueError:
            err(f"taskset: bad mask '{a[0]}'\n".encode())
            return 1
        n = len(self.device.profile.core_max_khz)
        if mask == 0 or mask >> n:
            err(b"taskset: sched_setaffinity: Invalid argument\n")
            return 1
        self.device.current_mask = a[0]
        try:
            return self.exec(a[1:], out, err, cancel)
        finally:
            self.device.current_mask = None

    def _procs(self, a, err, name):
        """toybox pgrep/pkill: ``[-SIGNAL] [-f] PATTERN`` (extended regex on the name, or with -f on the
        whole command line)."""
        sig, full, pats = 15, False, []
        for x in a:
            if x == "-f":
                full = True
            elif x.startswith("-") and len(x) > 1 and name == "pkill":
                s = x[1:]
                sig = int(s) if s.isdigit() else {"KILL": 9, "TERM": 15, "INT": 2, "HUP": 1}.get(s.upper(), -1)
                if sig < 0:
                    err(f"pkill: unknown signal '{s}'\n".encode())
                    return None, None
            elif x.startswith("-") and len(x) > 1:
                err(f"{name}: Unknown option '{x}'\n".encode())
                return None, None
            else:
                pats.append(x)
        if len(pats) != 1:
            err(f"{name}: Need 1 argument\n".encode())
            return None, None
        rx = re.compile(pats[0])
        return sig, [p for p in self.device.running() if rx.search(p.cmdline if full else p.argv[0].rsplit("/", 1)[-1])]

    def c_pgrep(self, a, out, err, cancel):
        _, procs = self._procs(a, err, "pgrep")
        if procs is None:
            return 2
        out("".join(f"{p.pid}\n" for p in procs).encode())
        return 0 if procs else 1

    def c_pkill(self, a, out, err, cancel):
        sig, procs = self._procs(a, err, "pkill")
        if procs is None:
            return 2
        for p in procs:
            p.kill(sig)
        with self.device.lock:
            self.device.kills.append({"signal": sig, "pids": [p.pid for p in procs], "time": time.time()})
        return 0 if procs else 1

    def c_dumpsys(self, a, out, err, cancel):
        dev = self.device
        svc = a[0] if a else ""
        if svc == "thermalservice":
            st = dev.thermal_status()
            bat = dev.battery_temp_tenths() / 10
            cpu = 40.0 + 15 * st
            temps = (f"\tTemperature{{mValue={bat}, mType=2, mName=battery, mStatus={st}}}\n"
                     f"\tTemperature{{mValue={cpu}, mType=0, mName=cpu0-gold-usr, mStatus={st}}}\n"
                     f"\tTemperature{{mValue={cpu - 3}, mType=0, mName=cpu1-silver-usr, mStatus=0}}\n"
                     f"\tTemperature{{mValue=33.0, mType=3, mName=skin-therm, mStatus=0}}\n")
            out(("IsStatusOverride: false\nThermalEventListeners:\n\tcallbacks: 1\n\tkilled: false\n"
                 "\tbroadcasts count: -1\nThermalStatusListeners:\n\tcallbacks: 1\n\tkilled: false\n"
                 f"\tbroadcasts count: -1\nThermal Status: {st}\nCached temperatures:\n{temps}"
                 "HAL Ready: true\nHAL connection:\n\tThermalHAL 2.0 connected: yes\n"
                 f"Current temperatures from HAL:\n{temps}"
                 "Current cooling devices from HAL:\n\tCoolingDevice{mValue=0, mType=2, mName=cpu0}\n").encode())
            return 0
        if svc == "battery":
            out(("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
                 "  Wireless powered: false\n  Max charging current: 500000\n  Max charging voltage: 5000000\n"
                 "  Charge counter: 2551000\n  status: 2\n  health: 2\n  present: true\n  level: 87\n"
                 f"  scale: 100\n  voltage: 4231\n  temperature: {dev.battery_temp_tenths()}\n"
                 "  technology: Li-ion\n").encode())
            return 0
        err(f"Can't find service: {svc}\n".encode())
        return 0  # like the real dumpsys

    def c_touch(self, a, out, err, cancel):
        for p in a:
            h = self.device.fs.host(p)
            os.makedirs(os.path.dirname(h), exist_ok=True)
            with open(h, "ab"):
                pass
        return 0

    def c_cd(self, a, out, err, cancel):
        return 0


__all__ = ["Shell", "tokenize", "ShellSyntaxError"]
