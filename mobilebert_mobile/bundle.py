"""Reading a model bundle (docs/bundle.md): bundle.json, with every file's sha256 checked at load.

Pure Python + hashlib: the runtime reads bundles next to an app.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ._io import sha256_file

FORMAT = "mobilebert-mobile-bundle"
TASKS = ("classification", "embedding", "qa", "mlm")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class BundleError(ValueError):
    """A bundle is missing, malformed, or does not match its hashes."""


@dataclass
class Bundle:
    root: str
    manifest: dict

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    @property
    def max_seq_length(self) -> int:
        return int(self.manifest["max_seq_length"])

    @property
    def batch_size(self) -> int:
        return int(self.manifest.get("batch_size", 1))

    @property
    def lowercase(self) -> bool:
        return bool(self.manifest.get("lowercase", True))

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.manifest["outputs"]]

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def model_path(self, precision: str | None = None) -> str:
        models = self.manifest["models"]
        key = precision or self.manifest.get("default_model") or next(iter(models))
        if key not in models:
            raise BundleError(f"bundle {self.root} has no {key!r} model; it has {', '.join(models)}")
        return self.path(models[key]["file"])

    def tflite_models(self) -> dict[str, str]:
        return {k: self.path(v["file"]) for k, v in self.manifest["models"].items() if v["file"].endswith(".tflite")}


def read_bundle(directory: str | os.PathLike, *, verify: bool = True) -> Bundle:
    d = os.path.abspath(os.fspath(directory))
    p = os.path.join(d, "bundle.json")
    if not os.path.isdir(d):
        raise BundleError(f"bundle directory not found: {d}")
    if not os.path.isfile(p):
        raise BundleError(f"{d} is not a bundle: no bundle.json")
    try:
        with open(p, encoding="utf-8") as fh:
            m = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{p} is not a {FORMAT} manifest")
    for key in ("task", "max_seq_length", "models", "outputs", "inputs"):
        if key not in m:
            raise BundleError(f"{p} lacks {key!r}")
    if m["task"] not in TASKS:
        raise BundleError(f"{p}: unknown task {m['task']!r}")
    names = [i.get("name") for i in m["inputs"]]
    dtypes = {i.get("dtype") for i in m["inputs"]}
    if sorted(names) != sorted(INPUT_NAMES) or dtypes != {"int32"}:
        raise BundleError(f"{p}: inputs must be {', '.join(INPUT_NAMES)} as int32, got {names} {sorted(dtypes)}")
    if m["task"] == "classification" and not m.get("labels"):
        raise BundleError(f"{p}: a classification bundle needs labels")
    if verify:
        entries = [(e["file"], e.get("sha256")) for e in m["models"].values()] + list(m.get("files", {}).items())
        for name, digest in entries:
            f = os.path.join(d, name)
            if not os.path.isfile(f):
                raise BundleError(f"bundle file missing: {name}")
            if digest and sha256_file(f) != digest:
                raise BundleError(f"sha256 mismatch for {name}: the file changed after the bundle was written")
    return Bundle(d, m)
