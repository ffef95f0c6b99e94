"""Reading a model bundle (docs/bundle.md): bundle.json, with every file's sha256 checked at load.

Pure Python + hashlib: the runtime reads bundles next to an app.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ._io import sha256_file
from .tasks import INPUT_NAMES, TASK_NAMES
from .errors import BundleError  # noqa: F401  (re-exported: defined in errors.py)

FORMAT = "mobilebert-mobile-bundle"


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
        """``name`` (a path from bundle.json) inside the bundle; BundleError if it would leave it."""
        return confined_path(self.root, name)

    def model_path(self, precision: str | None = None) -> str:
        models = self.manifest["models"]
        key = precision or self.manifest.get("default_model") or next(iter(models))
        if key not in models:
            raise BundleError(f"bundle {self.root} has no {key!r} model; it has {', '.join(models)}")
        return self.path(models[key]["file"])

    def tflite_models(self) -> dict[str, str]:
        return {k: self.path(v["file"]) for k, v in self.manifest["models"].items() if v["file"].endswith(".tflite")}


MAX_MANIFEST_BYTES = 1 << 20


def confined_path(root: str, name) -> str:
    """The absolute path of bundle member ``name``, refusing anything that is not a plain relative
    path staying inside ``root`` once symbolic links are resolved. The check is on the name first,
    so a refused name never touches the file system (no "does it exist" oracle)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise BundleError(f"bundle file name {name!r} is not a non-empty string")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") \
            or any(p in ("", ".", "..") for p in parts):
        raise BundleError(f"bundle file name {name!r} must be a plain relative path inside the bundle "
                          "(no absolute paths, no '.' or '..', no empty parts)")
    full = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
        raise BundleError(f"bundle file {name!r} resolves outside the bundle (a symbolic link out of it)")
    return full


def read_bundle(directory: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Read and check ``directory``/bundle.json: its fields, that every file it names stays inside the
    bundle and has a sha256, and (``verify``) that every file matches its hash."""
    d = os.path.abspath(os.fspath(directory))
    p = os.path.join(d, "bundle.json")
    if not os.path.isdir(d):
        raise BundleError(f"bundle directory not found: {d}")
    if not os.path.isfile(p):
        raise BundleError(f"{d} is not a bundle: no bundle.json")
    if os.path.getsize(p) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{p} is larger than {MAX_MANIFEST_BYTES >> 10} KiB: not a bundle manifest")
    try:
        with open(p, "rb") as fh:
            m = json.loads(fh.read(MAX_MANIFEST_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{p} is not a {FORMAT} manifest")
    for key in ("task", "max_seq_length", "models", "outputs", "inputs"):
        if key not in m:
            raise BundleError(f"{p} lacks {key!r}")
    if m["task"] not in TASK_NAMES:
        raise BundleError(f"{p}: unknown task {m['task']!r}")
    if not isinstance(m["inputs"], list) or not all(isinstance(i, dict) for i in m["inputs"]):
        raise BundleError(f"{p}: 'inputs' must be a list of objects")
    names = [i.get("name") for i in m["inputs"]]
    dtypes = {i.get("dtype") for i in m["inputs"]}
    if sorted(map(str, names)) != sorted(INPUT_NAMES) or dtypes != {"int32"}:
        raise BundleError(f"{p}: inputs must be {', '.join(INPUT_NAMES)} as int32, got {names} {sorted(map(str, dtypes))}")
    if not isinstance(m["outputs"], list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                     for o in m["outputs"]):
        raise BundleError(f"{p}: 'outputs' must be a list of objects with a name")
    if not isinstance(m.get("max_seq_length"), int) or isinstance(m["max_seq_length"], bool) \
            or not 2 <= m["max_seq_length"] <= 4096:
        raise BundleError(f"{p}: 'max_seq_length' must be an integer in [2, 4096]")
    if m["task"] == "classification" and not (isinstance(m.get("labels"), list) and m["labels"]
                                              and all(isinstance(x, str) for x in m["labels"])):
        raise BundleError(f"{p}: a classification bundle needs labels (a list of str)")
    models, files = m["models"], m.get("files", {})
    if not isinstance(models, dict) or not models or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) for e in models.values()):
        raise BundleError(f"{p}: 'models' must map names to objects with a 'file'")
    if not isinstance(files, dict):
        raise BundleError(f"{p}: 'files' must map file names to sha256 digests")
    entries = [(e["file"], e.get("sha256")) for e in models.values()] + list(files.items())
    for name, digest in entries:
        f = confined_path(d, name)
        if not (isinstance(digest, str) and len(digest) == 64):
            raise BundleError(f"{p}: {name!r} has no sha256: every file a bundle names must carry its hash")
        if verify:
            if not os.path.isfile(f):
                raise BundleError(f"bundle file missing: {name}")
            if sha256_file(f) != digest:
                raise BundleError(f"sha256 mismatch for {name}: the file changed after the bundle was written")
    return Bundle(d, m)
