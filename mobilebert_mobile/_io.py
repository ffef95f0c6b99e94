"""Small file helpers: atomic writes (temp file in the same directory, fsync, rename) and hashing."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    On any error (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory does not exist: {directory}")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"output directory is not writable: {directory}")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def write_results(out_dir: str | os.PathLike, stem: str, markdown: str, obj) -> None:
    """A benchmark's figures as ``stem.md`` and ``stem.json`` in ``out_dir`` (created), each written
    atomically."""
    import json

    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, f"{stem}.md"), markdown)
    atomic_write_text(os.path.join(out_dir, f"{stem}.json"), json.dumps(obj, indent=1, default=str) + "\n")


def read_json_bounded(path: str | os.PathLike, limit: int, error: type, what: str):
    """The JSON document at ``path``, refused (``error``) when larger than ``limit`` bytes (checked
    before reading) or not valid UTF-8 JSON; ``what`` names the file in the messages."""
    import json

    if os.path.getsize(path) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
        raise error(f"{path} is larger than {size}: not a {what}")
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read(limit).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{path} is not valid JSON: {e}") from None
