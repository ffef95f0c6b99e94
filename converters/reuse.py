"""Reuse a converted bundle only when the same converter code made it with the same arguments.

bench-host keeps its converted models for reruns and the demo caches the default model's bundle: both
must never measure or ship a bundle that an older converter made (a converter change would then go
unmeasured, as the demo's cached bundle did when static int8 began to fold the residual NoNorms).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil


def converter_fingerprint(args: dict) -> str:
    """sha256 over the source of the converter and the model code it exports, and the conversion's
    arguments: a bundle left behind by other code or other arguments is stale."""
    from importlib import resources

    h = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode())
    for pkg in ("mobilebert_mobile.converters", "mobilebert_mobile.modeling"):
        for f in sorted((f for f in resources.files(pkg).iterdir() if f.name.endswith(".py")), key=lambda f: f.name):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def convert_reusing(checkpoint: str, out: str, log=lambda m: None, **kwargs) -> bool:
    """``converters.convert(checkpoint, out, **kwargs)``, unless ``out`` already holds a bundle made by the
    same converter code with the same arguments (``out`` + ``.source`` records it). Returns True when it
    converted, False when it reused."""
    from mobilebert_mobile import converters
    from mobilebert_mobile._io import atomic_write_text

    key = converter_fingerprint({"checkpoint": os.path.abspath(checkpoint), **kwargs})
    stamp = out.rstrip(os.sep) + ".source"
    if os.path.isfile(os.path.join(out, "bundle.json")) and os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as fh:
            if fh.read().strip() == key:
                log(f"reusing {out} (same converter code and arguments)")
                return False
    if os.path.exists(out):
        log(f"{out} was made by other converter code or arguments: converting again")
        shutil.rmtree(out)
    converters.convert(checkpoint, out, **kwargs)
    atomic_write_text(stamp, key + "\n")
    return True
