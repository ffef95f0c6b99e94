"""What machine a figure was measured on: CPU model, cores, and its int8 instruction set (int8
speed-ups depend on it: with VNNI/AMX or Arm dot products int8 pays, on AVX2 alone it barely does)."""
from __future__ import annotations

import os
import platform

# /proc/cpuinfo flags that decide int8 GEMM speed, fastest first
_INT8_FLAGS = (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
               ("i8mm", "Arm I8MM"), ("asimddp", "Arm dot product (SDOT)"), ("avx2", "AVX2 (no int8 dot product)"))


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_isa(flags: set[str] | None = None) -> dict:
    flags = cpu_flags() if flags is None else flags
    present = [name for flag, name in _INT8_FLAGS if flag in flags]
    dot = any(f in flags for f in ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp"))
    return {"best": present[0] if present else "unknown", "all": present, "int8_dot_product": dot}


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "int8_isa": int8_isa()}


def describe(mach: dict | None = None) -> str:
    """One line for a results file: CPU, cores and int8 ISA."""
    mach = mach or machine()
    isa = mach["int8_isa"]
    return (f"Machine: {mach['cpu']}, {mach['cores']} cores, int8 ISA: {isa['best']} "
            f"(dot product: {'yes' if isa['int8_dot_product'] else 'no'}).")
