"""Per-op time breakdown of a .tflite through LiteRT + XNNPACK, by timing each op on its own.

LiteRT's op profiler is not reachable from Python (``experimental_force_delegate_node_profiling``
exists but nothing reads the profile back), and no ``benchmark_model`` binary ships on PyPI for
this machine. So the breakdown is measured the other way round:

1. every operator of the model gets a signature: op type, the dtypes and shapes of its inputs
   (constants marked) and outputs, and its fused activation. Ops with one signature cost the same.
2. one representative op per signature is cut out of the model into a one-op .tflite (its own
   tensors, constant buffers and quantization parameters, nothing else) and run through the same
   interpreter with XNNPACK and the same thread count; each one-op model also says whether XNNPACK
   took the op.
3. all one-op models and the whole model are timed interleaved (``rounds`` rounds of ``runs``
   invokes each); an empty-ish one-op model (a 1-element ADD) gives the fixed cost of one
   ``invoke()`` from Python, which is subtracted from every one-op median.
4. time per signature = count x net median; they are summed per op type and dtype domain
   (``ADD f32``, ``FULLY_CONNECTED i8``, ``QUANTIZE f32->i8``...), and the sum over all ops is
   reported beside the whole model's median. Inside the model ops share caches and XNNPACK's
   partition (no per-op dispatch), so the sum is an estimate of where the time goes, not an
   exact split.

Command (the results file records it)::

    python -m mobilebert_mobile.benchmarks.op_profile --preset mobilebert --out benchmarks/results/int8
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import sys
import tempfile
import time

import numpy as np

from mobilebert_mobile.converters.tflite import op_name

_DT = {0: "f32", 1: "f16", 2: "i32", 3: "u8", 4: "i64", 9: "i8", 7: "i16", 6: "bool"}


def _read(model_bytes: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


def _write(m) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _is_const(m, t) -> bool:
    b = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
    return b is not None and b.data is not None and len(b.data) > 0


def domain(m, sg, op) -> str:
    """``f32``, ``i8``, ``f32->i8`` (QUANTIZE), ``i8->f32`` (DEQUANTIZE), ``i8->i8`` (requantize)..."""
    name = op_name(m, op)
    ins = [sg.tensors[i] for i in op.inputs if i >= 0 and not _is_const(m, sg.tensors[i])]
    src = _DT.get(ins[0].type, "?") if ins else "const"
    dst = _DT.get(sg.tensors[op.outputs[0]].type, "?")
    if name in ("QUANTIZE", "DEQUANTIZE", "CAST"):
        return f"{src}->{dst}"
    if name == "FULLY_CONNECTED" and src == "f32":
        w = sg.tensors[op.inputs[1]]
        if _DT.get(w.type) == "i8":
            return "f32 (i8 weights, dynamic)"
    return src if src == dst or src == "const" else f"{src}->{dst}"


def signature(m, sg, op) -> tuple:
    def t(i):
        if i < 0:
            return None
        x = sg.tensors[i]
        q = x.quantization
        nq = 0 if q is None or q.scale is None else len(q.scale)
        return (_DT.get(x.type, x.type), tuple(int(s) for s in x.shape), _is_const(m, x), nq)

    opt = op.builtinOptions
    fused = getattr(opt, "fusedActivationFunction", 0) if opt is not None else 0
    extra = tuple(sorted((k, v) for k, v in (vars(opt).items() if opt is not None else [])
                         if isinstance(v, (int, float, bool))))
    return (op_name(m, op), tuple(t(i) for i in op.inputs), tuple(t(i) for i in op.outputs), fused, extra)


def extract_op(m, index: int) -> bytes:
    """A one-op model: operator ``index`` of subgraph 0 with its own tensors and constant buffers."""
    from tensorflow.lite.python import schema_py_generated as s

    sg = m.subgraphs[0]
    op = sg.operators[index]
    new = s.ModelT()
    new.version = m.version
    new.description = b"one op"
    new.operatorCodes = [copy.copy(m.operatorCodes[op.opcodeIndex])]
    new.buffers = [s.BufferT()]
    tensors, remap = [], {}

    def take(i):
        if i < 0:
            return -1
        if i in remap:
            return remap[i]
        t = copy.copy(sg.tensors[i])
        if _is_const(m, t):
            b = s.BufferT()
            b.data = m.buffers[t.buffer].data
            new.buffers.append(b)
            t.buffer = len(new.buffers) - 1
        else:
            t.buffer = 0
        remap[i] = len(tensors)
        tensors.append(t)
        return remap[i]

    nop = copy.copy(op)
    nop.opcodeIndex = 0
    nop.inputs = [take(i) for i in op.inputs]
    nop.outputs = [take(i) for i in op.outputs]
    if op.intermediates is not None and len(op.intermediates):
        nop.intermediates = [take(i) for i in op.intermediates]
    g = s.SubGraphT()
    g.tensors = tensors
    g.operators = [nop]
    g.inputs = [remap[i] for i in op.inputs if i >= 0 and not _is_const(m, sg.tensors[i])]
    g.outputs = list(nop.outputs)
    g.name = b"main"
    new.subgraphs = [g]
    return _write(new)


def _null_model() -> bytes:
    """One ADD of two 1-element float tensors: the fixed cost of an ``invoke()`` from Python."""
    from tensorflow.lite.python import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.ADD
    code.version = 1
    m.operatorCodes = [code]
    m.buffers = [s.BufferT()]
    ts = []
    for n in (b"a", b"b", b"c"):
        t = s.TensorT()
        t.shape = [1]
        t.type = s.TensorType.FLOAT32
        t.name = n
        t.buffer = 0
        ts.append(t)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType = s.BuiltinOptions.AddOptions
    op.builtinOptions = s.AddOptionsT()
    g = s.SubGraphT()
    g.tensors, g.operators, g.inputs, g.outputs, g.name = ts, [op], [0, 1], [2], b"main"
    m.subgraphs = [g]
    return _write(m)


def _fill(detail: dict, rng) -> np.ndarray:
    shape, dt = detail["shape"], detail["dtype"]
    if dt == np.float32:
        return rng.standard_normal(shape).astype(np.float32)
    if dt in (np.int8, np.uint8, np.int16):
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max + 1, size=shape).astype(dt)
    return np.zeros(shape, dt)  # ids, masks, indices: 0 is valid for every lookup


class _Timed:
    """An interpreter with its inputs set, ready to be invoked and timed. When XNNPACK takes the
    op but cannot run it alone (its runtime set-up fails), it runs on the built-in kernels and
    ``xnnpack_error`` says so."""

    def __init__(self, path: str, threads: int, feeds: dict | None = None):
        from mobilebert_mobile.runtime.litert import interpreter

        self.xnnpack_error = None
        for xnnpack in (True, False):
            self.it = interpreter(path, num_threads=threads, use_xnnpack=xnnpack)
            self.it.allocate_tensors()
            rng = np.random.default_rng(0)
            for d in self.it.get_input_details():
                name = d["name"]
                x = feeds[name] if feeds and name in feeds else _fill(d, rng)
                self.it.set_tensor(d["index"], x.astype(d["dtype"]))
            try:
                self.it.invoke()
                break
            except RuntimeError as e:
                if not xnnpack:
                    raise
                self.xnnpack_error = str(e).splitlines()[0][:160]
        ops = self.it._get_ops_details()
        self.delegated = any(o["op_name"] == "DELEGATE" for o in ops)
        self.times: list[float] = []

    def run(self, n: int) -> None:
        inv = self.it.invoke
        for _ in range(n):
            t = time.perf_counter()
            inv()
            self.times.append(time.perf_counter() - t)

    def warm_up(self, n: int = 3) -> None:
        """Invoke ``n`` times and keep none of the timings."""
        self.run(n)
        self.times.clear()


def run_interleaved(timed, per_round: int, rounds: int, log=None) -> None:
    """Warm every ``_Timed`` up, then time them in turn, ``per_round`` invokes each, ``rounds`` times:
    a machine that slows down mid-run slows every model alike."""
    timed = list(timed)
    for t in timed:
        t.warm_up()
    for r in range(rounds):
        for t in timed:
            t.run(per_round)
        if log:
            log(f"round {r + 1}/{rounds}")


def model_feeds(path: str, seq_len: int) -> dict:
    """Real token ids for a whole BERT model (one sentence), by input name."""
    from mobilebert_mobile.runtime.litert import interpreter

    from mobilebert_mobile import assets
    from mobilebert_mobile.tokenizer import Tokenizer

    tok = Tokenizer.from_file(assets.vocab_path(), max_length=seq_len)
    f = tok(assets.sample_sentences(1, offset=2000)).model_inputs()
    it = interpreter(path)
    out = {}
    for d in it.get_input_details():
        key = next((k for k in f if k in d["name"]), None)
        if key is not None:
            out[d["name"]] = f[key].astype(d["dtype"])
    return out


def profile(models: dict[str, str], *, threads: int = 2, runs: int = 20, rounds: int = 5, seq_len: int = 128,
            log=lambda s: None) -> dict:
    """Per-op breakdown of each model in ``models`` ({label: path}); everything timed interleaved."""
    work = tempfile.mkdtemp(prefix="op_profile-")
    null_path = os.path.join(work, "null.tflite")
    with open(null_path, "wb") as fh:
        fh.write(_null_model())
    timed: dict[str, _Timed] = {"null": _Timed(null_path, threads)}
    groups: dict[str, list[dict]] = {}
    for label, path in models.items():
        with open(path, "rb") as fh:
            m = _read(fh.read())
        sg = m.subgraphs[0]
        by_sig: dict[tuple, dict] = {}
        for k, op in enumerate(sg.operators):
            sig = signature(m, sg, op)
            g = by_sig.get(sig)
            if g is None:
                g = by_sig[sig] = {"op": sig[0], "domain": domain(m, sg, op), "count": 0, "example": k,
                                   "shapes": [list(x[1]) if x else None for x in sig[1]],
                                   "out_shape": list(sig[2][0][1]) if sig[2] and sig[2][0] else None}
            g["count"] += 1
        for j, g in enumerate(by_sig.values()):
            p = os.path.join(work, f"{label.replace(' ', '_')}_{j}.tflite")
            with open(p, "wb") as fh:
                fh.write(extract_op(m, g["example"]))
            key = f"{label}/{j}"
            try:
                timed[key] = _Timed(p, threads)
            except Exception as e:  # noqa: BLE001 - an op that cannot run alone is reported, not fatal
                g["error"] = f"{type(e).__name__}: {e}"[:200]
                continue
            g["key"] = key
            g["xnnpack"] = timed[key].delegated
            if timed[key].xnnpack_error:
                g["xnnpack_error"] = timed[key].xnnpack_error
        groups[label] = list(by_sig.values())
        timed[f"{label}/whole"] = _Timed(path, threads, model_feeds(path, seq_len))
        log(f"{label}: {len(sg.operators)} ops in {len(by_sig)} signatures")
    run_interleaved(timed.values(), runs, rounds, log)
    null_ms = float(np.median(timed["null"].times) * 1e3)
    out = {"threads": threads, "runs": runs, "rounds": rounds, "invoke_overhead_ms": null_ms, "models": {}}
    for label, gs in groups.items():
        whole = np.asarray(timed[f"{label}/whole"].times) * 1e3
        for g in gs:
            if "key" in g:
                med = float(np.median(timed[g.pop("key")].times) * 1e3)
                g["median_ms"] = med
                g["net_ms"] = max(med - null_ms, 0.0)
                g["total_ms"] = g["net_ms"] * g["count"]
        by_type: dict[str, dict] = collections.defaultdict(lambda: {"count": 0, "total_ms": 0.0, "outside_xnnpack": 0})
        for g in gs:
            k = f"{g['op']} {g['domain']}"
            by_type[k]["count"] += g["count"]
            by_type[k]["total_ms"] += g.get("total_ms", 0.0)
            if not g.get("xnnpack", False):
                by_type[k]["outside_xnnpack"] += g["count"]
        total = sum(v["total_ms"] for v in by_type.values())
        out["models"][label] = {
            "path": os.path.abspath(models[label]), "ops": sum(g["count"] for g in gs),
            "whole_median_ms": float(np.median(whole)), "sum_of_ops_ms": total,
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["total_ms"])),
            "by_signature": sorted(gs, key=lambda g: -g.get("total_ms", 0.0)),
        }
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return out


def markdown(res: dict, top: int = 15) -> str:
    from mobilebert_mobile._machine import describe

    lines = [f"# Per-op profile: {res.get('title', '')}", "",
             f"{describe(res.get('machine'))} {res['threads']} threads, XNNPACK. "
             f"Each op timed alone as a one-op .tflite, {res['rounds']} interleaved rounds x {res['runs']} "
             f"invokes; the invoke overhead ({res['invoke_overhead_ms'] * 1e3:.1f} us, a 1-element ADD) is "
             f"subtracted. Command: `{res.get('command', '')}`", ""]
    labels = list(res["models"])
    lines += ["| model | ops | whole model median ms | sum of ops ms | sum / whole |", "|---|---|---|---|---|"]
    for lab in labels:
        r = res["models"][lab]
        lines.append(f"| {lab} | {r['ops']} | {r['whole_median_ms']:.2f} | {r['sum_of_ops_ms']:.2f} | "
                     f"{r['sum_of_ops_ms'] / r['whole_median_ms']:.2f} |")
    lines.append("")
    for lab in labels:
        r = res["models"][lab]
        lines += [f"## {lab}: by op type and dtype", "",
                  "| op (dtype) | count | total ms | share of sum | not taken by XNNPACK |", "|---|---|---|---|---|"]
        for k, v in r["by_type"].items():
            lines.append(f"| {k} | {v['count']} | {v['total_ms']:.3f} | "
                         f"{v['total_ms'] / max(r['sum_of_ops_ms'], 1e-9):.1%} | {v['outside_xnnpack'] or ''} |")
        lines += ["", f"Most expensive signatures ({lab}):", "",
                  "| op | dtype | input shapes | count | us each (net) | total ms |", "|---|---|---|---|---|---|"]
        for g in r["by_signature"][:top]:
            shp = ", ".join("x".join(map(str, s)) if s is not None else "-" for s in g["shapes"])
            lines.append(f"| {g['op']} | {g['domain']} | {shp} | {g['count']} | "
                         f"{g.get('net_ms', float('nan')) * 1e3:.1f} | {g.get('total_ms', float('nan')):.3f} |")
        lines.append("")
    if res.get("findings"):
        lines += ["## Findings", "", *res["findings"], ""]
    return "\n".join(lines)


def compare_findings(res: dict, a: str, b: str) -> list[str]:
    """Op types whose time differs most between model ``a`` (e.g. int8) and ``b`` (dynamic-int8)."""
    ta, tb = res["models"][a]["by_type"], res["models"][b]["by_type"]

    def by_op(t):
        d = collections.defaultdict(float)
        for k, v in t.items():
            d[k.split(" ")[0]] += v["total_ms"]
        return d

    da, db = by_op(ta), by_op(tb)
    rows = []
    for k in set(da) | set(db):
        rows.append((da.get(k, 0.0) - db.get(k, 0.0), k))
    rows.sort(reverse=True)
    wa, wb = res["models"][a]["whole_median_ms"], res["models"][b]["whole_median_ms"]
    out = [f"- whole model: {a} {wa:.2f} ms vs {b} {wb:.2f} ms (ratio {wa / wb:.2f}); sum of ops "
           f"{res['models'][a]['sum_of_ops_ms']:.2f} vs {res['models'][b]['sum_of_ops_ms']:.2f} ms.",
           f"- op types (all dtypes together) that cost more in {a} than in {b} (ms, sum over the model):"]
    for diff, k in rows[:8]:
        if diff > 0.005:
            out.append(f"  - {k}: {da.get(k, 0.0):.3f} vs {db.get(k, 0.0):.3f} (+{diff:.3f})")
    out.append(f"- op types that cost less in {a}:")
    for diff, k in sorted(rows)[:6]:
        if diff < -0.005:
            out.append(f"  - {k}: {da.get(k, 0.0):.3f} vs {db.get(k, 0.0):.3f} ({diff:.3f})")
    return out


def _ensure_models(preset: str, layers: int | None, seq_len: int, work: str, precisions) -> dict[str, str]:
    from mobilebert_mobile.converters import convert

    from .host import build_checkpoint

    ck = build_checkpoint(preset, layers, os.path.join(work, "checkpoint"))
    bundle = os.path.join(work, "bundle")
    if not all(os.path.isfile(os.path.join(bundle, f"model_{p}.tflite")) for p in precisions):
        convert(ck, bundle, precisions=tuple(precisions), seq_len=seq_len, batch_size=1, calibration_size=100,
                heldout_size=100, include_checkpoint=False, metadata=False, quiet=True, force=True)
    return {p: os.path.join(bundle, f"model_{p}.tflite") for p in precisions}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilebert_mobile.benchmarks.op_profile", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("models", nargs="*", help="LABEL=PATH.tflite pairs (default: convert --preset)")
    ap.add_argument("--preset", default="mobilebert")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--precision", default="int8,dynamic-int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default=None, help="folder for the converted models (kept; reused when present)")
    ap.add_argument("--out", default=None, help="write op_profile.md / op_profile.json here")
    a = ap.parse_args(argv)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if a.models:
        models = dict(x.split("=", 1) for x in a.models)
        title = ", ".join(models)
    else:
        work = a.work or os.path.join(tempfile.gettempdir(), f"op_profile_{a.preset}_{a.layers or 'all'}_{a.seq_len}")
        say(f"converting {a.preset} ({a.precision}) into {work}")
        models = _ensure_models(a.preset, a.layers, a.seq_len, work, a.precision.split(","))
        title = f"{a.preset}{f' ({a.layers} layers)' if a.layers else ''}, seq {a.seq_len}, batch 1"
    res = profile(models, threads=a.threads, runs=a.runs, rounds=a.rounds, seq_len=a.seq_len, log=say)
    from mobilebert_mobile._machine import machine

    res["machine"] = machine()
    res["title"] = title
    res["command"] = "python -m mobilebert_mobile.benchmarks.op_profile " + " ".join(argv if argv is not None
                                                                                       else sys.argv[1:])
    labs = list(res["models"])
    if len(labs) >= 2:
        res["findings"] = compare_findings(res, labs[0], labs[1])
    md = markdown(res)
    if a.out:
        from .charts import save  # STEM.md (linking the chart), STEM.json and STEM.png

        save(a.out, "op_profile", md, res)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
