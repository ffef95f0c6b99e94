"""Latency of a converted model on attached phones with TFLite's ``benchmark_model`` over adb.

Per device (one thread each, one configuration at a time): read its facts, pick the binary for its ABI,
check free space, push binary and model into /data/local/tmp/mobilebert-mobile/, then for each
configuration wait until the phone is cool, record thermal state and CPU frequencies, run the tool pinned to
the big cores, record again, parse, and append one JSON line (flushed and fsync'ed) to the results file.
The work directory is removed at the end. A failing device never affects the others.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .._io import atomic_write_text, sha256_file
from . import binary as binmod
from .adb import Adb, AdbError, DeviceError, ShellStopped, sh_join
from .devices import cores_for_threads, cpu_mask, cpu_state, device_facts, free_kb, thermal_state
from .model_info import ModelFormatError, bert_value_ranges, check_input_layers, tflite_inputs
from .parse import ParseError, parse_output
from mobilebert_mobile.errors import InputError

WORK_DIR = "/data/local/tmp/mobilebert-mobile"
REMOTE_BIN = f"{WORK_DIR}/benchmark_model"
DELEGATES = {"cpu": ["--use_xnnpack=false"], "xnnpack": ["--use_xnnpack=true"],
             "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"]}
SCHEMA = 1


class BenchError(InputError):
    """Bad input for a benchmark (model, options): nothing was run."""


@dataclass(frozen=True)
class Config:
    threads: int = 1
    delegate: str = "xnnpack"
    num_runs: int = 50
    warmup_runs: int = 1
    min_secs: float | None = None
    warmup_min_secs: float | None = None
    max_secs: float | None = None
    op_profiling: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def slug(self) -> str:
        return f"t{self.threads}-{self.delegate}-r{self.num_runs}" + ("-prof" if self.op_profiling else "")

    def flags(self) -> list[str]:
        f = [f"--num_threads={self.threads}", f"--num_runs={self.num_runs}", f"--warmup_runs={self.warmup_runs}"]
        if self.min_secs is not None:
            f.append(f"--min_secs={self.min_secs:g}")
        if self.warmup_min_secs is not None:
            f.append(f"--warmup_min_secs={self.warmup_min_secs:g}")
        if self.max_secs is not None:
            f.append(f"--max_secs={self.max_secs:g}")
        f += DELEGATES[self.delegate]
        f.append("--report_peak_memory_footprint=true")
        if self.op_profiling:
            f.append("--enable_op_profiling=true")
        return f


@dataclass
class ModelSpec:
    path: str
    name: str
    sha256: str
    size: int
    precision: str | None
    vocab_size: int
    inputs: list
    ranges: list

    def range_flag(self) -> str:
        return ":".join(f"{n},{lo},{hi}" for n, lo, hi in self.ranges)

    def input_flags(self) -> list[str]:
        """``--input_layer``, ``--input_layer_shape`` and ``--input_layer_value_range`` for benchmark_model.

        The tool builds its input list from --input_layer alone (a range naming anything else aborts it with
        ``FATAL: Cannot find the corresponding input_layer name``) and matches that list to the model's inputs
        by position (a differing name is only a warning), so every input is listed, in the model's order."""
        names = [i["name"] for i in self.inputs]
        shapes = [",".join(str(d) for d in i["shape"]) for i in self.inputs]
        return [f"--input_layer={','.join(names)}", f"--input_layer_shape={':'.join(shapes)}",
                f"--input_layer_value_range={self.range_flag()}"]

    def as_dict(self) -> dict:
        return {"path": self.path, "name": self.name, "sha256": self.sha256, "size_mb": round(self.size / 2**20, 3),
                "precision": self.precision, "vocab_size": self.vocab_size,
                "inputs": [{"name": i["name"], "dtype": i["dtype"], "shape": i["shape"]} for i in self.inputs],
                "value_ranges": self.range_flag(), "input_flags": self.input_flags()}


