"""The one reader of text and labelled records from files (pure Python).

Formats: ``.txt`` (one text per line; with ``pairs`` a TAB separates a text pair), ``.csv`` /
``.tsv`` (a header row), ``.jsonl`` (one object, or one string, per line). A UTF-8 byte-order mark
is accepted, files are size-checked before reading, and every error names the file and the line
(``path:line``). Column names follow GLUE and common corpora (below); a caller may name its own.

Used by conversion (calibration text), ``predict --file`` and training data (distill / finetune).
"""
from __future__ import annotations

import csv
import json
import os
import sys

from .errors import InputError

MAX_BYTES = 1 << 30
TEXT_COLUMNS = ("text", "sentence", "sentence1", "question", "question1", "premise", "content", "review")
PAIR_COLUMNS = ("text_pair", "sentence2", "question2", "hypothesis", "context")
LINE = "__line__"


class TextFileError(InputError):
    """A text file is missing, too large, not UTF-8, malformed, or lacks the column asked for."""


def read_records(path: str | os.PathLike, *, what: str = "data file", error=TextFileError) -> list[dict]:
    """Rows as dicts, each with its 1-based line number under ``__line__`` (``.txt`` rows have one key,
    ``text``; a JSON string line becomes ``{"text": ...}``)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise error(f"{what} {p} is a directory, not a file")
    if not os.path.isfile(p):
        raise error(f"{what} not found: {p}")
    if os.path.getsize(p) > MAX_BYTES:
        raise error(f"{what} {p} is larger than {MAX_BYTES >> 30} GiB")
    ext = os.path.splitext(p)[1].lower()
    with open(p, "rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise error(f"{p}:{line}: {what} is not UTF-8 text") from None
    rows: list[dict] = []
    if ext in (".csv", ".tsv"):
        csv.field_size_limit(sys.maxsize)
        reader = csv.DictReader(content.splitlines(), delimiter="\t" if ext == ".tsv" else ",")
        try:
            if not reader.fieldnames:
                raise error(f"{p}: empty {what} (a header row is expected)")
            for r in reader:
                if None in r:
                    raise error(f"{p}:{reader.line_num}: more fields than the header has")
                r[LINE] = reader.line_num
                rows.append(r)
        except csv.Error as e:
            raise error(f"{p}:{reader.line_num}: malformed CSV ({e})") from None
    elif ext in (".jsonl", ".json"):
        for i, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise error(f"{p}:{i}: not a JSON object or string ({e})") from None
            if isinstance(obj, str):
                obj = {"text": obj}
            if not isinstance(obj, dict):
                raise error(f"{p}:{i}: expected a JSON object or string, got {type(obj).__name__}")
            obj[LINE] = i
            rows.append(obj)
    elif ext in (".txt", ".text", ""):
        rows = [{"text": line, LINE: i} for i, line in enumerate(content.splitlines(), 1)]
    else:
        raise error(f"{p}: unsupported data format {ext!r} (use .txt, .csv, .tsv or .jsonl)")
    if not rows:
        raise error(f"{p}: {what} has no rows")
    return rows


def column(rows: list[dict], path: str, wanted: str | None, candidates: tuple[str, ...], role: str,
           *, error=TextFileError, required: bool = True) -> str | None:
    """The column to read: ``wanted`` if given (it must exist), else the first candidate present."""
    keys = [k for k in rows[0] if k != LINE]
    if wanted:
        if wanted not in rows[0]:
            raise error(f"{path}: no {role} column {wanted!r} (columns: {', '.join(keys)})")
        return wanted
    for c in candidates:
        if c in rows[0]:
            return c
    if not required:
        return None
    raise error(f"{path}: no {role} column (expected one of {', '.join(candidates)}; columns: {', '.join(keys)})")


def read_texts(path: str | os.PathLike, limit: int | None = None, *, what: str = "text file", pairs: bool = True,
               text_column: str | None = None, pair_column: str | None = None, error=TextFileError) -> list:
    """Non-empty texts (str) or, with ``pairs``, text pairs ((str, str)) where the file has a pair
    column (or a TAB in a .txt line)."""
    p = os.fspath(path)
    rows = read_records(p, what=what, error=error)
    txt = os.path.splitext(p)[1].lower() in (".txt", ".text", "")
    items: list = []
    if txt:
        for r in rows:
            line = r["text"]
            if pairs and "\t" in line:
                a, b = line.split("\t", 1)
                items.append((a, b))
            else:
                items.append(line)
    else:
        tcol = column(rows, p, text_column, TEXT_COLUMNS, "text", error=error)
        pcol = column(rows, p, pair_column, PAIR_COLUMNS, "pair", error=error, required=False) if pairs else None
        for r in rows:
            text = r.get(tcol)
            if text is None:
                continue
            pair = r.get(pcol) if pcol else None
            items.append((str(text), str(pair)) if pair is not None else str(text))
    items = [x for x in items if (x[0] if isinstance(x, tuple) else x).strip()]
    if not items:
        raise error(f"{p}: {what} has no non-empty text (every text is empty)")
    return items[:limit] if limit else items
