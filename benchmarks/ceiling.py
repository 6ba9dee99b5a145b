"""How many int8 multiply-adds per second this CPU can do at all, and what a speed target asks of it.

Two ceilings, both measured here:

- the instruction peak: independent chains of the widest int8 dot-product instruction the CPU
  has (VPDPBUSD on zmm with AVX-512 VNNI, on ymm with AVX-VNNI; with AVX2 only, the
  VPMADDUBSW + VPMADDWD + VPADDD sequence that sums u8 x s8 products into int32), one thread per
  logical CPU, compiled with the C compiler on PATH ($CC, else cc). No convolution can do more
  dense multiply-adds per second than this.
- onnxruntime's own int8 matrix product (MatMulInteger, u8 x s8, large square-ish matrices):
  what its best-tuned kernel reaches on this CPU.

A model's images/s times its MACs per image is the multiply-add rate it needs; set beside the
ceilings, that says whether a target is a matter of better kernels or beyond the machine.
AMX and ARM are not probed: there the instruction peak is left out, and so is the verdict against it
(the one against onnxruntime's matrix product stays).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.charts import pyplot, save_figure

MAX_THREADS = 256  # the probe's thread array


@dataclass(frozen=True)
class Probe:
    """One int8 dot-product instruction: how to write it, how many MACs each one does."""

    name: str
    flag: str  # the /proc/cpuinfo flag that makes it usable
    asm: str  # one step of one chain; {i}: its accumulator register, {t}: a scratch register
    chains: int  # independent accumulators (enough to hide the latency)
    macs: int  # u8 x s8 multiply-adds summed into int32 per step
    cflags: tuple[str, ...]
    mnemonic: str  # the multiplying instruction, once per step


PROBES = (
    Probe("vpdpbusd zmm (AVX-512 VNNI)", "avx512_vnni", "vpdpbusd %%zmm30, %%zmm31, %%zmm{i}", 24, 64,
          ("-mavx512f", "-mavx512vnni"), "vpdpbusd"),
    Probe("vpdpbusd ymm (AVX-VNNI)", "avx_vnni", "%{{vex%}} vpdpbusd %%ymm14, %%ymm15, %%ymm{i}", 14, 32,
          ("-mavxvnni",), "vpdpbusd"),
    Probe("vpmaddubsw + vpmaddwd + vpaddd ymm (AVX2)", "avx2",
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm{t}\\n vpmaddwd %%ymm13, %%ymm{t}, %%ymm{t}\\n "
          "vpaddd %%ymm{t}, %%ymm{i}, %%ymm{i}", 6, 32, ("-mavx2",), "vpmaddubsw"),
)

_C = """#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static long iters;
static void *work(void *arg) {{
  (void)arg;
  for (long i = 0; i < iters; i++) __asm__ volatile("{body}" ::: "memory");
  return 0;
}}
int main(int argc, char **argv) {{
  int threads = atoi(argv[1]);
  iters = atol(argv[2]);
  pthread_t t[256];
  struct timespec a, b;
  if (threads < 1 || threads > 256 || iters < 1) return 2;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int k = 0; k < threads; k++)
    if (pthread_create(&t[k], 0, work, 0) != 0) return 3;
  for (int k = 0; k < threads; k++) pthread_join(t[k], 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.9f\\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9);
  return 0;
}}
"""


def pick_probe(flags: set[str], machine: str) -> tuple[Probe | None, str]:
    """The probe for this CPU, or None and why not."""
    if machine.lower() not in ("x86_64", "amd64"):
        return None, f"no probe for {machine} (x86 only)"
    if "amx_int8" in flags:
        return None, "AMX tiles are not probed: a VNNI figure would understate this CPU's int8 ceiling"
    for probe in PROBES:
        if probe.flag in flags:
            return probe, ""
    return None, "no AVX2 or VNNI: no int8 dot-product instruction to probe"


def probe_source(probe: Probe) -> str:
    """The C program: ``argv[1]`` threads (at most 256), each running ``argv[2]`` loops of the chains."""
    body = "\\n".join(probe.asm.format(i=i, t=i + probe.chains) for i in range(probe.chains))
    return _C.format(body=body)


def instruction_peak(probe: Probe, threads: int, repeats: int = 5, seconds: float = 0.3) -> dict[str, Any]:
    """GMAC/s of ``probe`` on ``threads`` threads (best of ``repeats`` runs of about ``seconds``).

    Raises RuntimeError when no C compiler can build or run it."""
    compiler = shlex.split(os.environ.get("CC", "cc"))
    if not compiler or shutil.which(compiler[0]) is None:
        raise RuntimeError(f"no C compiler {os.environ.get('CC', 'cc')!r} on PATH (set CC): "
                           "the instruction peak cannot be measured")
    if not 1 <= threads <= MAX_THREADS:
        raise RuntimeError(f"threads must be 1-{MAX_THREADS}, not {threads}")
    with tempfile.TemporaryDirectory(prefix="digitloc-ceiling-") as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(probe_source(probe))
        try:
            done = subprocess.run([*compiler, "-O1", "-pthread", *probe.cflags, str(src), "-o", str(exe)],
                                  capture_output=True, text=True)
        except OSError as exc:
            raise RuntimeError(f"{compiler[0]} cannot be run: {exc}") from None
        if done.returncode != 0:
            raise RuntimeError(f"{compiler[0]} cannot build the {probe.name} probe: {done.stderr.strip()[:300]}")

        def run(iters: int) -> float:
            try:
                out = subprocess.run([str(exe), str(threads), str(iters)], capture_output=True, text=True,
                                     check=True)
                return float(out.stdout.strip())
            except (OSError, subprocess.CalledProcessError, ValueError) as exc:
                raise RuntimeError(f"the {probe.name} probe failed to run: {exc}") from None

        iters = 100_000
        iters = max(iters, int(iters * seconds / max(run(iters), 1e-6)))
        best = min(run(iters) for _ in range(repeats))
    return {"instruction": probe.name, "threads": threads,
            "gmacs_per_s": threads * iters * probe.chains * probe.macs / best / 1e9}


def gemm_peak(threads: int, shapes: tuple[tuple[int, int, int], ...] = ((1024, 1024, 1024), (4096, 512, 512)),
              repeats: int = 5, seconds: float = 0.2) -> dict[str, Any]:
    """onnxruntime's MatMulInteger (u8 x s8) GMAC/s on ``threads`` threads: for each of ``shapes``
    (M, K, N) the median of ``repeats`` windows of about ``seconds``; the best shape is kept."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    best: dict[str, Any] = {"gmacs_per_s": 0.0}
    for m, k, n in shapes:
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])],
            [numpy_helper.from_array(rng.integers(-128, 128, (k, n), dtype=np.int8), "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        onnx.checker.check_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"A": rng.integers(0, 256, (m, k), dtype=np.uint8)}
        start = time.perf_counter()
        session.run(None, feed)
        calls = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feed)
            rates.append(calls * m * k * n / (time.perf_counter() - start) / 1e9)
        rate = float(np.median(rates))
        if rate > best["gmacs_per_s"]:
            best = {"gmacs_per_s": rate, "shape": [m, k, n], "threads": threads}
    return best


# What the speed target of issue 16 asks of "ours" against each peer's int8 rate.
TARGETS = {"openvino": 1.0, "litert": 1.5}


def int8_rates(compare: dict[str, Any]) -> list[dict[str, Any]]:
    """The int8 rows of a ``digitloc-bench compare`` result: runtime, batch, images/s (KeyError or
    TypeError for a result of another shape)."""
    return [{"runtime": str(r["runtime"]), "batch": int(r["batch"]), "images_per_s": float(r["images_per_s"])}
            for r in compare["rows"] if r["precision"] == "int8"]


def ceiling_rows(rates: list[dict[str, Any]], macs: float, peak: float | None, gemm: float) -> dict[str, Any]:
    """Each int8 rate (``int8_rates``) as GMAC/s and as a share of the ceilings, and per batch what
    the target (ours >= OpenVINO, >= 1.5x LiteRT) needs."""

    def load(images_per_s: float) -> dict[str, Any]:
        gmacs = images_per_s * macs / 1e9
        return {"images_per_s": images_per_s, "gmacs_per_s": gmacs,
                "of_peak": None if peak is None else gmacs / peak, "of_gemm": gmacs / gemm}

    rows = [{"runtime": r["runtime"], "batch": r["batch"], **load(r["images_per_s"])} for r in rates]
    needs = []
    for batch in sorted({r["batch"] for r in rows}):
        for peer, factor in TARGETS.items():
            row = next((r for r in rows if r["runtime"] == peer and r["batch"] == batch), None)
            if row is None:
                continue
            need = load(row["images_per_s"] * factor)
            needs.append({"batch": batch, "target": f"{factor:g}x {peer}", **need,
                          "beyond_peak": None if peak is None else need["of_peak"] > 1,
                          "beyond_gemm": need["of_gemm"] > 1})
    return {"rates": rows, "needs": needs}


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def ceiling_markdown(result: dict[str, Any]) -> str:
    """The report: ceilings, each runtime's int8 rate against them, and what the target needs."""
    from digitloc.benchmarks.report import cpu_lines

    peak, gemm = result["instruction_peak"], result["gemm_peak"]
    lines = [f"Rates from: `{result['compare_file']}` (measured {result['compare_cpu']}); "
             f"MACs per image {result['macs'] / 1e6:.1f} M (`{result['model']}`).", ""]
    if result["compare_cpu"] != result["environment"]["cpu_summary"]:
        lines += ["**The compare run names another CPU or onnxruntime than this one: the ceilings below are this "
                  "machine's.**", ""]
    lines += ["| ceiling | GMAC/s |", "|---|---|"]
    if peak.get("gmacs_per_s") is not None:
        lines.append(f"| instruction peak: {peak['instruction']}, {peak['threads']} threads | "
                     f"{peak['gmacs_per_s']:,.0f} |")
    else:
        lines.append(f"| instruction peak | not measured: {peak['why']} |")
    lines += [f"| onnxruntime MatMulInteger u8 x s8 {'x'.join(map(str, gemm['shape']))}, {gemm['threads']} threads "
              f"| {gemm['gmacs_per_s']:,.0f} |", "",
              "| int8 runtime | batch | images/s | GMAC/s | of instruction peak | of onnxruntime GEMM |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['batch']} | {r['images_per_s']:,.0f} | {r['gmacs_per_s']:,.0f} | "
              f"{_share(r['of_peak'])} | {_share(r['of_gemm'])} |" for r in result["rates"]]
    lines += ["", "| target for ours | batch | images/s needed | GMAC/s needed | of instruction peak | "
              "of onnxruntime GEMM | beyond the instruction peak | beyond onnxruntime's GEMM |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n['target']} | {n['batch']} | {n['images_per_s']:,.0f} | {n['gmacs_per_s']:,.0f} | "
              f"{_share(n['of_peak'])} | {_share(n['of_gemm'])} | {_yes(n['beyond_peak'])} | {_yes(n['beyond_gemm'])} |"
              for n in result["needs"]]
    return cpu_lines(result) + "\n".join(lines) + "\n"


def ceiling_chart(result: dict[str, Any], path: Path) -> Path:
    """Bars: each runtime's int8 GMAC/s and each target's need, per batch; lines: the two ceilings."""
    plt = pyplot()

    labels = [f"{r['runtime']} b{r['batch']}" for r in result["rates"]]
    values = [r["gmacs_per_s"] for r in result["rates"]]
    colors = ["tab:blue"] * len(values)
    for n in result["needs"]:
        labels.append(f"needed: {n['target']} b{n['batch']}")
        values.append(n["gmacs_per_s"])
        colors.append("tab:red" if n["beyond_peak"] or n["beyond_gemm"] else "tab:orange")
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 2.0))
    y = np.arange(len(labels))
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    peak = result["instruction_peak"].get("gmacs_per_s")
    if peak is not None:
        ax.axvline(peak, color="black", label=f"instruction peak {peak:.0f}")
    ax.axvline(result["gemm_peak"]["gmacs_per_s"], color="grey", linestyle="--",
               label=f"onnxruntime GEMM {result['gemm_peak']['gmacs_per_s']:.0f}")
    ax.set_xlabel("int8 GMAC/s")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax.set_title("int8 multiply-add rate against this CPU's ceilings")
    return save_figure(fig, path)
