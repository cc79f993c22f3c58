"""Held-out evaluation of the trained model: float, fixed-point (the served kernel) and the baseline.

    python -m examples.muon.evaluate [--model models/muon-pt.h5] [--n 5000] [--plot res.png] [--update-metadata]

The fixed-point figures come from the artifact `fpgaas build` makes (its CPU twin computes the
FPGA's bits), so they describe exactly what the service answers.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from numpy.typing import NDArray

from examples.muon.baseline import Baseline
from examples.muon.generator import generate
from examples.muon.model import DEFAULT_MODEL_PATH, load_model
from examples.muon.resolution import plot_resolution, resolution, resolution_in_bins
from examples.muon.target import pt_from_output


def fixed_point_kernel(model_path: Path, work_dir: Path) -> Any:
    """The kernel fpgaas serves for ``model_path``: its artifact in ``work_dir`` (built if missing).

    Returns the artifact's CPU twin, whose outputs equal hls4ml's C simulation bit for bit.
    """
    from fpgaas.kernels.artifact import load_artifact
    from fpgaas.kernels.twin import KernelLibrary

    out = work_dir / "muon-pt" / "1"
    if (out / "manifest.json").is_file():
        artifact = load_artifact(out)
    else:
        from fpgaas.builder import build

        artifact = build(model_path, name="muon-pt", out=out)
    return KernelLibrary.from_artifact(artifact)


@dataclass(frozen=True)
class Evaluation:
    """Assigned pT (GeV) of each method on the same held-out muons, with the truth."""

    pt_true: NDArray[np.float32]
    pt_float: NDArray[np.float32]
    pt_fixed: NDArray[np.float32]
    pt_baseline: NDArray[np.float32]
    y_float: NDArray[np.float32]
    y_fixed: NDArray[np.float32]


def evaluate(
    model_path: Path, n: int, held_out_seed: int, train_seed: int, n_baseline: int, work_dir: Path
) -> Evaluation:
    """Run float, fixed-point and baseline on ``n`` held-out muons (seed ``held_out_seed``)."""
    model = load_model(model_path)
    held_out = generate(n, seed=held_out_seed)
    y_float = model.predict(held_out.features, batch_size=8192, verbose=0).reshape(-1)
    y_fixed = fixed_point_kernel(model_path, work_dir).run(held_out.features).reshape(-1)
    training = generate(n_baseline, seed=train_seed)
    baseline = Baseline().fit(training.features, training.pt)
    return Evaluation(
        pt_true=held_out.pt,
        pt_float=pt_from_output(y_float),
        pt_fixed=pt_from_output(y_fixed),
        pt_baseline=baseline.predict(held_out.features),
        y_float=y_float.astype(np.float32),
        y_fixed=y_fixed,
    )


def summarize(result: Evaluation) -> dict[str, Any]:
    """Resolution per method and the fixed-vs-float agreement, as JSON-ready numbers."""
    out: dict[str, Any] = {}
    for name, pt in (
        ("nn_float", result.pt_float),
        ("nn_fixed", result.pt_fixed),
        ("baseline", result.pt_baseline),
    ):
        overall = resolution(pt, result.pt_true)
        out[name] = {
            "sigma": round(overall.sigma, 4),
            "bias": round(overall.bias, 4),
            "bins": [
                {
                    "pt_low": r.pt_low,
                    "pt_high": r.pt_high,
                    "n": r.n,
                    "sigma": round(r.sigma, 4),
                    "bias": round(r.bias, 4),
                }
                for r in resolution_in_bins(pt, result.pt_true)
            ],
        }
    drift = (result.pt_fixed - result.pt_float) / result.pt_float
    out["fixed_vs_float"] = {
        "median_abs_rel_pt": round(float(np.median(np.abs(drift))), 4),
        "median_rel_pt": round(float(np.median(drift)), 4),
        "max_abs_output": round(float(np.max(np.abs(result.y_fixed - result.y_float))), 4),
    }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--n", type=int, default=5_000, help="held-out muons (C simulation is the slow part)")
    parser.add_argument("--work-dir", type=Path, default=Path("build/muon-evaluate"))
    parser.add_argument("--plot", type=Path, default=None, help="write the resolution histograms (PNG)")
    parser.add_argument("--update-metadata", action="store_true", help="add the figures to the model's JSON")
    args = parser.parse_args(argv)
    metadata_path = args.model.with_suffix(".json")
    metadata = json.loads(metadata_path.read_text())
    result = evaluate(
        args.model,
        args.n,
        metadata["held_out_seed"],
        metadata["seed"],
        metadata["samples"]["train"],
        args.work_dir,
    )
    figures = summarize(result)
    print(json.dumps(figures, indent=2))
    if args.plot is not None:
        written = plot_resolution(
            {
                "NN (float)": result.pt_float,
                "NN (ap_fixed, served kernel)": result.pt_fixed,
                "L1 LUT baseline": result.pt_baseline,
            },
            result.pt_true,
            args.plot,
        )
        print(f"plot: {written}" if written else "matplotlib not installed; no plot")
    if args.update_metadata:
        metadata["fixed_point_check"] = {
            "n": args.n,
            "kernel": "fpgaas build artifact (hls4ml types; accumulators sized by hls4ml)",
            **figures,
        }
        metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")


if __name__ == "__main__":
    main()
