"""Paper Fig. 2, regenerated: muon pT resolution of the NN against the L1 baseline, and of the
fixed-point kernel fpgaas serves against the float model.

Held-out muons from `examples.muon.generator` (the seed recorded with the model), the float
QKeras model, the served artifact's CPU twin (the FPGA's bits) and the L1 LUT baseline fitted on
the training sample (`examples.muon.evaluate.evaluate`). Left: Delta pT / pT histograms; right:
the robust sigma of Delta pT / pT in bins of true pT.

Usage: python benchmarks/fig2_resolution.py [--model models/muon-pt.h5] [--work-dir model_repository] [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from examples.muon.evaluate import evaluate, summarize
from examples.muon.resolution import relative_error, resolution, resolution_in_bins


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/muon-pt.h5"))
    parser.add_argument(
        "--work-dir", type=Path, default=Path("model_repository"), help="holds muon-pt/1 (built if missing)"
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    metadata = json.loads(args.model.with_suffix(".json").read_text())
    result = evaluate(
        args.model,
        args.n,
        metadata["held_out_seed"],
        metadata["seed"],
        metadata["samples"]["train"],
        args.work_dir,
    )
    methods = {
        "NN, float (QKeras)": result.pt_float,
        "NN, fixed point (served kernel)": result.pt_fixed,
        "L1 LUT baseline": result.pt_baseline,
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    edges = np.linspace(-1.0, 2.0, 121)
    for label, pt in methods.items():
        summary = resolution(pt, result.pt_true)
        left.hist(
            np.clip(relative_error(pt, result.pt_true), edges[0], edges[-1]),
            bins=list(edges),
            histtype="step",
            linewidth=1.4,
            label=f"{label}: sigma {summary.sigma:.3f}",
        )
        bins = resolution_in_bins(pt, result.pt_true)
        centres = [np.sqrt(b.pt_low * b.pt_high) for b in bins]
        right.plot(centres, [b.sigma for b in bins], "o-", label=label)
    left.set_xlabel(r"$\Delta p_T / p_T$")
    left.set_ylabel("muons")
    left.legend(fontsize=7)
    right.set_xscale("log")
    right.set_xlabel(r"true $p_T$ (GeV)")
    right.set_ylabel(r"robust $\sigma(\Delta p_T / p_T)$")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(f"Muon pT resolution, {args.n:,} held-out muons (examples.muon generator)")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "fig2_resolution.png", dpi=110)
    figures = summarize(result)
    lines = [
        "# Fig. 2: pT resolution, NN against the L1 baseline, fixed-point kernel against float",
        "",
        f"`python benchmarks/fig2_resolution.py --model {args.model} --n {args.n}` (`make figures`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Muons from the project's generator "
        "(`examples/muon/generator.py`), not CMS simulation; the fixed-point column is the served artifact's "
        "CPU twin, bit-exact with the kernel.",
        "",
        "| method | sigma(Delta pT / pT) | bias |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("nn_float", "NN, float"),
        ("nn_fixed", "NN, fixed point (served)"),
        ("baseline", "L1 LUT"),
    ):
        lines.append(f"| {label} | {figures[key]['sigma']:.4f} | {figures[key]['bias']:+.4f} |")
    drift = figures["fixed_vs_float"]
    lines += [
        "",
        f"Fixed point against float: median |Delta pT / pT| {drift['median_abs_rel_pt']}, "
        f"largest output difference {drift['max_abs_output']}.",
        "",
        "![resolution](fig2_resolution.png)",
        "",
    ]
    (args.out / "fig2_resolution.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
