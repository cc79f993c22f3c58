"""Resolution helpers and the L1-style lookup-table baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples.muon.baseline import Baseline
from examples.muon.generator import generate
from examples.muon.resolution import (
    plot_resolution,
    relative_error,
    resolution,
    resolution_in_bins,
    robust_sigma,
)


def test_relative_error_and_robust_sigma() -> None:
    np.testing.assert_allclose(relative_error([11.0, 9.0], [10.0, 10.0]), [0.1, -0.1])
    gaussian = np.random.default_rng(0).normal(0.02, 0.15, 200_000)
    assert robust_sigma(gaussian) == pytest.approx(0.15, rel=0.02)
    with_tails = np.concatenate([gaussian, np.full(2_000, 50.0)])
    assert robust_sigma(with_tails) == pytest.approx(0.15, rel=0.05)
    with pytest.raises(ValueError):
        relative_error([1.0], [1.0, 2.0])


def test_resolution_in_bins_splits_by_true_pt() -> None:
    true = np.array([3.5, 4.0, 7.0, 30.0, 150.0])
    est = true * np.array([1.1, 0.9, 1.0, 1.2, 0.5])
    bins = resolution_in_bins(est, true, edges=(3.0, 5.0, 10.0, 200.0))
    assert [(b.pt_low, b.pt_high, b.n) for b in bins] == [(3.0, 5.0, 2), (5.0, 10.0, 1), (10.0, 200.0, 2)]
    overall = resolution(est, true)
    assert overall.n == 5 and overall.bias == pytest.approx(0.0)
    assert "3-5 GeV" in str(bins[0])


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    true = np.linspace(3.0, 100.0, 500)
    out = plot_resolution({"a": true * 1.1, "b": true}, true, tmp_path / "res.png")
    assert out is not None and out.stat().st_size > 1_000


def test_baseline_assigns_pt_close_to_truth_on_average() -> None:
    train, test = generate(100_000, seed=31), generate(20_000, seed=32)
    baseline = Baseline().fit(train.features, train.pt)
    pt = baseline.predict(test.features)
    assert pt.shape == test.pt.shape and np.all(np.isfinite(pt)) and np.all(pt > 0)
    summary = resolution(pt, test.pt)
    assert abs(summary.bias) < 0.05
    assert 0.1 < summary.sigma < 0.4
    # It sees stiffer tracks as stiffer: the assigned pT rises with the true pT.
    low, high = np.median(pt[test.pt < 5]), np.median(pt[test.pt > 50])
    assert high > 5 * low


def test_baseline_must_be_fitted_first() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        Baseline().predict(generate(10, seed=1).features)
