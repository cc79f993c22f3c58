"""Per-stage latency of a kernel call through PYNQ, after the source paper's Figure 1.

The paper timed three stages per inference on an AWS F1 card through PYNQ: input injection
(`sync_to_device`), the kernel, output extraction (`sync_from_device`). This runs the same
stages on the emulated card (the CPU build of the kernel stands in for the FPGA) along three
paths, for single samples and batches:

    pynq-device   fpgaas's `PynqDevice`: overlay resident, buffers allocated once
    pynq-naive    the paper's listing: `pynq.allocate` both buffers on every call
    library       `KernelLibrary.run_into` directly: no PYNQ, the floor for this kernel

The emulated kernel costs what the CPU build costs, so the kernel stage is not an FPGA number;
the differences between paths (the Python and PYNQ overhead per call) are what carry over.

Usage: python benchmarks/bench_pynq_stages.py [--artifact DIR] [--calls N] [--out docs/benchmarks]
Without --artifact it builds the paper's muon pT regressor (examples.muon.model) with the builder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from fpgaas.kernels.artifact import Artifact

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STAGES = ("to_device", "kernel", "from_device")
Timings = dict[str, list[float]]  # stage -> µs per call


Call = Callable[[], tuple[float, float, float]]  # one call -> (to_device, kernel, from_device) µs


def pynq_device_path(artifact: Artifact, x: np.ndarray, card: int, stack: ExitStack) -> Call:
    from fpgaas.service.devices.pynq import PynqDevice

    device = PynqDevice(card)
    stack.callback(device.close)
    kernel = device.load(artifact, max_batch=len(x))

    def call() -> tuple[float, float, float]:
        _, t = kernel.run(x)
        return t.to_device_s * 1e6, t.kernel_s * 1e6, t.from_device_s * 1e6

    return call


def pynq_naive_path(artifact: Artifact, x: np.ndarray, card: int, stack: ExitStack) -> Call:
    """The source paper's sequence with the buffers allocated inside every call."""
    import pynq

    from fpgaas.kernels.xclbin import EMULATION_XCLBIN

    target = pynq.Device.devices[card]
    overlay = pynq.Overlay(str(artifact.file(EMULATION_XCLBIN)), device=target)
    stack.callback(overlay.free)
    ip = getattr(overlay, next(iter(overlay.ip_dict)))
    n_out = artifact.manifest.outputs[0].width

    def call() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        xb = pynq.allocate(x.shape, np.float32, target=target)
        yb = pynq.allocate((len(x), n_out), np.float32, target=target)
        xb[:] = x
        xb.sync_to_device()
        t1 = time.perf_counter()
        ip.call(xb, yb, len(x))
        t2 = time.perf_counter()
        yb.sync_from_device()
        _ = np.array(yb)
        xb.freebuffer()
        yb.freebuffer()
        t3 = time.perf_counter()
        return _us(t0, t1, t2, t3)

    return call


def library_path(artifact: Artifact, x: np.ndarray, card: int, stack: ExitStack) -> Call:
    """No PYNQ: copy in, run the kernel library, copy out."""
    from fpgaas.kernels.twin import KernelLibrary

    lib = KernelLibrary.from_artifact(artifact)
    x_buf = np.empty_like(x)
    y_buf = np.empty((len(x), lib.n_outputs), dtype=np.float32)

    def call() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        np.copyto(x_buf, x)
        t1 = time.perf_counter()
        lib.run_into(x_buf, y_buf)
        t2 = time.perf_counter()
        _ = np.array(y_buf)
        t3 = time.perf_counter()
        return _us(t0, t1, t2, t3)

    return call


PATHS = {"pynq-device": pynq_device_path, "pynq-naive": pynq_naive_path, "library": library_path}


