"""Shared by the int8 fidelity benchmarks (``qat_default``, ``hf_classifier``): convert a classifier
at several precisions, score every .tflite against gold labels and against the float model's own
labels, time them interleaved, and render the table."""
from __future__ import annotations

import os
import shutil
import time

import numpy as np

from mobilebert_mobile.converters.quantize import DEFAULT_FLOAT_OPS  # float inside the one partition: not a fallback


def probs_tflite(path: str, feeds: dict) -> np.ndarray:
    """Class probabilities of a classifier .tflite (softmax of its logits when it outputs those)."""
    from mobilebert_mobile.converters.tflite import run_tflite
    from mobilebert_mobile.runtime.predictor import softmax

    out = run_tflite(path, feeds)
    return out["probabilities"] if "probabilities" in out else softmax(out["logits"].astype(np.float64))


def convert_and_score(name: str, ckpt: str, precisions, feeds: dict, gold: np.ndarray, float_probs: np.ndarray,
                      work: str, *, learned: bool | str = False, log=print) -> tuple[list[dict], dict]:
    """Convert ``ckpt`` at ``precisions`` (seq 128, batch 1, as the bundle) and score each model.

    ``float_probs`` are the float model's class probabilities on ``feeds``. Returns (rows, paths): one
    row per precision (accuracy; label agreement with the float model over all texts and over those
    that are not near-ties, ``verify.TIE_MARGIN``; the ranges used; what was kept float besides
    attention) and the .tflite paths, copied into ``work`` under a name of their own so they outlive
    the conversion folder. ``learned``: False (calibrated only), True (a QAT checkpoint's own ranges
    as convert takes them) or "imposed" (``ranges_from`` the checkpoint itself)."""
    from mobilebert_mobile.converters import verify
    from mobilebert_mobile.converters.pipeline import convert

    slug = "".join(c if c.isalnum() else "_" for c in name)
    bdir = os.path.join(work, slug)
    t = time.perf_counter()
    rep = convert(ckpt, bdir, precisions=tuple(precisions), seq_len=128, quiet=True, include_checkpoint=False,
                  metadata=False, learned_ranges=bool(learned), ranges_from=ckpt if learned == "imposed" else None)
    how = {"imposed": "QAT ranges imposed", True: "own QAT ranges or calibration", False: "calibrated ranges"}[learned]
    log(f"converted {name} ({', '.join(precisions)}, {how}) in "
        f"{time.perf_counter() - t:.0f} s")
    rows, paths = [], {}
    for st in rep["stages"]:
        prec = st.get("precision")
        if prec not in precisions:
            continue
        src = os.path.join(bdir, st["file"])
        probs = probs_tflite(src, feeds)
        fid = verify.compare("classification", {"probabilities": probs}, {"probabilities": float_probs})  # as convert
        cal = st.get("calibration") or {}
        fb = st.get("fallback") or {}
        row = {"model": name, "precision": prec, "accuracy": float(np.mean(probs.argmax(-1) == gold)),
               "agreement": fid["label_agreement"], "decided_agreement": fid["decided_label_agreement"],
               "near_ties": fid["near_ties"],
               "ranges": cal.get("source", cal.get("chosen", "")) if prec.startswith("int8") else "",
               "points_matched": cal.get("points_matched"), "points": cal.get("points"),
               "qat_candidate_score": (cal.get("qat_candidate") or {}).get("score"),
               "float_fallback": [o for o in fb.get("float_ops", []) if o not in DEFAULT_FLOAT_OPS]
               + fb.get("float_layers", []),
               "float_matmuls": (st.get("inventory") or {}).get("float_matmuls"),
               "xnnpack_partitions": (st.get("xnnpack") or {}).get("partitions"),
               "conversion_score": st.get("label_agreement"), "conversion_s": rep.get("total_time_s")}
        rows.append(row)
        paths[f"{name} {prec}"] = dst = os.path.join(work, f"{slug}_{prec}.tflite")
        shutil.copyfile(src, dst)
        log(f"  {prec}: accuracy {row['accuracy']:.4f}, agreement with float {row['agreement']:.4f}")
    return rows, paths


def time_interleaved(paths: dict, runs: int, rounds: int = 3, threads: int = 2) -> dict:
    """Median ms of each model, the models taking turns round by round (drift hits all alike)."""
    from .op_profile import _Timed, model_feeds

    timed = {k: _Timed(p, threads, model_feeds(p, 128)) for k, p in paths.items()}
    for _ in range(rounds):
        for t in timed.values():
            t.run(runs)
    return {k: 1e3 * float(np.median(t.times)) for k, t in timed.items()}


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | precision | accuracy | agreement with own float | off near-ties (ties) | int8 ranges | "
             "float fallback | XNNPACK partitions | median ms |", "|---|---|---:|---:|---:|---|---|---:|---:|"]
    for r in rows:
        ms = f"{r['median_ms']:.2f}" if r.get("median_ms") else "-"
        rg = r.get("ranges") or "-"
        if r.get("points"):
            rg += f" ({r['points_matched']}/{r['points']} points)"
        if r.get("qat_candidate_score") is not None:
            rg += f" (QAT ranges scored {r['qat_candidate_score']:.3f})"
        fb = "-" if r["precision"].startswith("float") else (", ".join(r.get("float_fallback") or []) or "none")
        ties = f"{r['decided_agreement']:.4f} ({r['near_ties']})" if "decided_agreement" in r else "-"
        lines.append(f"| {r['model']} | {r['precision']} | {r['accuracy']:.4f} | {r['agreement']:.4f} | {ties} | {rg} | "
                     f"{fb} | {r.get('xnnpack_partitions') if r.get('xnnpack_partitions') is not None else '-'} "
                     f"| {ms} |")
    return lines
