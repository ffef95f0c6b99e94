"""Parse the text output of TFLite's ``benchmark_model`` (every release's format) and of LiteRT's
``benchmark_litert_model``.

All times come back in milliseconds. Known forms (see tests/fixtures/benchmark_model/):

* current TFLite: ``count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929`` after each
  ``Running benchmark for at least ...`` line (warm-up, then the measured runs), and
  ``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): ...``
* LiteRT's copy: the stats line ends with `` p5=... median=... p95=...``
* older releases: ``curr=`` before ``count=`` (key order does not matter here)
* ``count=N curr=X(all same)`` and ``count=0``
* the oldest: ``Average inference timings in us: Warmup: ..., Init: ..., Inference: ...``
* ``benchmark_litert_model``: a ``===== BENCHMARK RESULTS =====`` block of ``Label: X ms (N runs)`` lines
* memory: ``Memory footprint delta ... init=.. overall=..`` and ``Overall peak memory footprint (MB) ...``
* ``--enable_op_profiling`` tables ("Run Order", "Top by Computation Time", "Summary by node type")
"""
from __future__ import annotations

import re
from mobilebert_mobile.errors import InputError

__all__ = ["ParseError", "parse_output", "parse_stats_line"]


class ParseError(InputError):
    """The output carries no latency figures this parser knows."""


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_KV = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(" + _NUM + r")(\(all same\))?")
_STATS = re.compile(r"^(?:[A-Z]+:\s*(?:\[[^\]]*\]\s*)?)?(?:count|curr)=\d")
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_TIMINGS = re.compile(r"Inference timings in us:\s*(.*)$")
_AVG_TIMINGS = re.compile(r"Average inference timings in us:\s*(.*)$")
_LABELLED = re.compile(r"([A-Za-z][A-Za-z ()]*?)\s*:\s*(" + _NUM + r")")
_INIT_SESSION = re.compile(r"Initialized session in (" + _NUM + r")\s*ms")
_MODEL_SIZE = re.compile(r"The input model file size \(MB\):\s*(" + _NUM + r")")
_MEM_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\):\s*init=(" + _NUM +
                        r")\s+overall=(" + _NUM + r")")
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUM + r")")
_RESULTS_HEADER = re.compile(r"=+\s*BENCHMARK RESULTS\s*=+")
_RESULT_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 ()/_-]*?)\s*:\s*(" + _NUM +
                          r")\s*([A-Za-z/%]*)\s*(?:\((\d+) runs?\))?")
_TABLE_HEADER = re.compile(r"^=+\s*(Run Order|Top by Computation Time|Top by Memory Use|Summary by node type)\s*=+")

_US_TO_MS = 1e-3


def parse_stats_line(line: str) -> dict:
    """One ``count=... first=... curr=...`` line (any key order, ``(all same)``, percentiles) -> ms figures."""
    kv: dict[str, float] = {}
    all_same = False
    for key, val, same in _KV.findall(line):
        kv[key] = float(val)
        all_same = all_same or bool(same)
    if "count" not in kv and "curr" not in kv:
        raise ParseError(f"not a stats line: {line.strip()!r}")
    out: dict = {"count": int(kv.get("count", 0))}
    if out["count"] == 0 and "curr" not in kv:
        return out
    if all_same or ("curr" in kv and "avg" not in kv and out["count"] >= 1):
        v = kv["curr"] * _US_TO_MS
        out.update(first_ms=kv.get("first", kv["curr"]) * _US_TO_MS, curr_ms=v, min_ms=v, max_ms=v,
                   mean_ms=v, std_ms=0.0)
        return out
    names = {"first": "first_ms", "curr": "curr_ms", "min": "min_ms", "max": "max_ms", "avg": "mean_ms",
             "std": "std_ms", "median": "p50_ms"}
    for key, val in kv.items():
        if key in names:
            out[names[key]] = val * _US_TO_MS
        elif re.fullmatch(r"p\d{1,2}(?:\.\d+)?", key):
            out[f"p{key[1:].replace('.', '_')}_ms"] = val * _US_TO_MS
    return out


def _labelled_us(text: str) -> dict[str, float]:
    """``Init: 1007529, First inference: 4098, Warmup (avg): 1686.59`` -> {label: microseconds}."""
    out = {}
    for part in text.split(","):
        m = _LABELLED.search(part)
        if m:
            out[m.group(1).strip().lower()] = float(m.group(2))
    return out


def _parse_tables(lines: list[str]) -> dict:
    """Op-profiling tables: name -> list of rows (dicts keyed by the bracketed header names)."""
    tables: dict[str, list[dict]] = {}
    i = 0
    while i < len(lines):
        m = _TABLE_HEADER.match(lines[i].strip())
        if not m:
            i += 1
            continue
        name = m.group(1)
        i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or "[" not in lines[i]:
            continue
        header = [h.strip().lower() for h in re.findall(r"\[([^\]]+)\]", lines[i])]
        rows = []
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("="):
            cells = [c.strip() for c in lines[i].strip().split("\t") if c.strip()]
            if len(cells) < 2:
                cells = lines[i].split()
            row = {}
            for h, c in zip(header, cells):
                c2 = c.rstrip("%")
                try:
                    row[h] = float(c2) if re.fullmatch(_NUM, c2) else c
                except ValueError:
                    row[h] = c
            rows.append(row)
            i += 1
        tables[name] = rows  # the last one: per-run profiles follow the initialization profile
    return tables