def measure(artifact: Artifact, x: np.ndarray, calls: int, warmup: int) -> dict[str, Timings]:
    """Time every path on the same batch, interleaved call by call so load drifts hit all alike."""
    import pynq

    from fpgaas.service.devices.pynq_emulation import install_emulated_cards

    cards = [pynq.Device.devices.index(c) for c in install_emulated_cards(2)[:2]]
    out: dict[str, Timings] = {name: {s: [] for s in STAGES} for name in PATHS}
    with ExitStack() as stack:
        # Each PYNQ path gets its own card: a card holds one overlay at a time.
        runners = {
            name: make(artifact, x, cards[i % 2], stack) for i, (name, make) in enumerate(PATHS.items())
        }
        for i in range(warmup + calls):
            for name, run in runners.items():
                stages = run()
                if i >= warmup:
                    for stage, value in zip(STAGES, stages, strict=True):
                        out[name][stage].append(value)
    return out


def _us(t0: float, t1: float, t2: float, t3: float) -> tuple[float, float, float]:
    return (t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6


def _artifact(path: str | None, workdir: Path) -> Artifact:
    from fpgaas.kernels.artifact import load_artifact

    if path is None:
        from examples.muon.model import build_model
        from fpgaas.builder import build

        model = workdir / "muon-pt.h5"
        build_model(seed=0).save(model)  # untrained weights: the timing does not depend on them
        artifact = build(model, name="muon-pt", out=workdir / "muon-pt" / "1")
    else:
        artifact = load_artifact(path)
    return artifact


def summarize(results: dict[str, dict[int, Timings]]) -> list[dict[str, object]]:
    rows = []
    for path, by_batch in results.items():
        for batch, t in by_batch.items():
            total = [sum(v) for v in zip(*(t[s] for s in STAGES), strict=True)]
            row: dict[str, object] = {"path": path, "batch": batch}
            for s in STAGES:
                row[f"{s}_us"] = round(statistics.median(t[s]), 2)
            row["total_us"] = round(statistics.median(total), 2)
            row["total_p99_us"] = round(float(np.percentile(total, 99)), 2)
            rows.append(row)
    return rows


def plot(results: dict[str, dict[int, Timings]], batches: list[int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(batches), 4, figsize=(16, 3.6 * len(batches)), squeeze=False)
    colors = {"pynq-device": "tab:blue", "pynq-naive": "tab:pink", "library": "tab:gray"}
    for r, batch in enumerate(batches):
        for c, stage in enumerate((*STAGES, "total")):
            ax = axes[r][c]
            series = {}
            for path, by_batch in results.items():
                t = by_batch[batch]
                series[path] = (
                    [sum(v) for v in zip(*(t[s] for s in STAGES), strict=True)]
                    if stage == "total"
                    else t[stage]
                )
            lo = max(0.05, min(float(np.percentile(v, 0.5)) for v in series.values()))
            hi = max(float(np.percentile(v, 99.5)) for v in series.values())
            bins = np.logspace(np.log10(lo), np.log10(hi), 70)
            for path, values in series.items():
                ax.hist(np.clip(values, lo, hi), bins=bins, alpha=0.55, color=colors[path], label=path)
            ax.set_xscale("log")
            ax.set_title(f"{stage}, batch {batch}")
            ax.set_xlabel("µs per call (log scale)")
            ax.set_yticks([])
    axes[0][0].legend()
    fig.suptitle("Per-call stage latency on the emulated PYNQ card (method of the paper's Figure 1)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", help="an artifact directory (default: build the muon model)")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per path and batch size")
    parser.add_argument("--batched-calls", type=int, default=100, help="timed calls for batches >= 64")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 1024])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        artifact = _artifact(args.artifact, Path(tmp))
        rng = np.random.default_rng(0)
        n_in = artifact.manifest.inputs[0].width
        results: dict[str, dict[int, Timings]] = {p: {} for p in PATHS}
        for batch in args.batches:
            x = rng.normal(0.0, 1.0, size=(batch, n_in)).astype(np.float32)
            calls = args.calls if batch < 64 else args.batched_calls
            for name, timings in measure(artifact, x, calls, warmup=min(50, calls)).items():
                results[name][batch] = timings
        rows = summarize(results)
        plot(results, args.batches, args.out / "pynq_stages.png")
    print("| path | batch | to_device µs | kernel µs | from_device µs | total µs (median) | total p99 µs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['path']} | {r['batch']} | {r['to_device_us']} | {r['kernel_us']} | {r['from_device_us']} "
            f"| {r['total_us']} | {r['total_p99_us']} |"
        )


if __name__ == "__main__":
    main()
