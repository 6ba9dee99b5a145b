"""Run ONNX models under another CPU with qemu user-mode emulation, to check int8 drift on
instruction sets this machine lacks: x86 AVX2 without VNNI, and ARM64 (NEON, dotprod, i8mm).

The models run in ``probe.py`` (numpy + onnxruntime only), so onnxruntime's MLAS picks the
kernels of the emulated CPU. Under emulation the results are exact but the speed means nothing.

- x86 targets run this interpreter (its own onnxruntime) under ``qemu-x86_64 -cpu <model>``.
- ARM64 targets run Debian's aarch64 CPython with onnxruntime's and numpy's manylinux aarch64
  wheels from a sysroot that :func:`prepare_arm64` builds (``apt-get download`` + ``pip download``).
  onnxruntime reads /proc/cpuinfo at import; qemu-user shows the host's x86 one, so the probe
  runs in a private mount namespace with an ARM /proc/cpuinfo matching the emulated core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBE = Path(__file__).with_name("probe.py")
DEFAULT_SYSROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "digitloc" / "arm64"
ARM64_DEBS = ("libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libexpat1", "libssl3", "libffi8", "libbz2-1.0",
              "liblzma5", "libuuid1", "libcrypt1", "libpython3.11-minimal", "libpython3.11-stdlib",
              "python3.11-minimal")


@dataclass(frozen=True)
class Target:
    """One emulated CPU: the qemu binary and CPU model, and what to call it in reports."""

    name: str
    arch: str  # x86_64 | aarch64
    qemu_cpu: str
    description: str
    isa: tuple[str, ...]
    arm_features: str = ""  # the Features line of the ARM /proc/cpuinfo shown to the probe
    arm_part: str = ""


_ARM_BASE = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
TARGETS = {t.name: t for t in (
    Target("avx2", "x86_64", "Haswell", "Intel Haswell under qemu-x86_64 (AVX2, FMA; no AVX-512, no VNNI)",
           ("avx2", "fma")),
    Target("arm64", "aarch64", "cortex-a76",
           "ARM Cortex-A76 under qemu-aarch64 (NEON + dotprod, as a Raspberry Pi 5 or Graviton2)",
           ("neon", "asimddp"), f"{_ARM_BASE} atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp", "0xd0b"),
    Target("arm64-a72", "aarch64", "cortex-a72", "ARM Cortex-A72 under qemu-aarch64 (NEON only, as a Raspberry Pi 4)",
           ("neon",), _ARM_BASE, "0xd08"),
    Target("arm64-max", "aarch64", "max", "ARM64 'max' core under qemu-aarch64 (NEON, dotprod, i8mm, SVE)",
           ("neon", "asimddp", "i8mm", "sve"),
           f"{_ARM_BASE} atomics fphp asimdhp asimdrdm jscvt fcma lrcpc dcpop sha3 asimddp sha512 sve asimdfhm "
           "uscat ilrcpc flagm sb dcpodp sve2 flagm2 frint i8mm bf16", "0xd0c"),
)}


class EmulationError(RuntimeError):
    """qemu, the ARM64 sysroot or the probe is missing or failed."""


def _arm_cpuinfo(target: Target, cores: int = 2) -> str:
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {target.arm_features}\nCPU implementer\t: 0x41\n"
             f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {target.arm_part}\nCPU revision\t: 1\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(cores))


def prepare_arm64(sysroot: Path = DEFAULT_SYSROOT, onnxruntime_version: str | None = None) -> Path:
    """Build (once) an aarch64 sysroot: Debian's python3.11 and libraries, numpy and onnxruntime wheels."""
    python = sysroot / "sys" / "usr" / "bin" / "python3.11"
    site = sysroot / "site"
    if python.exists() and (site / "onnxruntime").is_dir():
        return sysroot
    if shutil.which("apt-get") is None:
        raise EmulationError("building the ARM64 sysroot needs Debian's apt-get (dpkg --add-architecture arm64)")
    if onnxruntime_version is None:
        from importlib.metadata import version

        onnxruntime_version = version("onnxruntime")
    debs, wheels = sysroot / "debs", sysroot / "wheels"
    for d in (debs, wheels, site):
        d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *(f"{p}:arm64" for p in ARM64_DEBS)], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(sysroot / "sys")], check=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
                    "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64", "-d", str(wheels),
                    f"onnxruntime=={onnxruntime_version}", "numpy"], check=True)
    import zipfile

    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    return sysroot


