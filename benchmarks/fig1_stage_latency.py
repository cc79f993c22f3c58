"""Paper Fig. 1, regenerated: per-stage latency of one kernel call, PYNQ path against XRT path.

The source paper timed three stages per inference on an AWS F1 card through PYNQ: input
transfer (`sync_to_device`), kernel, output transfer (`sync_from_device`). Here the same
stages are timed on the two card runtimes fpgaas has, each on its emulated card (no card, XRT or
F1 host exists on this machine, so no native-host bars are drawn):

    PYNQ path   `PynqDevice` through the real pynq 3.0.1 package, emulated PYNQ card
    XRT path    `PyxrtDevice` through the emulated pyxrt binding (1 CU, 1 run per call)

The emulated kernel is the CPU twin, so the kernel bar is a CPU number, not an FPGA one; the
transfer bars are host memory copies plus each runtime's per-call overhead. What carries over to
hardware is the difference between the paths' overheads. Medians of `--calls` calls.

Usage: python benchmarks/fig1_stage_latency.py [--artifact model_repository/muon-pt/1] [--out docs/figures]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fpgaas.kernels.artifact import load_artifact
from fpgaas.service.devices.base import StageTimes

STAGES = ("input transfer", "kernel", "output transfer")
BATCHES = (1, 64, 1024)


def stage_medians(kernel: Any, x: np.ndarray, calls: int) -> tuple[float, float, float]:
    """Median µs of each stage over `calls` calls (after 20 warm-up calls)."""
    out = np.empty((x.shape[0], kernel.n_outputs), dtype=np.float32)
    times: list[StageTimes] = []
    for i in range(calls + 20):
        t = kernel.run_into(x, out)
        if i >= 20:
            times.append(t)
    return (
        statistics.median(t.to_device_s for t in times) * 1e6,
        statistics.median(t.kernel_s for t in times) * 1e6,
        statistics.median(t.from_device_s for t in times) * 1e6,
    )


def measure(artifact_dir: Path, calls: int) -> dict[str, dict[int, tuple[float, float, float]]]:
    from fpgaas.service.devices import xrt_emulation
    from fpgaas.service.devices.pynq import PynqDevice
    from fpgaas.service.devices.pynq_emulation import install_emulated_cards
    from fpgaas.service.devices.xrt import PyxrtDevice, XrtOptions

    artifact = load_artifact(artifact_dir)
    n_in = artifact.manifest.inputs[0].width
    rng = np.random.default_rng(0)
    import pynq

    pynq_card = install_emulated_cards(1)[0]
    xrt_emulation.install_emulated_cards(1)
    results: dict[str, dict[int, tuple[float, float, float]]] = {"PYNQ path": {}, "XRT path": {}}
    for batch in BATCHES:
        x = rng.normal(0.0, 1.0, size=(batch, n_in)).astype(np.float32)
        for path in results:
            if path == "PYNQ path":
                device: Any = PynqDevice(pynq.Device.devices.index(pynq_card))
            else:
                device = PyxrtDevice(xrt_emulation, 0, options=XrtOptions(compute_units=1, buffer_sets=1))
            try:
                kernel = device.load(artifact, max_batch=batch)
                results[path][batch] = stage_medians(kernel, x, calls if batch < 1024 else calls // 10)
            finally:
                device.close()
            print(path, batch, [round(v, 1) for v in results[path][batch]], flush=True)
    return results


def plot(results: dict[str, dict[int, tuple[float, float, float]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(4.2 * len(BATCHES), 4.0))
    for ax, batch in zip(axes, BATCHES, strict=True):
        paths = list(results)
        bottom = np.zeros(len(paths))
        for s, stage in enumerate(STAGES):
            values = np.array([results[p][batch][s] for p in paths])
            ax.bar(paths, values, bottom=bottom, label=stage)
            bottom += values
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("µs per call (median)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Per-stage latency, emulated cards (CPU twin as kernel): PYNQ path vs XRT path")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("model_repository/muon-pt/1"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    results = measure(args.artifact, args.calls)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "fig1_stage_latency.png")
    rows = [
        "# Fig. 1: per-stage latency, PYNQ path against XRT path",
        "",
        f"`python benchmarks/fig1_stage_latency.py --artifact {args.artifact}` (`make figures`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shared 2-core dev VM.",
        "",
        "**What ran:** both paths on *emulated* cards: `PynqDevice` through pynq 3.0.1 on the emulated PYNQ card,",
        "`PyxrtDevice` through the emulated pyxrt binding (1 compute unit, one run per call).",
        "**What did not run:** the native host (`kernels/host/`, XRT's C++ API) and any real card: there is no",
        "FPGA and no XRT here, so there are no hardware or native-host bars. The kernel stage is the CPU twin;",
        "where the emulated pyxrt may differ from XRT: [docs/xrt-emulation.md](../xrt-emulation.md).",
        "Medians in µs.",
        "",
        "| path | batch | input transfer | kernel | output transfer | total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path, by_batch in results.items():
        for batch, (a, b, c) in by_batch.items():
            rows.append(f"| {path} | {batch} | {a:.1f} | {b:.1f} | {c:.1f} | {a + b + c:.1f} |")
    rows += ["", "![per-stage latency](fig1_stage_latency.png)", ""]
    (args.out / "fig1_stage_latency.md").write_text("\n".join(rows))


if __name__ == "__main__":
    main()
