"""The TFLite ``benchmark_model`` binary: checked (ELF machine vs ABI), cached per ABI under the user cache
directory, its version recorded."""
from __future__ import annotations

import json
import os
import re
import shutil
import time

from .._io import atomic_path, atomic_write_text, sha256_file
from .model_info import ABI_MACHINE, ELF_MACHINES, describe_machine, elf_machine
from mobilebert_mobile.errors import InputError

WHERE = ("get TensorFlow Lite's prebuilt benchmark tool for Android, `android_aarch64_benchmark_model` "
         "(arm64-v8a; `android_arm_benchmark_model` for armeabi-v7a, `android_x86_64_benchmark_model` for x86_64), "
         "from the TensorFlow Lite / LiteRT performance-measurement page (\"Download or build the binary\": "
         "https://ai.google.dev/edge/litert/models/measurement), or build it with "
         "`bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`; "
         "then pass it once with --benchmark-binary PATH [--abi arm64-v8a]")


class BinaryError(InputError):
    pass


def _cache_root() -> str:
    from ..assets import cache_dir

    return cache_dir("android", "benchmark_model")


def detect_version(path: str) -> str | None:
    """A version string embedded in the binary, when one can be found."""
    pats = [rb"(?:TensorFlow Lite|TfLite|TFLite|LiteRT)[ _-]?(?:version|Version|v)?[ :=]*v?(\d+\.\d+\.\d+(?:[-.\w]*)?)",
            rb"\btensorflow[-_/](\d+\.\d+\.\d+)\b"]
    try:
        with open(path, "rb") as fh:
            data = fh.read(64 * 2**20)
    except OSError:
        return None
    for p in pats:
        m = re.search(p, data)
        if m:
            return m.group(1).decode("ascii", "replace")
    return None


def check_binary(path: str, abi: str | None = None) -> str:
    """The binary's ABI (from its ELF header); BinaryError when it is not an executable for ``abi``."""
    if not os.path.isfile(path):
        raise BinaryError(f"benchmark binary not found: {path}; {WHERE}")
    m = elf_machine(path)
    if m is None or m not in ELF_MACHINES:
        raise BinaryError(f"{path} is not an Android executable ({describe_machine(m)}); {WHERE}")
    found = ELF_MACHINES[m]
    if abi is not None and ABI_MACHINE.get(abi) != m:
        raise BinaryError(f"{path} is built for {found} (ELF e_machine {m}) but --abi says {abi} "
                          f"(e_machine {ABI_MACHINE.get(abi, '?')})")
    return found


def install(path: str, abi: str | None = None, version: str | None = None) -> dict:
    """Check ``path`` and copy it into the cache for its ABI; returns the recorded info."""
    found = check_binary(path, abi)
    d = os.path.join(_cache_root(), found)
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, "benchmark_model")
    sha = sha256_file(path)
    info_path = os.path.join(d, "info.json")
    old = cached(found)
    if not (old and old["sha256"] == sha and os.path.isfile(dest)):
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
        os.chmod(dest, 0o755)
    same = old is not None and old["sha256"] == sha
    ver = version or detect_version(path) or (old.get("version") if same else None) or f"unknown (sha256 {sha[:12]})"
    info = {"abi": found, "path": dest, "source": os.path.abspath(path), "name": os.path.basename(path),
            "sha256": sha, "size": os.path.getsize(path), "version": ver,
            "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return info


def cached(abi: str) -> dict | None:
    d = os.path.join(_cache_root(), abi)
    try:
        with open(os.path.join(d, "info.json"), encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    info["path"] = os.path.join(d, "benchmark_model")
    return info if os.path.isfile(info["path"]) else None


def for_device(abi: str, abilist: list[str] | None = None) -> dict:
    """The cached binary for a device's ABI (or one it also runs), checked against it."""
    for a in [abi] + [x for x in (abilist or []) if x != abi]:
        info = cached(a)
        if info:
            m = elf_machine(info["path"])
            if ABI_MACHINE.get(a) != m:
                raise BinaryError(f"the cached benchmark binary for {a} is built for {describe_machine(m)}: "
                                  f"wrong ABI for this device; {WHERE}")
            return info
    raise BinaryError(f"no benchmark_model binary for ABI {abi}; {WHERE}")
