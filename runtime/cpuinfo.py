"""What CPU a figure was measured on: model, cores and the instruction sets that decide int8
speed and int8 results (x86: avx2, avx512_vnni, avx_vnni, amx; ARM: neon, dotprod, i8mm).

On x86 without VNNI, onnxruntime sums u8 x s8 pairs in int16 (VPMADDUBSW), which can saturate;
with VNNI (or AMX) it sums in int32. Every speed, drift and parity report records this.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The flags worth naming, in the order they are shown (as /proc/cpuinfo spells them).
X86_FLAGS = ("sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")
ARM_NAMES = {"asimd": "neon", "asimddp": "dotprod"}


def _proc_cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def int8_path(isa: list[str]) -> str:
    """How onnxruntime's int8 matrix kernels accumulate on this instruction set."""
    if "amx_int8" in isa:
        return "amx (int32 accumulation)"
    if "avx512_vnni" in isa or "avx_vnni" in isa:
        return "vnni (int32 accumulation)"
    if "avx2" in isa:
        return "avx2 without vnni (u8 x s8 pairs summed in int16: may saturate)"
    if "i8mm" in isa:
        return "arm i8mm (int32 accumulation)"
    if "dotprod" in isa:
        return "arm dotprod (int32 accumulation)"
    if "neon" in isa:
        return "arm neon (int16 products widened to int32)"
    return "unknown"


def cpu_features() -> dict[str, Any]:
    """CPU model, architecture, cores and the named instruction-set flags this CPU reports."""
    model, flags = _proc_cpuinfo()
    return features_of(model or platform.processor(), flags, platform.machine(), os.cpu_count())


def features_of(model: str, flags: set[str], machine: str, cores: int | None) -> dict[str, Any]:
    """cpu_features of a CPU described elsewhere (a device's /proc/cpuinfo read by the probe)."""
    machine = machine.lower()
    if machine in ("aarch64", "arm64"):
        isa = [ARM_NAMES.get(f, f) for f in ARM_FLAGS if f in flags] or ["neon"]
    else:
        isa = [f for f in X86_FLAGS if f in flags]
    return {"cpu": model or machine, "arch": machine, "cores": cores, "isa": isa, "int8_path": int8_path(isa)}


def cpu_report(provider: str | None = None) -> dict[str, Any]:
    """cpu_features plus onnxruntime's version and providers, and a one-line summary for reports."""
    import onnxruntime as ort

    info = cpu_features()
    info["onnxruntime"] = ort.__version__
    info["providers_available"] = list(ort.get_available_providers())
    info["provider"] = provider or "CPUExecutionProvider"
    info["summary"] = summary(info)
    return info


def summary(info: dict[str, Any]) -> str:
    """The one-line CPU description of every report (the cores where known)."""
    cores = f", {info['cores']} cores" if info.get("cores") else ""
    return (f"{info['cpu']} ({info['arch']}{cores}; {' '.join(info['isa']) or 'no flags'}; int8: {info['int8_path']}); "
            f"onnxruntime {info['onnxruntime']}, {info['provider']}")
