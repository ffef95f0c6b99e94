"""Calibration / verification text: files of real sentences (or sentence pairs), or a default sample."""
from __future__ import annotations

import csv
import json
import os
import sys
from mobilebert_mobile.errors import CalibrationError  # noqa: F401  (re-exported: defined in errors.py)


TEXT_COLUMNS = ("text", "sentence", "sentence1", "question")
PAIR_COLUMNS = ("text_pair", "sentence2", "context")


def _row_item(row: dict, where: str):
    text = next((row[c] for c in TEXT_COLUMNS if c in row and row[c] is not None), None)
    if text is None:
        raise CalibrationError(f"{where}: no text column (expected one of {', '.join(TEXT_COLUMNS)})")
    pair = next((row[c] for c in PAIR_COLUMNS if c in row and row[c] is not None), None)
    return (str(text), str(pair)) if pair is not None else str(text)


MAX_TEXT_FILE_BYTES = 1 << 30


def read_texts(path: str | os.PathLike, limit: int | None = None, *, what: str = "calibration file") -> list:
    """Texts (str) or pairs ((str, str)) from .txt (one per line; a tab separates a pair),
    .csv / .tsv (a header with a ``text`` column, optional ``text_pair``) or .jsonl.
    A UTF-8 byte-order mark is accepted; ``what`` names the file in errors."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise CalibrationError(f"{what} {p} is a directory, not a file")
    if not os.path.isfile(p):
        raise CalibrationError(f"{what} not found: {p}")
    if os.path.getsize(p) > MAX_TEXT_FILE_BYTES:
        raise CalibrationError(f"{what} {p} is larger than {MAX_TEXT_FILE_BYTES >> 30} GiB")
    with open(p, "rb") as fh:
        raw = fh.read()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise CalibrationError(f"{what} {p} is not UTF-8 text (line {line})") from None
    ext = os.path.splitext(p)[1].lower()
    items: list = []
    if ext in (".csv", ".tsv"):
        csv.field_size_limit(sys.maxsize)
        reader = csv.DictReader(content.splitlines(), delimiter="\t" if ext == ".tsv" else ",")
        for i, row in enumerate(reader):
            items.append(_row_item(row, f"{p} row {i + 2}"))
    elif ext == ".jsonl":
        for i, line in enumerate(content.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CalibrationError(f"{p} line {i + 1} is not JSON: {e}") from None
            if isinstance(row, str):
                items.append(row)
            elif isinstance(row, dict):
                items.append(_row_item(row, f"{p} line {i + 1}"))
            else:
                raise CalibrationError(f"{p} line {i + 1}: expected an object or a string")
    else:
        for line in content.splitlines():
            if "\t" in line:
                a, b = line.split("\t", 1)
                items.append((a, b))
            else:
                items.append(line)
    items = [x for x in items if (x[0] if isinstance(x, tuple) else x).strip()]
    if not items:
        raise CalibrationError(f"{what} {p} has no non-empty text")
    return items[:limit] if limit else items


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
