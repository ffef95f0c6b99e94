"""The model bundle format (docs/bundle.md), both sides: reading bundle.json (paths confined to the
bundle, every file's sha256 checked) and writing it (manifest, hashes, ONNX metadata keys, publishing
the folder whole).

Pure Python + hashlib: the runtime reads bundles next to an app.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from ._io import atomic_write_text, read_json_bounded, sha256_file
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
    m = read_json_bounded(p, MAX_MANIFEST_BYTES, BundleError, "bundle manifest")
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


# ----------------------------------------------------------------------- writing
ONNX_BUNDLE_KEY = "mobilebert_mobile.bundle"   # model.onnx metadata: the bundle facts as JSON
ONNX_VOCAB_KEY = "mobilebert_mobile.vocab"     # model.onnx metadata: the vocabulary, one token a line
FORMAT_VERSION = 1


def output_shapes(batch: int, seq_len: int, num_labels: int, hidden_size: int, vocab_size: int) -> dict:
    return {"probabilities": [batch, num_labels], "logits": [batch, num_labels], "embedding": [batch, hidden_size],
            "start_logits": [batch, seq_len], "end_logits": [batch, seq_len],
            "mlm_logits": [batch, seq_len, vocab_size]}


def build_manifest(*, task: str, labels: list[str] | None, seq_len: int, batch: int, lowercase: bool,
                   outputs, shapes: dict, models: dict[str, str], default_model: str, source: dict,
                   mask_value: float, embedding: dict | None, files: list[str], created_by: str) -> dict:
    """bundle.json before hashing: ``models`` maps precision -> file name; ``files`` lists the other
    members. ``publish`` fills in every sha256."""
    m = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": task,
        "max_seq_length": seq_len, "batch_size": batch, "lowercase": lowercase,
        "inputs": [{"name": n, "dtype": "int32", "shape": [batch, seq_len]} for n in INPUT_NAMES],
        "outputs": [{"name": o, "dtype": "float32", "shape": shapes[o]} for o in outputs],
        "models": {p: {"file": f, "precision": "fp32" if p == "onnx" else p} for p, f in models.items()},
        "default_model": default_model, "attention_mask_value": mask_value,
        "files": {name: None for name in files}, "source": source, "created_by": created_by,
    }
    if task == "classification":
        m["labels"] = list(labels or [])
    if task == "embedding":
        m["embedding"] = dict(embedding or {})
    return m


def set_onnx_metadata(onnx_model, facts: dict, vocab_tokens: list[str]) -> None:
    """The bundle facts and the vocabulary inside a ModelProto, so the .onnx alone can be served
    (read back by the Predictor under the same keys)."""
    del onnx_model.metadata_props[:]
    for k, v in ((ONNX_BUNDLE_KEY, json.dumps(facts)), (ONNX_VOCAB_KEY, "".join(t + "\n" for t in vocab_tokens))):
        p = onnx_model.metadata_props.add()
        p.key, p.value = k, v


def work_dir_prefix(out: str) -> str:
    """Temporary folders of a conversion to ``out`` live beside it: ``.convert-<name>-<pid>-``."""
    return f".convert-{os.path.basename(out)}-{os.getpid()}-"


def remove_stale_work_dirs(out: str) -> None:
    """Work folders of earlier conversions to ``out`` whose process is gone (killed with SIGKILL)."""
    parent, name = os.path.dirname(out), os.path.basename(out)
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


def publish(tmp: str, out: str, manifest: dict) -> None:
    """Hash the finished files, write bundle.json into the work folder, then move the folder into
    place whole: a new ``out`` is one rename; an earlier bundle is renamed aside first and deleted
    after, so ``out`` never holds a mix of two conversions. Files in ``tmp`` that the manifest does
    not list (intermediates) are removed first."""
    keep = {e["file"] for e in manifest["models"].values()} | set(manifest["files"]) | {"bundle.json"}
    for e in manifest["models"].values():
        e["sha256"] = sha256_file(os.path.join(tmp, e["file"]))
    for name in list(manifest["files"]):
        manifest["files"][name] = sha256_file(os.path.join(tmp, name))
    for root, _, files in os.walk(tmp, topdown=False):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), tmp).replace(os.sep, "/")
            if rel not in keep:
                os.unlink(os.path.join(root, f))
        if root != tmp and not os.listdir(root):
            os.rmdir(root)
    atomic_write_text(os.path.join(tmp, "bundle.json"), json.dumps(manifest, indent=2) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o755 & ~umask)
    if os.path.isdir(out) and os.listdir(out):
        old = tempfile.mkdtemp(prefix=work_dir_prefix(out) + "old-", dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
