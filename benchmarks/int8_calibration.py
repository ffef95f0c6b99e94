"""Full-int8 calibration choices measured on one checkpoint, with no float fallback.

For each graph (as exported; with the SmoothQuant-style equalization pass, ``--alpha``; with the
residual stream's outlier channels scaled, ``--residual-tau``) the model is calibrated once; then
every range method (min/max, percentile 99.99, MSE-optimal) is written into the calibrated model's
tensor ranges, quantized with only the ops XNNPACK has no int8 kernel for kept float (attention's
BATCH_MATMUL/SOFTMAX, GELU, RSQRT; no op-type or layer fallback) and scored on held-out text against
PyTorch float. Dynamic-int8 is scored beside it, and every model is timed interleaved (XNNPACK, 2
threads).

Command (the results file records it)::

    python -m mobilebert_mobile.benchmarks.int8_calibration --checkpoint minilm --residual-tau 3,6 --out benchmarks/results/int8

``--tensor-errors`` adds, for the last graph's MSE-ranged int8, where its error enters: every tensor
against the fp32 model of the same graph (``tensor_errors.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def run(checkpoint: str, *, task: str | None = None, seq_len: int = 128, calib_n: int = 100, held_n: int = 200,
        alphas=(0.5,), taus=(), threads: int = 2, full: bool = False, tensor_errors: bool = False,
        log=print) -> dict:
    from mobilebert_mobile._machine import machine
    from mobilebert_mobile.converters import calibration as cal
    from mobilebert_mobile.converters import onnx_passes as P
    from mobilebert_mobile.converters import verify
    from mobilebert_mobile.converters.export import (DEFAULT_OUTPUTS, INPUT_NAMES, ExportWrapper, export_onnx,
                                                     load_for_export, torch_outputs)
    from mobilebert_mobile.converters.onnx_to_tf import Lowering
    from mobilebert_mobile.converters.quantize import (DEFAULT_FLOAT_OPS, RANGE_METHODS, activation_histograms,
                                                       apply_ranges, calibrate, quantize_calibrated)
    from mobilebert_mobile.converters.tflite import (concrete_function, float_compute_ops, make_converter,
                                                     name_io_tensors, run_tflite)
    from mobilebert_mobile.converters.tflite import convert as tfl_convert
    from mobilebert_mobile.tokenizer import Tokenizer
    from mobilebert_mobile import assets

    from .op_profile import _Timed

    model, task, info = load_for_export(checkpoint, task, mask_value=-100.0)
    outputs = tuple(DEFAULT_OUTPUTS[task])
    vocab = next((os.path.join(checkpoint, n) for n in ("vocab.txt", "tokenizer.json")
                  if os.path.isfile(os.path.join(checkpoint, n))), assets.vocab_path())
    tok = Tokenizer.from_file(vocab, max_length=seq_len)
    items = cal.default_texts(task, calib_n + held_n)
    c_items, h_items = cal.split(items, calib_n, held_n)
    calib, held = tok(c_items).model_inputs(), tok(h_items).model_inputs()
    wrapped = ExportWrapper.build(model, task, outputs)
    ref = torch_outputs(wrapped, held, outputs, 1)
    mask = held["attention_mask"]
    onx = export_onnx(wrapped, None, batch=1, seq_len=seq_len, outputs=outputs)
    metric = verify.TARGET_METRIC[task]
    work = tempfile.mkdtemp(prefix="int8cal-")
    res = {"checkpoint": checkpoint, "task": task, "family": info["family"], "metric": metric,
           "target": verify.DEFAULT_TARGETS[task], "calibration_texts": len(c_items), "heldout_texts": len(h_items),
           "machine": machine(), "variants": {}, "equalization": {}, "residual_scaling": {},
           "float_ops": list(DEFAULT_FLOAT_OPS)}

    def score(model_bytes: bytes, name: str) -> dict:
        p = os.path.join(work, f"{name}.tflite")
        with open(p, "wb") as fh:
            fh.write(name_io_tensors(model_bytes))
        m = verify.compare(task, run_tflite(p, held), ref, mask)
        return {"path": p, "score": verify.score(task, m), **{k: v for k, v in m.items() if k != metric}}

    graphs: dict = {"no equalization": None}
    for a in alphas:
        graphs[f"equalized a={a}"] = ("equalize", a)
    for tau in taus:
        graphs[f"residual-scaled tau={tau}"] = ("residual", tau)
    for gname, extra in graphs.items():
        t = time.perf_counter()
        pinfo: dict = {}
        passes = P.passes_for(static_int8=True, calib_feeds=calib, info=pinfo)  # as convert runs them for int8
        res.setdefault("query_key", {})[gname] = pinfo.get("query_key", {})
        einfo: dict = {}
        if extra is not None and extra[0] == "equalize":
            at = [n for n, _ in passes].index("fuse_gelu") + 1
            passes.insert(at, ("equalize", P.make_equalize_pass(calib, alpha=extra[1], info=einfo)))
            res["equalization"][gname] = einfo
        elif extra is not None:
            at = [n for n, _ in passes].index("remove_dead")
            passes.insert(at, ("scale_residual_channels", P.make_residual_scaling_pass(calib, tau=extra[1], info=einfo)))
            res["residual_scaling"][gname] = einfo
        opt, _ = P.run_passes(onx, {k: v[:16] for k, v in held.items()}, passes=passes)
        fn = concrete_function(Lowering(opt), 1, seq_len, outputs)

        def representative():
            for s in range(calib["input_ids"].shape[0]):
                yield {k: calib[k][s:s + 1] for k in INPUT_NAMES}

        fp32_path = None  # this graph's fp32 model, when made
        if extra is None:
            res["variants"]["dynamic-int8"] = score(tfl_convert(fn, "dynamic-int8"), "dyn")
            res["variants"]["fp32"] = score(tfl_convert(fn, "fp32"), "fp32")
            fp32_path = res["variants"]["fp32"]["path"]
        calibrated = calibrate(make_converter(fn, "int8", representative))
        hists = activation_histograms(calibrated, calib)
        for method in RANGE_METHODS:
            ranged, stats = apply_ranges(calibrated, hists, method)
            q = quantize_calibrated(ranged, float_ops=DEFAULT_FLOAT_OPS)
            name = f"int8 {method}, {gname}"
            res["variants"][name] = {**score(q, name.replace(" ", "_").replace(",", "").replace("=", "")),
                                     "ranges": stats}
            log(f"{name}: {metric} {res['variants'][name]['score']:.4f}")
            if full:  # every compute op int8, attention included
                qf = quantize_calibrated(ranged, float_ops=())
                fname = f"int8-full {method}, {gname}"
                res["variants"][fname] = {**score(qf, fname.replace(" ", "_").replace(",", "").replace("=", "")),
                                          "ranges": stats, "float_compute_ops": float_compute_ops(qf)}
                log(f"{fname}: {metric} {res['variants'][fname]['score']:.4f}")
        if tensor_errors and gname == list(graphs)[-1]:  # the last graph's MSE-ranged int8, tensor by tensor
            from .tensor_errors import tensor_errors as per_tensor

            if fp32_path is None:
                fp32_path = os.path.join(work, "fp32_same_graph.tflite")
                with open(fp32_path, "wb") as fh:
                    fh.write(name_io_tensors(tfl_convert(fn, "fp32")))
            res["tensor_errors"] = {"variant": f"int8 mse, {gname}", "texts": 8,
                                    "rows": per_tensor(fp32_path, res["variants"][f"int8 mse, {gname}"]["path"], held)}
        log(f"{gname}: {time.perf_counter() - t:.0f} s")
    # latency, interleaved
    from .op_profile import model_feeds, run_interleaved

    timed = {k: _Timed(v["path"], threads, model_feeds(v["path"], seq_len)) for k, v in res["variants"].items()}
    run_interleaved(timed.values(), 8, 5)
    for k, t in timed.items():
        res["variants"][k]["median_ms"] = float(np.median(t.times) * 1e3)
        res["variants"][k].pop("path")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return res


def markdown(res: dict) -> str:
    from mobilebert_mobile.converters.onnx_passes import describe_query_key, describe_residual_scaling

    mach = res["machine"]
    lines = [f"# Full-int8 calibration without fallback: {res['family']} {res['task']} (`{res['checkpoint']}`)", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, int8 ISA {mach['int8_isa']['best']}. Held-out: "
             f"{res['heldout_texts']} Rotten Tomatoes sentences, calibration: {res['calibration_texts']} others. "
             f"int8 = int8 activations everywhere except the ops XNNPACK has no int8 kernel for "
             f"({', '.join(res.get('float_ops', ['BATCH_MATMUL', 'SOFTMAX']))}, and the LayerNorm variance feeding RSQRT: float "
             f"inside the XNNPACK partition); no op-type or layer fallback. Latency: XNNPACK, 2 threads, interleaved, median. "
             f"Command: `{res.get('command', '')}`", "",
             f"| variant | {res['metric']} | max abs diff | median ms | ranges kept (median of tensors) |",
             "|---|---|---|---|---|"]
    for k, v in res["variants"].items():
        rk = v.get("ranges", {}).get("range_kept_median")
        lines.append(f"| {k} | {v['score']:.4f} | {v['max_abs_diff']:.3g} | {v['median_ms']:.2f} | "
                     f"{'' if rk is None else f'{rk:.2f}'} |")
    for g, e in res["equalization"].items():
        lines += ["", f"Equalization ({g}): {e.get('sites', 0)} site(s) folded {e.get('by_kind', {})}; blocked "
                      f"(an output also read by a residual add or non-linear op): {e.get('blocked_by_kind', {})}."]
    for g, e in res.get("query_key", {}).items():
        if e.get("pairs"):
            lines += ["", f"Query/key equalization ({g}): {describe_query_key(e)}."]
    for g, e in res.get("residual_scaling", {}).items():
        lines += ["", f"Residual channel scaling ({g}): {describe_residual_scaling(e)}."]
    te = res.get("tensor_errors")
    if te:
        from .tensor_errors import markdown as te_markdown

        lines += ["", f"## Where the error enters ({te['variant']}; {te['texts']} held-out texts, every tensor "
                      f"against the fp32 model of the same graph, largest increases first)", ""] + te_markdown(te["rows"])
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilebert_mobile.benchmarks.int8_calibration")
    ap.add_argument("--checkpoint", required=True, help="checkpoint folder, or 'minilm' for all-MiniLM-L6-v2")
    ap.add_argument("--task")
    ap.add_argument("--label", help="name of the results files (default: from the checkpoint)")
    ap.add_argument("--calibration-size", type=int, default=100)
    ap.add_argument("--heldout-size", type=int, default=200)
    ap.add_argument("--alpha", default="0.5", help="equalization strengths to try (comma-separated; empty: none)")
    ap.add_argument("--residual-tau", default="", help="residual channel scaling thresholds to try "
                    "(comma-separated; x the median channel maximum; empty: none)")
    ap.add_argument("--int8-full", action="store_true", help="also every compute op int8 (attention included)")
    ap.add_argument("--tensor-errors", action="store_true", help="also compare the last graph's MSE-ranged int8 "
                    "with its fp32 model tensor by tensor (where the error enters)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from .charts import is_plain_stem, save

    ck = a.checkpoint
    if ck == "minilm":
        from mobilebert_mobile import assets

        ck = str(assets.minilm_dir())
    # the results files' name, checked before the long run rather than when writing them
    label = a.label if a.label is not None else os.path.basename(os.path.normpath(ck))
    if not is_plain_stem(label):
        ap.error(f"--label names the results files and must be a plain file name (letters, digits, '-' and '_'), "
                 f"got {label!r}" + ("" if a.label is not None else " from the checkpoint folder: give --label"))
    res = run(ck, task=a.task, calib_n=a.calibration_size, held_n=a.heldout_size,
              alphas=tuple(float(x) for x in a.alpha.split(",") if x),
              taus=tuple(float(x) for x in a.residual_tau.split(",") if x), full=a.int8_full,
              tensor_errors=a.tensor_errors, log=lambda s: print(s, file=sys.stderr,
                                                                                         flush=True))
    res["command"] = "python -m mobilebert_mobile.benchmarks.int8_calibration " + " ".join(
        argv if argv is not None else sys.argv[1:])
    md = markdown(res)
    if a.out:
        save(a.out, f"calibration_{label}", md, res)  # STEM.md (linking the chart), STEM.json and STEM.png
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