def _vocab_lines(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def resolve_models(model_or_bundle: str, precision: str | None = None,
                   vocab_size: int | None = None) -> list[ModelSpec]:
    """A bundle directory (its default model, one precision, a comma list, or ``all``) or a .tflite path."""
    p = os.path.abspath(model_or_bundle)
    files: list[tuple[str, str | None]] = []
    vocab = vocab_size
    if os.path.isdir(p):
        from ..bundle import BundleError, read_bundle

        try:
            b = read_bundle(p)
        except BundleError as e:
            raise BenchError(str(e)) from None
        tfl = b.tflite_models()
        if not tfl:
            raise BenchError(f"bundle {p} holds no .tflite model")
        if precision in (None, ""):
            default = b.manifest.get("default_model")
            key = default if default in tfl else next(iter(tfl))
            files = [(tfl[key], key)]
        elif precision == "all":
            files = [(f, k) for k, f in tfl.items()]
        else:
            for k in precision.split(","):
                if k not in tfl:
                    raise BenchError(f"bundle {p} has no {k!r} TFLite model; it has {', '.join(tfl)}")
                files.append((tfl[k], k))
        if vocab is None and os.path.isfile(os.path.join(p, "vocab.txt")):
            vocab = _vocab_lines(os.path.join(p, "vocab.txt"))
    elif os.path.isfile(p):
        if precision not in (None, ""):
            raise BenchError("--precision applies to a bundle directory, not to a single .tflite file")
        files = [(p, None)]
    else:
        raise BenchError(f"model not found: {model_or_bundle} (give a bundle directory or a .tflite file)")
    vocab = vocab or 30522
    out = []
    for f, prec in files:
        try:
            inputs = tflite_inputs(f)
            check_input_layers(inputs)
            ranges = bert_value_ranges(inputs, vocab)
        except ModelFormatError as e:
            raise BenchError(str(e)) from None
        out.append(ModelSpec(f, os.path.basename(f), sha256_file(f), os.path.getsize(f), prec, vocab, inputs, ranges))
    return out


def result_key(serial: str, model_sha: str, config: dict) -> str:
    return f"{serial}|{model_sha}|{json.dumps(config, sort_keys=True)}"


class Results:
    """The JSONL results file: one line per finished run, appended, flushed and fsync'ed at once."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.lock = threading.Lock()
        d = os.path.dirname(self.path)
        if not os.path.isdir(d):
            raise BenchError(f"results directory does not exist: {d}")

    @staticmethod
    def load(path: str) -> list[dict]:
        out = []
        if not os.path.isfile(path):
            return out
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that run is simply done again
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def done_keys(self) -> set[str]:
        return {r["key"] for r in self.load(self.path) if r.get("status") == "ok" and "key" in r}

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, sort_keys=False, default=str) + "\n"
        with self.lock:
            with open(self.path, "a+b") as fh:
                if fh.tell() > 0:  # a line cut short by an interrupted run must not swallow this one
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        line = "\n" + line
                fh.write(line.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())

    @property
    def raw_dir(self) -> str:
        base = self.path[:-6] if self.path.endswith(".jsonl") else self.path
        return base + ".raw"


@dataclass
class Options:
    cooldown_timeout: float = 300.0
    cooldown_poll: float = 10.0
    max_battery_c: float = 40.0
    run_timeout: float = 600.0
    transfer_timeout: float = 300.0
    command_timeout: float = 60.0
    kill_wait: float = 10.0  # seconds to wait for a stopped benchmark_model to go away
    resume: bool = False
    progress: bool = True
    stop: threading.Event = field(default_factory=threading.Event)  # set on Ctrl-C: finish cleanly
    log: object = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def _signal_text(rc: int) -> str:
    sig = rc - 128 if rc > 128 else None
    if sig:
        why = {signal.SIGABRT: "the tool aborted: a FATAL check failed", signal.SIGKILL: "killed from outside, "
               "e.g. by the low-memory killer"}.get(sig, "the tool crashed")
        try:
            return f" (killed by {signal.Signals(sig).name}: {why})"
        except ValueError:
            return f" (signal {sig})"
    return ""


def _is_cool(st: dict, max_c: float) -> bool:
    return st.get("status") in (None, 0) and (st.get("battery_c") is None or st["battery_c"] <= max_c)


class DeviceRun:
    def __init__(self, adb: Adb, serial: str, models: list[ModelSpec], configs: list[Config], results: Results,
                 opts: Options, position: int = 0):
        self.adb, self.serial, self.models, self.configs = adb, serial, models, configs
        self.results, self.opts, self.position = results, opts, position
        self.outcome = {"serial": serial, "ok": 0, "failed": 0, "skipped": 0, "error": None, "kind": None,
                        "records": []}

    def log(self, msg: str) -> None:
        self.opts.log(f"[{self.serial}] {msg}")

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        pushed = False
        try:
            st = self.adb.state(self.serial)
            if st != "device":
                raise self.adb._device_failed(self.serial, f"state {st}", "start")
            self.facts = device_facts(self.adb, self.serial, self.opts.command_timeout)
            done = self.results.done_keys() if self.opts.resume else set()
            todo = [(m, c) for m in self.models for c in self.configs
                    if result_key(self.serial, m.sha256, c.as_dict()) not in done]
            self.outcome["skipped"] = len(self.models) * len(self.configs) - len(todo)
            if self.outcome["skipped"]:
                self.log(f"resume: {self.outcome['skipped']} configuration(s) already done")
            if not todo:
                return self.outcome
            try:
                self.tool = binmod.for_device(self.facts["abi"], self.facts.get("abilist"))
            except binmod.BinaryError as e:
                raise DeviceError(self.serial, str(e), "binary") from None
            pushed = True
            # a benchmark_model left running by an interrupted run is ours: stop it, then remove its work
            # directory before measuring free space
            self._ensure_none_running()
            self.adb.shell(self.serial, sh_join(["rm", "-rf", WORK_DIR]), timeout=self.opts.command_timeout,
                           what="removing a stale work directory")
            self._check_space(todo)
            self._push(todo)
            for m, c in todo:
                self._check_stop()
                self._run_one(m, c)
        except DeviceError as e:
            self.outcome["error"], self.outcome["kind"] = e.message, e.kind
            self.log(f"error: {e.message}")
        finally:
            if pushed:
                self._cleanup()
        return self.outcome

    def _check_stop(self) -> None:
        if self.opts.stop.is_set():
            raise DeviceError(self.serial, "interrupted; finished runs are saved, run again with --resume",
                              "interrupted")

    def _check_space(self, todo) -> None:
        need = sum({m.sha256: m.size for m, _ in todo}.values()) + os.path.getsize(self.tool["path"])
        need_kb = need // 1024 + 1024  # 1 MiB of head room
        have = free_kb(self.adb, self.serial, "/data/local/tmp", self.opts.command_timeout)
        if have is not None and have < need_kb:
            raise DeviceError(self.serial, f"not enough free space in /data/local/tmp: the model and the benchmark "
                                           f"binary need {need_kb / 1024:.1f} MiB, the device has "
                                           f"{have / 1024:.1f} MiB free; free some space and run again", "no-space")

    def _push(self, todo) -> None:
        a, t = self.adb, self.opts
        a.shell(self.serial, sh_join(["mkdir", "-p", WORK_DIR]), timeout=t.command_timeout, what="mkdir", check=True)
        self.remote_bin = REMOTE_BIN
        a.push(self.serial, self.tool["path"], self.remote_bin, timeout=t.transfer_timeout)
        a.shell(self.serial, sh_join(["chmod", "755", self.remote_bin]), timeout=t.command_timeout, what="chmod",
                check=True)
        self.remote_models = {}
        for m, _ in todo:
            if m.sha256 in self.remote_models:
                continue
            remote = f"{WORK_DIR}/{m.name}"
            if remote in self.remote_models.values():
                remote = f"{WORK_DIR}/{m.sha256[:8]}-{m.name}"
            self.log(f"pushing {m.name} ({m.size / 2**20:.1f} MiB)")
            a.push(self.serial, m.path, remote, timeout=t.transfer_timeout)
            self.remote_models[m.sha256] = remote

    # ------------------------------------------------------------------ our processes on the device
    def _ours_running(self) -> list[int]:
        """Pids of benchmark_model processes started from our work directory (``pgrep -f``: the full command
        line; anchored so the shell running pgrep does not match itself)."""
        res = self.adb.shell(self.serial, sh_join(["pgrep", "-f", "^" + REMOTE_BIN]),
                             timeout=self.opts.command_timeout, what="pgrep")
        if res.rc not in (0, 1):
            raise DeviceError(self.serial, f"cannot list processes on the device (pgrep exit {res.rc}: "
                                           f"{res.tail(2) or 'no message'})", "error")
        return [int(x) for x in res.stdout.split() if x.isdigit()]

    def _ensure_none_running(self) -> list[int]:
        """Stop every benchmark_model of ours still running on the device (SIGKILL by the pushed binary's path)
        and check that none is left; returns the pids that were stopped."""
        pids = self._ours_running()
        if not pids:
            return []
        self.log(f"stopping benchmark_model still running on the device (pid {', '.join(map(str, pids))})")
        deadline = time.monotonic() + self.opts.kill_wait
        while True:
            self.adb.shell(self.serial, sh_join(["pkill", "-KILL", "-f", "^" + REMOTE_BIN]),
                           timeout=self.opts.command_timeout, what="pkill")
            left = self._ours_running()
            if not left:
                return pids
            if time.monotonic() >= deadline:
                raise DeviceError(self.serial, f"benchmark_model (pid {', '.join(map(str, left))}) is still running "
                                               f"on the device after kill -9; reboot the phone "
                                               "(`adb reboot`) and run again with --resume", "stuck")
            time.sleep(0.2)

    def _cleanup(self) -> None:
        try:
            if self.adb.state(self.serial) == "device":
                self._ensure_none_running()
                self.adb.shell(self.serial, sh_join(["rm", "-rf", WORK_DIR]), timeout=self.opts.command_timeout,
                               what="cleaning up")
            else:
                self.log(f"could not clean {WORK_DIR} on the device (not reachable); it is removed on the next run")
        except DeviceError as e:
            self.log(f"cleanup failed: {e.message}")

    # ------------------------------------------------------------------ one configuration
    def _wait_cool(self) -> tuple[dict, float, bool]:
        o = self.opts
        t0 = time.monotonic()
        st = thermal_state(self.adb, self.serial, o.command_timeout)
        if _is_cool(st, o.max_battery_c):
            return st, 0.0, False
        self.log(f"cooling down: thermal status {st.get('status')}, battery {st.get('battery_c')} °C "
                 f"(waiting up to {o.cooldown_timeout:g} s)")
        from tqdm import tqdm

        bar = tqdm(total=round(o.cooldown_timeout, 1), desc=f"{self.serial} cooling", unit="s",
                   position=self.position, leave=False, disable=True if not o.progress else None, file=sys.stderr)
        try:
            while True:
                el = time.monotonic() - t0
                if el >= o.cooldown_timeout:
                    self.log(f"still warm after {el:.0f} s (status {st.get('status')}, "
                             f"battery {st.get('battery_c')} °C);"
                             " running anyway, the result is flagged")
                    return st, el, True
                if o.stop.wait(max(0.0, min(o.cooldown_poll, o.cooldown_timeout - el))):
                    self._check_stop()
                st = thermal_state(self.adb, self.serial, o.command_timeout)
                bar.n = round(min(time.monotonic() - t0, o.cooldown_timeout), 1)
                bar.set_postfix_str(f"status {st.get('status')}, {st.get('battery_c')} °C")
                if _is_cool(st, o.max_battery_c):
                    return st, time.monotonic() - t0, False
        finally:
            bar.close()

    def _run_one(self, m: ModelSpec, c: Config) -> None:
        o, f = self.opts, self.facts
        key = result_key(self.serial, m.sha256, c.as_dict())
        cores = cores_for_threads(f["max_freq_khz"], c.threads)
        mask = cpu_mask(cores)
        cmd = sh_join(["taskset", mask, self.remote_bin, f"--graph={self.remote_models[m.sha256]}"]
                      + c.flags() + m.input_flags())
        rec = {"schema": SCHEMA, "key": key, "status": "ok", "error": None,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "device": {k: f.get(k) for k in ("serial", "model", "manufacturer", "device", "soc", "platform",
                                                 "android", "sdk", "abi", "cores", "max_freq_khz", "big_cores",
                                                 "fingerprint")},
               "tool": {"name": self.tool.get("name"), "version": self.tool.get("version"),
                        "sha256": self.tool.get("sha256"), "abi": self.tool.get("abi")},
               "host": {"adb": self.adb.cached_version()},
               "model": m.as_dict(), "config": c.as_dict(),
               "affinity": {"taskset_mask": mask, "cores": cores,
                            "max_freq_khz": [f["max_freq_khz"][i] for i in cores]}, "command": cmd}
        stale = self._ensure_none_running()  # nothing of ours may load the CPU during this run
        if stale:
            rec["stopped_before"] = stale
        cool_st, waited, timed_out = self._wait_cool()
        before = cool_st
        cpu_before = cpu_state(self.adb, self.serial, f["cores"], o.command_timeout)
        self.log(f"{m.name}: {c.threads} thread(s), {c.delegate}, {c.num_runs} runs on cores {cores} (mask {mask})")
        t0 = time.monotonic()
        out_text, rc, err, res = "", None, None, None
        try:
            res = self.adb.shell(self.serial, cmd, timeout=o.run_timeout, what="benchmark_model", stop=o.stop)
            out_text, rc = res.output, res.rc
        except ShellStopped as e:
            # only the local adb client was killed: the tool may still run on the phone (a real adbd does not
            # stop a raw shell's process when the host hangs up); stop it there too and check it is gone
            res, out_text = e.partial, e.partial.output
            try:
                rec["stopped_on_device"] = self._ensure_none_running()
            except DeviceError as e2:
                rec.update(status="failed", error=f"{e.message}; {e2.message}")
                self._write(rec, m, c, out_text)
                raise
            last = res.tail()
            if e.kind == "interrupted":
                msg = ("interrupted during benchmark_model; it was stopped on the device; finished runs are saved, "
                       "run again with --resume")
                rec.update(status="failed", error=msg + (f" (last output: {last})" if last else ""))
                self._write(rec, m, c, out_text)
                raise DeviceError(self.serial, msg, "interrupted") from None
            err = (f"benchmark_model did not finish within {o.run_timeout:g} s (--run-timeout); it was stopped "
                   "on the device too (a hung delegate or a too large --num_runs?)"
                   + (f"; last output: {last}" if last else ""))
        except DeviceError as e:
            rec.update(status="failed", error=e.message)
            self._write(rec, m, c, out_text)
            raise
        rec["wall_s"] = round(time.monotonic() - t0, 3)
        if err is None:
            # adb 29 exits 0 when the connection drops before the exit code arrives: ask the server
            try:
                st = self.adb.state(self.serial)
            except (AdbError, DeviceError):
                st = "unknown"
            if st != "device":
                msg = (f"device {'disconnected' if st == 'missing' else 'went ' + st} during benchmark_model "
                       "(exit {rc}); reconnect it and run again with --resume").replace("{rc}", str(rc))
                rec.update(status="failed", error=msg)
                self._write(rec, m, c, out_text)
                raise DeviceError(self.serial, msg, "disconnected")
        try:
            after = thermal_state(self.adb, self.serial, o.command_timeout)
            cpu_after = cpu_state(self.adb, self.serial, f["cores"], o.command_timeout)
        except DeviceError as e:
            rec.update(status="failed", error=err or e.message)
            self._write(rec, m, c, out_text)
            raise
        rose = (before.get("status") is not None and after.get("status") is not None
                and after["status"] > before["status"])
        rec["thermal"] = {"before": before, "after": after, "rose": rose, "cooldown_s": round(waited, 2),
                          "cooldown_timed_out": timed_out}
        rec["cpu"] = {"before": cpu_before, "after": cpu_after}
        if rose:
            self.log(f"thermal status rose from {before['status']} to {after['status']} during the run: flagged")
        if err is None and rc != 0:
            # the lines just before the failure: both streams in the order they arrived
            err = f"benchmark_model exited with code {rc}{_signal_text(rc)}: {res.tail()}"
        if err is None:
            try:
                rec["figures"] = parse_output(out_text)
            except ParseError as e:
                err = f"could not parse benchmark_model output ({e})"
        if err:
            rec.update(status="failed", error=err)
        self._write(rec, m, c, out_text)
        if err:
            self.log(f"failed: {err}")
        else:
            fig = rec["figures"]
            self.log(f"mean {fig['mean_ms']:.2f} ms over {fig.get('count', '?')} runs"
                     + (f", p50 {fig['p50_ms']:.2f}" if "p50_ms" in fig else ""))

    def _write(self, rec: dict, m: ModelSpec, c: Config, out_text: str) -> None:
        d = os.path.join(self.results.raw_dir, _safe(self.serial))
        os.makedirs(d, exist_ok=True)
        raw = os.path.join(d, f"{m.sha256[:12]}-{c.slug()}-{time.strftime('%Y%m%d-%H%M%S')}-"
                              f"{int(time.time() * 1e3) % 1000:03d}.txt")
        atomic_write_text(raw, f"$ adb -s {self.serial} shell {rec['command']}\n{out_text}")
        rec["raw_output"] = raw
        self.results.append(rec)
        self.outcome["ok" if rec["status"] == "ok" else "failed"] += 1
        self.outcome["records"].append(rec)


def run_bench(adb: Adb, serials: list[str], models: list[ModelSpec], configs: list[Config], results_path: str,
              opts: Options) -> list[dict]:
    """Every device in its own thread; returns one outcome per device (ok/failed/skipped counts, error)."""
    results = Results(results_path)
    runs = [DeviceRun(adb, s, models, configs, results, opts, i) for i, s in enumerate(serials)]
    # even one device runs in a worker thread: Ctrl-C reaches this thread, which sets the stop event so that
    # each device stops its benchmark on the phone, cleans up and returns
    ex = ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="device")
    futs = [ex.submit(r.run) for r in runs]
    try:
        return [f.result() for f in futs]
    except KeyboardInterrupt:
        opts.stop.set()  # each phone stops its current run (on the device too) and cleans up
        raise
    finally:
        ex.shutdown(wait=True)
