"""What the harness needs to know about a model and the benchmark binary, read without TensorFlow/LiteRT:
the .tflite input tensors (a minimal FlatBuffer reader of the TFLite schema) and the ELF machine of a
binary."""
from __future__ import annotations

import os
import struct
from mobilebert_mobile.errors import InputError

TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                7: "int16", 9: "int8", 10: "float64"}
ELF_MACHINES = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}
ABI_MACHINE = {"arm64-v8a": 183, "armeabi-v7a": 40, "armeabi": 40, "x86_64": 62, "x86": 3}


class ModelFormatError(InputError):
    pass


class _FB:
    """Just enough FlatBuffers: tables, vectors, strings, scalars."""

    def __init__(self, buf: bytes):
        self.b = buf

    def u32(self, pos):
        return struct.unpack_from("<I", self.b, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        vt = table - struct.unpack_from("<i", self.b, table)[0]
        vt_len = struct.unpack_from("<H", self.b, vt)[0]
        off = 4 + 2 * index
        if off >= vt_len:
            return None
        o = struct.unpack_from("<H", self.b, vt + off)[0]
        return table + o if o else None

    def table(self, table: int, index: int) -> int | None:
        p = self.field(table, index)
        return p + self.u32(p) if p is not None else None

    def vector(self, table: int, index: int) -> tuple[int, int]:
        p = self.field(table, index)
        if p is None:
            return 0, 0
        v = p + self.u32(p)
        return v + 4, self.u32(v)

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(n)]

    def ints(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        return list(struct.unpack_from(f"<{n}i", self.b, start)) if n else []

    def string(self, table: int, index: int) -> str | None:
        p = self.field(table, index)
        if p is None:
            return None
        s = p + self.u32(p)
        n = self.u32(s)
        return self.b[s + 4:s + 4 + n].decode("utf-8", "replace")

    def byte(self, table: int, index: int, default: int = 0) -> int:
        p = self.field(table, index)
        return self.b[p] if p is not None else default


def tflite_inputs(path: str) -> list[dict]:
    """[{name, dtype, shape}] of the first subgraph's inputs."""
    with open(path, "rb") as fh:
        buf = fh.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelFormatError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        fb = _FB(buf)
        model = fb.u32(0)
        subgraphs = fb.tables(model, 2)
        if not subgraphs:
            raise ModelFormatError(f"{path} has no subgraph")
        sg = subgraphs[0]
        tensors = fb.tables(sg, 0)
        out = []
        for i in fb.ints(sg, 1):
            t = tensors[i]
            out.append({"name": fb.string(t, 3) or f"input_{i}", "dtype": TENSOR_TYPES.get(fb.byte(t, 1), "?"),
                        "shape": fb.ints(t, 0)})
        return out
    except (struct.error, IndexError) as e:
        raise ModelFormatError(f"{path}: malformed TFLite flatbuffer ({e})") from None


def check_input_layers(inputs: list[dict]) -> None:
    """benchmark_model's --input_layer is a ',' list and --input_layer_shape a ':' list of ',' lists of sizes:
    every input needs a plain name and a fixed shape (no -1, no empty shape)."""
    for inp in inputs:
        name = inp["name"]
        if not name or "," in name or ":" in name:
            raise ModelFormatError(
                f"input tensor {name!r} is empty or contains ':' or ',', which benchmark_model's --input_layer "
                "cannot name; give the inputs plain names (the project's converter names them input_ids, "
                "attention_mask, token_type_ids)")
        if not inp["shape"] or any(d < 1 for d in inp["shape"]):
            raise ModelFormatError(f"input tensor {name!r} has shape {inp['shape']}: benchmark_model needs a fixed "
                                   "shape for every input (convert with a fixed batch and sequence length)")


def bert_value_ranges(inputs: list[dict], vocab_size: int) -> list[tuple[str, int, int]]:
    """Inclusive integer ranges per input so BERT inputs are valid: ids inside the vocabulary, the mask 1,
    token types 0..1. Raises ModelFormatError for an integer input it cannot place."""
    out = []
    for inp in inputs:
        if inp["dtype"] not in ("int32", "int64", "int8", "int16", "uint8"):
            continue
        name = inp["name"]
        low = name.lower()
        if ":" in name or "," in name:
            raise ModelFormatError(
                f"input tensor {name!r} contains ':' or ',', which benchmark_model's --input_layer_value_range "
                "cannot name; give the inputs plain names (the project's converter names them input_ids, "
                "attention_mask, token_type_ids)")
        if "mask" in low:
            out.append((name, 1, 1))
        elif "type" in low or "segment" in low:
            out.append((name, 0, 1))
        elif "ids" in low or "word" in low or "input" in low:
            out.append((name, 0, vocab_size - 1))
        else:
            raise ModelFormatError(f"integer input {name!r} is not a BERT input (input_ids, attention_mask, "
                                   "token_type_ids); its values would be random 0..99")
    return out


def elf_machine(path: str) -> int | None:
    """ELF e_machine of a file, or None when it is not an ELF file."""
    with open(path, "rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    return struct.unpack_from(endian + "H", head, 18)[0]


def describe_machine(m: int | None) -> str:
    if m is None:
        return "not an ELF executable"
    return f"{ELF_MACHINES.get(m, 'unknown')} (e_machine {m})"


def file_size_mb(path: str) -> float:
    return os.path.getsize(path) / 2**20
