"""An L1-style pT assignment to compare against: a lookup table on the first available |dphi|.

Like the classic endcap trigger LUTs, the table is addressed by which station pair gives the phi
difference (the first present of 12, 13, 14, 23, 24, 34), a coarse eta bin and a |dphi| bin; each cell
holds the median true 1/pT of the training muons that fall in it (the median of 1/pT, not of pT, because
the bending measures 1/pT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from examples.muon.features import PAIRS, feature_index

_PAIR_COLUMNS: Final = tuple(feature_index(f"dphi_{i}{j}") for i, j in PAIRS)
_PRESENT_COLUMNS: Final = tuple(feature_index(f"present_{s}") for s in (1, 2, 3, 4))
_ETA_COLUMN: Final = feature_index("eta")


@dataclass
class Baseline:
    """Binned LUT: (station pair, eta bin, |dphi| bin) -> pT in GeV. Call ``fit`` before ``predict``."""

    n_dphi_bins: int = 32
    eta_edges: tuple[float, ...] = (1.2, 1.5, 1.8, 2.1, 2.4)
    _dphi_edges: list[NDArray[np.float64]] = field(default_factory=list, init=False, repr=False)
    _table: NDArray[np.float64] | None = field(default=None, init=False, repr=False)

    def fit(self, features: ArrayLike, pt: ArrayLike) -> Baseline:
        """Fill the table from training ``features`` (n, 27) and true ``pt`` (GeV). Returns self."""
        x = np.asarray(features, dtype=np.float64)
        inv_pt = 1.0 / np.asarray(pt, dtype=np.float64)
        pair, dphi = _first_pair(x)
        n_eta = len(self.eta_edges) - 1
        self._dphi_edges = []
        table = np.full((len(PAIRS), n_eta, self.n_dphi_bins), np.nan)
        overall = float(np.median(inv_pt))
        for p in range(len(PAIRS)):
            rows = pair == p
            # Quantile edges put equal statistics in each |dphi| bin.
            if rows.sum() >= self.n_dphi_bins:
                inner = np.quantile(dphi[rows], np.linspace(0.0, 1.0, self.n_dphi_bins + 1)[1:-1])
            else:
                inner = np.linspace(0.0, 1.0, self.n_dphi_bins - 1)
            self._dphi_edges.append(inner)
            if not rows.any():
                table[p] = overall
                continue
            eta_bin = self._eta_bin(x[rows, _ETA_COLUMN])
            dphi_bin = np.searchsorted(inner, dphi[rows])
            pair_fallback = float(np.median(inv_pt[rows]))
            for e in range(n_eta):
                for d in range(self.n_dphi_bins):
                    cell = inv_pt[rows][(eta_bin == e) & (dphi_bin == d)]
                    table[p, e, d] = np.median(cell) if cell.size else pair_fallback
        self._table = table
        return self

    def predict(self, features: ArrayLike) -> NDArray[np.float32]:
        """Assigned pT (GeV) for ``features`` (n, 27)."""
        if self._table is None:
            raise RuntimeError("Baseline.predict called before fit")
        x = np.asarray(features, dtype=np.float64)
        pair, dphi = _first_pair(x)
        eta_bin = self._eta_bin(x[:, _ETA_COLUMN])
        dphi_bin = np.empty(x.shape[0], dtype=np.int64)
        for p, inner in enumerate(self._dphi_edges):
            rows = pair == p
            dphi_bin[rows] = np.searchsorted(inner, dphi[rows])
        return (1.0 / self._table[pair, eta_bin, dphi_bin]).astype(np.float32)

    def _eta_bin(self, eta: NDArray[np.float64]) -> NDArray[np.int64]:
        inner = np.asarray(self.eta_edges[1:-1])
        return np.searchsorted(inner, eta).astype(np.int64)


def _first_pair(x: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Index of the first station pair with both stations present, and its |dphi| (10 mrad units)."""
    present = x[:, _PRESENT_COLUMNS] > 0.5
    has_pair = np.stack([present[:, i - 1] & present[:, j - 1] for i, j in PAIRS], axis=1)
    pair = np.argmax(has_pair, axis=1)
    dphi = np.abs(x[np.arange(x.shape[0]), np.asarray(_PAIR_COLUMNS)[pair]])
    return pair.astype(np.int64), dphi