def probe_command(target: Target, args: list[str], sysroot: Path, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run probe.py with ``args`` on ``target``."""
    qemu = shutil.which(f"qemu-{target.arch}")
    if qemu is None:
        raise EmulationError(f"qemu-{target.arch} not found: install Debian's qemu-user")
    env = dict(os.environ)
    if target.arch == "x86_64":
        return [qemu, "-cpu", target.qemu_cpu, sys.executable, str(PROBE), *args], env
    python = sysroot / "sys" / "usr" / "bin" / "python3.11"
    if not python.exists():
        raise EmulationError(f"{sysroot}: no ARM64 sysroot; run prepare_arm64 (digitloc-bench drift --emulate arm64 "
                             "--prepare)")
    cpuinfo = workdir / "cpuinfo"
    cpuinfo.write_text(_arm_cpuinfo(target))
    env["PYTHONPATH"] = str(sysroot / "site")
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    return [*unshare, "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(cpuinfo), qemu,
            "-cpu", target.qemu_cpu, "-L", str(sysroot / "sys"), str(python), str(PROBE), *args], env


def run_emulated(target: Target, models: list[Path], images: np.ndarray, sysroot: Path = DEFAULT_SYSROOT,
                 timeout: float = 3600) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, probs) of each model on ``images`` (uint8 [N, H, W, 3]), computed on the emulated ``target``."""
    with tempfile.TemporaryDirectory(prefix="digitloc-emulate-") as tmp:
        work = Path(tmp)
        np.savez(work / "images.npz", images=images)
        cmd, env = probe_command(target, [str(work / "images.npz"), str(work / "out.npz"),
                                          *(str(Path(m).resolve()) for m in models)], sysroot, work)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = "\n".join(line for line in proc.stderr.splitlines() if "TCG doesn't support" not in line)
            raise EmulationError(f"probe on {target.name} failed (exit {proc.returncode}): {log[-2000:]}")
        out = np.load(work / "out.npz")
        if str(out["platform"]) != target.arch:
            raise EmulationError(f"the probe ran on {out['platform']}, not on {target.arch}")
        return [(out[f"{i}_bbox"], out[f"{i}_digit"]) for i in range(len(models))]


def load_probe_outputs(path: Path, n_models: int, images: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    """The (boxes, probs) per model that probe.py wrote on another machine, and that machine's CPU
    (``features_of`` its /proc/cpuinfo); refused unless it ran the same inputs and as many models."""
    import hashlib

    from digitloc.runtime.cpuinfo import features_of, summary

    try:
        out = np.load(path)
        digest = str(out["images_sha256"])
        results = [(out[f"{i}_bbox"], out[f"{i}_digit"]) for i in range(n_models)]
    except (OSError, ValueError, KeyError) as exc:
        raise EmulationError(f"{path}: not an outputs file of probe.py for {n_models} models ({exc})") from None
    if f"{n_models}_bbox" in out.files:
        raise EmulationError(f"{path}: holds outputs of more than the {n_models} models given")
    if digest != hashlib.sha256(np.ascontiguousarray(images)).hexdigest():
        raise EmulationError(f"{path}: computed on other inputs than --data gives here (write them with "
                             "digitloc-bench probe-inputs from the same --data)")
    info = features_of(str(out["cpu_model"]), set(str(out["cpu_flags"]).split()), str(out["platform"]), None)
    info.update(onnxruntime=str(out["onnxruntime"]), provider="CPUExecutionProvider")
    info["summary"] = summary(info)
    return results, info
