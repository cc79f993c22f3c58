"""pT resolution figures: Delta pT / pT = (pT_est - pT_true) / pT_true, its core width and bias.

The width is a robust sigma, half the 16-84 % interquantile range (equal to sigma for a Gaussian and
blind to the far tails); the bias is the median. Plotting lives in ``plot_resolution`` and imports
matplotlib only when called.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

PT_BIN_EDGES_GEV: Final = (3.0, 5.0, 10.0, 20.0, 50.0, 200.0)


@dataclass(frozen=True)
class Resolution:
    """Resolution of one sample: ``n`` muons, ``sigma`` and ``bias`` of Delta pT / pT (fractions)."""

    n: int
    sigma: float
    bias: float
    pt_low: float = float("nan")
    pt_high: float = float("nan")

    def __str__(self) -> str:
        label = "all" if np.isnan(self.pt_low) else f"{self.pt_low:g}-{self.pt_high:g} GeV"
        return f"{label}: n={self.n} sigma={self.sigma:.3f} bias={self.bias:+.3f}"


def relative_error(pt_est: ArrayLike, pt_true: ArrayLike) -> NDArray[np.float64]:
    """Delta pT / pT per muon (dimensionless)."""
    true = np.asarray(pt_true, dtype=np.float64).reshape(-1)
    est = np.asarray(pt_est, dtype=np.float64).reshape(-1)
    if est.shape != true.shape:
        raise ValueError(f"pt_est has {est.shape[0]} entries, pt_true {true.shape[0]}")
    return (est - true) / true


def robust_sigma(values: ArrayLike) -> float:
    """Half the 16-84 % interquantile range."""
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [0.16, 0.84])
    return float((high - low) / 2.0)


def resolution(pt_est: ArrayLike, pt_true: ArrayLike) -> Resolution:
    """Overall resolution (robust sigma and median bias of Delta pT / pT)."""
    delta = relative_error(pt_est, pt_true)
    return Resolution(n=int(delta.size), sigma=robust_sigma(delta), bias=float(np.median(delta)))


def resolution_in_bins(
    pt_est: ArrayLike, pt_true: ArrayLike, edges: Sequence[float] = PT_BIN_EDGES_GEV
) -> list[Resolution]:
    """Resolution in bins of true pT (GeV, half-open [low, high)); empty bins are skipped."""
    true = np.asarray(pt_true, dtype=np.float64).reshape(-1)
    delta = relative_error(pt_est, true)
    out: list[Resolution] = []
    for low, high in itertools.pairwise(edges):
        rows = (true >= low) & (true < high)
        if rows.any():
            out.append(
                Resolution(
                    n=int(rows.sum()),
                    sigma=robust_sigma(delta[rows]),
                    bias=float(np.median(delta[rows])),
                    pt_low=float(low),
                    pt_high=float(high),
                )
            )
    return out


def plot_resolution(
    estimates: Mapping[str, ArrayLike], pt_true: ArrayLike, path: str | Path, bins: int = 100
) -> Path | None:
    """Overlay Delta pT / pT histograms, one per named estimate, into ``path`` (PNG).

    Returns the path written, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    edges = np.linspace(-1.0, 2.0, bins + 1)
    for label, estimate in estimates.items():
        delta = relative_error(estimate, pt_true)
        summary = resolution(estimate, pt_true)
        axes.hist(
            np.clip(delta, edges[0], edges[-1]),
            bins=list(edges),
            histtype="step",
            linewidth=1.5,
            label=f"{label} (sigma {summary.sigma:.3f}, bias {summary.bias:+.3f})",
        )
    axes.set_xlabel(r"$\Delta p_T / p_T = (p_T^{est} - p_T^{true}) / p_T^{true}$")
    axes.set_ylabel("muons")
    axes.legend(fontsize="small")
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
