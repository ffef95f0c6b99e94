"""Calibration / verification text: files of real sentences (or sentence pairs), or a default sample."""
from __future__ import annotations

import os

from mobilebert_mobile import textfiles
from mobilebert_mobile.errors import CalibrationError  # noqa: F401  (re-exported: defined in errors.py)


def read_texts(path: str | os.PathLike, limit: int | None = None, *, what: str = "calibration file") -> list:
    """Texts (str) or pairs ((str, str)) for calibration and verification: the one reader
    (``mobilebert_mobile.textfiles``), errors as CalibrationError naming the file and line."""
    return textfiles.read_texts(path, limit, what=what, pairs=True, error=CalibrationError)


def default_texts(task: str, n: int) -> list:
    """Real Rotten Tomatoes sentences (consecutive sentences as pairs for QA)."""
    from mobilebert_mobile import assets

    sents = assets.sample_sentences(n * 2 if task == "qa" else n)
    if task == "qa":
        return [(sents[2 * i][:80], sents[2 * i + 1]) for i in range(n)]
    return sents


def split(items: list, calib_n: int, heldout_n: int) -> tuple[list, list]:
    """Calibration part first, held-out part after it (never used for calibration)."""
    if len(items) < 2:
        raise CalibrationError(f"need at least 2 texts to calibrate and verify, got {len(items)}")
    if len(items) >= calib_n + heldout_n:
        c, h = calib_n, heldout_n
    else:  # too few texts: share them in the requested proportion
        h = max(1, round(len(items) * heldout_n / (calib_n + heldout_n)))
        c = len(items) - h
    return items[:c], items[c:c + h]
