"""Benchmark variants, each loaded and run inside its own child process.

A worker loads one variant at a given thread count, then answers commands from the suite over a
pipe: ``run N`` (latencies of N calls), ``outputs FEEDS`` (for fidelity), ``rss`` (peak memory),
``stop``. An interpreter that aborts kills only its worker; the suite records the exit code.
"""
from __future__ import annotations

import os
import resource
import time

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. ``VmHWM`` resets at exec; ``ru_maxrss`` does not (a
    spawned worker would report its parent's peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _torch_runner(spec: dict, threads: int):
    import torch

    torch.set_num_threads(threads)
    kind = spec["kind"]
    if kind == "transformers":
        import transformers

        model = transformers.MobileBertForSequenceClassification.from_pretrained(
            spec["checkpoint"], attn_implementation="eager").eval()
    else:
        from mobilebert_mobile.modeling import MobileBertForSequenceClassification

        model = MobileBertForSequenceClassification.from_pretrained(spec["checkpoint"]).eval()
    if kind == "torch-compile":
        model = torch.compile(model)

    def run(feeds: dict) -> dict:
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(feeds["input_ids"]).long(),
                        attention_mask=torch.from_numpy(feeds["attention_mask"]).long(),
                        token_type_ids=torch.from_numpy(feeds["token_type_ids"]).long())
            return {"probabilities": torch.softmax(out.logits, -1).numpy()}

    size = sum(p.numel() * p.element_size() for p in model.parameters()) if kind != "torch-compile" else None
    return run, size


def _ort_runner(spec: dict, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(spec["path"], so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    dtypes = {i.name: (np.int64 if "int64" in i.type else np.int32) for i in sess.get_inputs()}

    def run(feeds: dict) -> dict:
        res = sess.run(names, {k: feeds[k].astype(dtypes[k]) for k in dtypes})
        return dict(zip(names, res))

    return run, os.path.getsize(spec["path"])


def _tflite_runner(spec: dict, threads: int):
    from mobilebert_mobile.runtime.litert import interpreter

    it = interpreter(spec["path"], num_threads=threads)
    sigs = it.get_signature_list()
    key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
    runner = it.get_signature_runner(key)
    details = runner.get_input_details()
    # map by name where the names are ours; by position (input_ids, attention_mask, token_type_ids) otherwise
    names = list(details)
    mapping = {n: n for n in names} if set(names) == set(INPUTS) else dict(zip(names, INPUTS))
    dtypes = {n: details[n]["dtype"] for n in names}

    def run(feeds: dict) -> dict:
        res = runner(**{n: feeds[src].astype(dtypes[n]) for n, src in mapping.items()})
        if "probabilities" not in res and len(res) == 1:
            res = {"probabilities": next(iter(res.values()))}
        return {k: np.asarray(v) for k, v in res.items()}

    return run, os.path.getsize(spec["path"])


def load(spec: dict, threads: int):
    kind = spec["kind"]
    if kind in ("torch", "torch-compile", "transformers"):
        return _torch_runner(spec, threads)
    if kind == "ort":
        return _ort_runner(spec, threads)
    if kind == "tflite":
        return _tflite_runner(spec, threads)
    raise ValueError(f"unknown variant kind {kind!r}")


def worker(spec: dict, threads: int, feeds: dict, conn) -> None:
    """Child process: load, report, then serve commands until ``stop``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        t0 = time.perf_counter()
        run, size = load(spec, threads)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run(feeds)
        first_s = time.perf_counter() - t0
        conn.send({"ok": True, "load_s": load_s, "first_call_s": first_s, "size_bytes": size})
    except Exception as e:  # reported to the suite as "skipped: reason"
        conn.send({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return
    while True:
        cmd, arg = conn.recv()
        if cmd == "run":
            ts = []
            for _ in range(arg):
                t = time.perf_counter()
                run(feeds)
                ts.append(time.perf_counter() - t)
            conn.send(ts)
        elif cmd == "outputs":
            from mobilebert_mobile._batching import run_in_fixed_batches

            conn.send(run_in_fixed_batches(run, {k: arg[k] for k in INPUTS}, feeds["input_ids"].shape[0]))
        elif cmd == "rss":
            conn.send(peak_rss_bytes())
        else:
            break