def parse_output(text: str) -> dict:
    """Figures of one run: init_ms, first_inference_ms, warmup_ms, mean_ms, std_ms, min_ms, max_ms, count,
    percentiles (p5_ms, p50_ms, p95_ms, ... when printed), peak_memory_mb and more; ``format`` names the form.

    Raises ParseError when no inference latency can be found (a crash or an unknown tool).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    res: dict = {}
    stats: list[tuple[int | None, dict]] = []  # (announced minimum iterations, parsed stats)
    announced: int | None = None
    n_running = 0  # "Running benchmark for at least ..." lines: one for the warm-up, one for the measured runs
    last_running_answered = True
    has_timings = False
    fmt = None
    in_results = False
    for line in lines:
        s = line.strip()
        if not s:
            continue
        m = _RUNNING.search(s)
        if m:
            announced = int(m.group(1))
            n_running += 1
            last_running_answered = False
            continue
        if _RESULTS_HEADER.search(s):
            in_results = True
            fmt = "litert-results"
            continue
        if in_results:
            if s.startswith("="):
                in_results = False
                continue
            m = _RESULT_LINE.match(s)
            if m:
                _results_line(res, m)
            continue
        if _STATS.search(s):
            try:
                stats.append((announced, parse_stats_line(s)))
                last_running_answered = True
            except ParseError:
                pass
            announced = None
            continue
        m = _AVG_TIMINGS.search(s)
        if m:
            has_timings = True
            t = _labelled_us(m.group(1))
            fmt = fmt or "average-timings"
            _timings(res, t)
            continue
        m = _TIMINGS.search(s)
        if m:
            has_timings = True
            _timings(res, _labelled_us(m.group(1)))
            continue
        m = _INIT_SESSION.search(s)
        if m:
            res.setdefault("init_session_ms", float(m.group(1)))
            continue
        m = _MODEL_SIZE.search(s)
        if m:
            res["model_size_mb"] = float(m.group(1))
            continue
        m = _MEM_DELTA.search(s)
        if m:
            res["memory_init_mb"] = float(m.group(1))
            res["memory_overall_mb"] = float(m.group(2))
            continue
        m = _PEAK.search(s)
        if m:
            res["peak_memory_mb"] = float(m.group(1))
            continue
    if n_running and not has_timings and (n_running < 2 or not last_running_answered):
        # a run killed part-way: its last stats line is the warm-up's (or none), not a measurement
        where = "after the warm-up runs" if n_running < 2 else "during the measured runs"
        raise ParseError(f"the output stops {where} (no measured stats line, no 'Inference timings' line): "
                         "benchmark_model did not finish; the warm-up figures are not a result")
    if stats:
        # the measured runs come last; a preceding line is the warm-up
        measured = stats[-1][1]
        if len(stats) >= 2:
            warm = stats[-2][1]
            if warm.get("mean_ms") is not None:
                res.setdefault("warmup_ms", warm["mean_ms"])
            res["warmup_count"] = warm.get("count", 0)
        res["count"] = measured.get("count", 0)
        first_src = stats[-2][1] if len(stats) >= 2 else measured
        if "first_ms" in first_src:
            res.setdefault("first_inference_ms", first_src["first_ms"])
        for k, v in measured.items():
            if k.endswith("_ms") and k != "curr_ms":
                if k == "first_ms":
                    continue
                if k == "mean_ms" and "mean_ms" in res:
                    continue  # the "Inference timings" line is the tool's own (more precise) average
                res[k] = v
        if fmt is None:
            fmt = "litert-percentiles" if any(k.startswith("p") and k[1].isdigit() for k in measured) else "tflite"
    if "init_ms" not in res and "init_session_ms" in res:
        res["init_ms"] = res["init_session_ms"]
    if res.get("count") == 0 and "mean_ms" not in res:
        raise ParseError("benchmark_model ran no measured iterations (count=0)")
    if "mean_ms" not in res:
        raise ParseError("no inference latency in the output (expected 'Inference timings in us', "
                         "'count=... avg=...' or a BENCHMARK RESULTS block)")
    tables = _parse_tables(lines)
    if tables:
        res["op_profile"] = tables
    res["format"] = fmt or "tflite"
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}


def _timings(res: dict, t: dict[str, float]) -> None:
    keys = {"init": "init_ms", "first inference": "first_inference_ms", "warmup (avg)": "warmup_ms",
            "warmup": "warmup_ms", "inference (avg)": "mean_ms", "inference": "mean_ms",
            "no stats": "mean_ms"}
    for label, us in t.items():
        if label in keys:
            res[keys[label]] = us * _US_TO_MS


def _results_line(res: dict, m: re.Match) -> None:
    label, val, unit, runs = m.group(1).strip().lower(), float(m.group(2)), (m.group(3) or "").lower(), m.group(4)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit, 1.0)
    key = {"model initialization": "init_ms", "initialization": "init_ms", "init": "init_ms",
           "warmup (first)": "first_inference_ms", "first inference": "first_inference_ms",
           "warmup (avg)": "warmup_ms", "inference (avg)": "mean_ms", "inference (min)": "min_ms",
           "inference (max)": "max_ms", "inference (std)": "std_ms", "inference (median)": "p50_ms",
           "inference (p50)": "p50_ms", "inference (p90)": "p90_ms", "inference (p95)": "p95_ms",
           "inference (p99)": "p99_ms"}.get(label)
    if key:
        res[key] = val * scale
        if key == "mean_ms" and runs:
            res["count"] = int(runs)
        if key == "warmup_ms" and runs:
            res["warmup_count"] = int(runs)
    elif "peak" in label and "memory" in label:
        res["peak_memory_mb"] = val if unit in ("", "mb") else val / 1024 if unit == "kb" else val
    elif label.startswith("memory") or "rss" in label:
        res["memory_overall_mb"] = val if unit in ("", "mb") else val / 1024 if unit == "kb" else val
    elif label.startswith("throughput"):
        res["throughput_per_s"] = val
