"""Structure and size checks of a .tflite file before an interpreter sees it (pure Python).

The LiteRT interpreter trusts its file: offsets are followed, declared tensor shapes are
allocated. A crafted 300 KB file made it allocate 650 MB before failing. This module walks the
flatbuffer (schema: tensorflow/lite/schema/schema.fbs; format: flatbuffers' binary layout, every
offset bounds-checked) and refuses, with a message naming the problem:

- a file that is too large, too short, or not a TFLite flatbuffer (identifier ``TFL3``);
- offsets, vectors or strings that leave the file, and absurd counts of subgraphs/tensors/ops;
- constant buffers that lie outside the file (``offset``/``size`` of large models included);
- tensor shapes with negative or overflowing dimensions, a tensor above ``MAX_TENSOR_BYTES``,
  or non-constant tensors that together declare more than ``max_activation_bytes(file size)``.
"""
from __future__ import annotations

import os
import struct

from ..errors import PredictorError

MAX_FILE_BYTES = 2 << 30           # 2 GiB: the flatbuffer limit without external buffers
MAX_TENSOR_BYTES = 1 << 30         # one tensor; MobileBERT's largest (MLM logits, batch 8) is 125 MB
MAX_COUNT = 1_000_000              # subgraphs, tensors, operators, buffers
# element sizes of schema.fbs TensorType values (unknown types count as 8 bytes)
_TYPE_SIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: 4,
              14: 8, 15: 4, 16: 2, 17: 1, 18: 2}


def max_activation_bytes(file_size: int) -> int:
    """What the non-constant tensors of a model may declare in total: 512 MiB, or 16x the file for
    large models. (Declared sizes are summed without the arena's reuse: the 24-layer MobileBERT,
    seq 128, batch 1, declares about 100 MB.) ``MOBILEBERT_MOBILE_MAX_ACTIVATION_MB`` overrides."""
    env = os.environ.get("MOBILEBERT_MOBILE_MAX_ACTIVATION_MB")
    if env:
        return int(float(env) * 2**20)
    return max(512 << 20, 16 * file_size)


class _Reader:
    def __init__(self, buf: bytes, where: str):
        self.b, self.where = buf, where

    def _bad(self, what: str) -> PredictorError:
        return PredictorError(f"{self.where} is not a valid TFLite model: {what}")

    def u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.b):
            raise self._bad(f"offset {pos} outside the file")
        return struct.unpack_from("<I", self.b, pos)[0]

    def i32(self, pos: int) -> int:
        self.u32(pos)
        return struct.unpack_from("<i", self.b, pos)[0]

    def table(self, pos: int) -> int:
        vt = pos - self.i32(pos)
        if vt < 0 or vt + 4 > len(self.b):
            raise self._bad(f"vtable of the table at {pos} outside the file")
        return pos

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table`` (None when absent)."""
        vt = table - self.i32(table)
        vsize = struct.unpack_from("<H", self.b, vt)[0]
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        if vt + slot + 2 > len(self.b):
            raise self._bad("vtable truncated")
        off = struct.unpack_from("<H", self.b, vt + slot)[0]
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int, elem: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        f = self.field(table, index)
        if f is None:
            return 0, 0
        v = self.deref(f)
        n = self.u32(v)
        if v + 4 + n * elem > len(self.b):
            raise self._bad(f"a vector of {n} elements leaves the file")
        return v + 4, n

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index, 4)
        if n > MAX_COUNT:
            raise self._bad(f"a list of {n} tables (limit {MAX_COUNT})")
        return [self.table(self.deref(start + 4 * i)) for i in range(n)]

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        f = self.field(table, index)
        if f is None:
            return default
        size = struct.calcsize(fmt)
        if f + size > len(self.b):
            raise self._bad("scalar outside the file")
        return struct.unpack_from("<" + fmt, self.b, f)[0]


def check_tflite_bytes(buf: bytes, where: str = "model") -> dict:
    """Walk the model; raise PredictorError on anything unsafe. Returns a small summary."""
    r = _Reader(buf, where)
    if len(buf) < 16:
        raise r._bad(f"only {len(buf)} bytes")
    if buf[4:8] != b"TFL3":
        raise r._bad("no TFL3 file identifier (not a .tflite flatbuffer)")
    model = r.table(r.deref(0))
    buffers = r.tables(model, 4)
    constant = set()
    for i, b in enumerate(buffers):
        start, n = r.vector(b, 0, 1)
        off, size = r.scalar(b, 1, "Q"), r.scalar(b, 2, "Q")
        if off or size:
            if off + size > len(buf):
                raise r._bad(f"buffer {i} ({size} bytes at offset {off}) lies outside the {len(buf)}-byte file")
        if n or size:
            constant.add(i)
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        raise r._bad("no subgraph")
    n_ops = n_tensors = 0
    activation = 0
    for g in subgraphs:
        tensors = r.tables(g, 0)
        n_tensors += len(tensors)
        _, ops = r.vector(g, 3, 4)
        n_ops += ops
        if n_tensors > MAX_COUNT or n_ops > MAX_COUNT:
            raise r._bad("too many tensors or operators")
        for t in tensors:
            start, rank = r.vector(t, 0, 4)
            if rank > 16:
                raise r._bad(f"a tensor of rank {rank}")
            elems = 1
            for k in range(rank):
                d = r.i32(start + 4 * k)
                if d < 0:
                    raise r._bad(f"a tensor with dimension {d}")
                elems *= d
            ttype = r.scalar(t, 1, "b")
            nbytes = elems * _TYPE_SIZE.get(ttype, 8)
            if nbytes > MAX_TENSOR_BYTES:
                raise r._bad(f"a tensor declares {nbytes / 2**20:.0f} MiB (limit {MAX_TENSOR_BYTES >> 20} MiB)")
            buffer_index = r.scalar(t, 2, "I")
            if buffer_index >= max(len(buffers), 1):
                raise r._bad(f"a tensor refers to buffer {buffer_index} of {len(buffers)}")
            if buffer_index not in constant:
                activation += nbytes
    limit = max_activation_bytes(len(buf))
    if activation > limit:
        raise r._bad(f"its tensors declare {activation / 2**20:.0f} MiB of activations, more than the "
                     f"{limit / 2**20:.0f} MiB allowed for a {len(buf) / 2**20:.1f} MiB model "
                     f"(MOBILEBERT_MOBILE_MAX_ACTIVATION_MB raises the limit)")
    return {"subgraphs": len(subgraphs), "tensors": n_tensors, "operators": n_ops, "buffers": len(buffers),
            "activation_bytes": activation}


def check_tflite_file(path: str) -> dict:
    """Size-check, then read and walk ``path``."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise PredictorError(f"cannot read {path}: {e.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise PredictorError(f"{path} is {size / 2**30:.1f} GiB, more than a .tflite may be "
                             f"({MAX_FILE_BYTES >> 30} GiB)")
    with open(path, "rb") as fh:
        return check_tflite_bytes(fh.read(MAX_FILE_BYTES + 1), path)
