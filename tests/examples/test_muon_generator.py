"""The endcap-muon generator: reproducible, physically shaped, and always inside the FPGA input type."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from examples.muon.features import FEATURE_LIMIT, FEATURES, FIXED_MAX, FIXED_MIN, PAIRS, feature_index
from examples.muon.generator import ETA_RANGE, PT_RANGE_GEV, MuonSample, generate
from examples.muon.resolution import robust_sigma


@pytest.fixture(scope="module")
def sample() -> MuonSample:
    return generate(60_000, seed=11)


def column(sample: MuonSample, name: str) -> np.ndarray:
    return sample.features[:, feature_index(name)]


def test_same_seed_gives_identical_sample_and_rng_is_equivalent() -> None:
    first, second = generate(2_000, seed=3), generate(2_000, seed=3)
    from_rng = generate(2_000, rng=np.random.default_rng(3))
    for other in (second, from_rng):
        np.testing.assert_array_equal(first.features, other.features)
        np.testing.assert_array_equal(first.pt, other.pt)
        np.testing.assert_array_equal(first.charge, other.charge)
    assert not np.array_equal(first.features, generate(2_000, seed=4).features)


def test_seed_and_rng_together_are_refused() -> None:
    with pytest.raises(ValueError, match="either seed or rng"):
        generate(10, seed=1, rng=np.random.default_rng(1))


def test_shapes_and_dtypes(sample: MuonSample) -> None:
    n = len(sample)
    assert n == 60_000
    assert sample.features.shape == (n, len(FEATURES)) == (n, 27)
    assert sample.features.dtype == np.float32
    assert sample.pt.shape == sample.charge.shape == sample.eta.shape == (n,)
    assert sample.pt.dtype == np.float32 and sample.eta.dtype == np.float32
    assert set(np.unique(sample.charge)) == {-1, 1}
    assert 0.48 < float(np.mean(sample.charge == 1)) < 0.52


def test_pt_spectrum_is_in_range_and_steeply_falling(sample: MuonSample) -> None:
    assert PT_RANGE_GEV[0] <= sample.pt.min() and sample.pt.max() <= PT_RANGE_GEV[1]
    counts, _ = np.histogram(sample.pt, bins=[3, 6, 12, 24, 48, 96, 200])
    assert all(a > b for a, b in itertools.pairwise(counts))
    # Flat in 1/pT (dN/dpT ~ pT**-2) puts about half the muons below 6 GeV.
    assert 0.45 < np.mean(sample.pt < 6.0) < 0.55


def test_eta_covers_the_endcap(sample: MuonSample) -> None:
    assert ETA_RANGE[0] <= sample.eta.min() and sample.eta.max() <= ETA_RANGE[1]
    measured = column(sample, "eta")
    # Quantized theta plus scattering: the measured eta is good to a few hundredths.
    assert np.median(np.abs(measured - sample.eta)) < 0.03


def test_dphi_sign_follows_charge_and_magnitude_falls_with_pt(sample: MuonSample) -> None:
    dphi = column(sample, "dphi_12")
    has = column(sample, "present_1") * column(sample, "present_2") > 0
    soft = has & (sample.pt < 20.0)
    assert np.mean(np.sign(dphi[soft]) == sample.charge[soft]) > 0.97
    medians = [
        np.median(np.abs(dphi[has & (sample.pt >= lo) & (sample.pt < hi)]))
        for lo, hi in [(3, 5), (5, 10), (10, 20), (20, 50), (50, 200)]
    ]
    assert all(a > b for a, b in itertools.pairwise(medians))
    # Bending is ~ 1/pT: |dphi| * pT stays roughly constant across the spectrum.
    scaled = np.abs(dphi[has]) * sample.pt[has]
    low, high = (
        np.median(scaled[sel]) for sel in (sample.pt[has] < 5, (sample.pt[has] > 10) & (sample.pt[has] < 20))
    )
    assert 0.85 < low / high < 1.15


def test_bending_is_weaker_at_high_eta() -> None:
    low_eta = generate(5_000, seed=5, pt_range=(10.0, 10.0), eta_range=(1.65, 1.75))
    high_eta = generate(5_000, seed=5, pt_range=(10.0, 10.0), eta_range=(2.3, 2.4))
    dphi = [np.median(np.abs(s.features[:, feature_index("dphi_12")])) for s in (low_eta, high_eta)]
    assert dphi[0] > 1.3 * dphi[1]


def test_multiple_scattering_spread_is_larger_at_low_pt() -> None:
    spreads = {}
    for pt in (4.0, 40.0):
        s = generate(8_000, seed=6, pt_range=(pt, pt), eta_range=(1.85, 1.90))
        both = (s.features[:, feature_index("present_1")] * s.features[:, feature_index("present_2")] > 0) & (
            s.charge == 1
        )
        spreads[pt] = robust_sigma(s.features[both, feature_index("dphi_12")])
    # Scattering grows like 1/pT: ten times lower pT, several times wider (resolution floors the 40 GeV one).
    assert spreads[4.0] > 5.0 * spreads[40.0]


@pytest.mark.parametrize(
    ("pt_range", "eta_range"),
    [
        (PT_RANGE_GEV, ETA_RANGE),
        ((3.0, 3.0), (1.2, 1.25)),
        ((3.0, 3.0), (1.6, 1.7)),
        ((200.0, 200.0), (2.35, 2.4)),
    ],
)
def test_every_feature_fits_ap_fixed_16_6(
    pt_range: tuple[float, float], eta_range: tuple[float, float]
) -> None:
    x = generate(40_000, seed=7, pt_range=pt_range, eta_range=eta_range).features
    assert np.all(np.isfinite(x))
    assert x.min() >= FIXED_MIN and x.max() <= FIXED_MAX
    assert np.abs(x).max() <= FEATURE_LIMIT


def test_missing_stations_are_zeroed_with_flag_zero(sample: MuonSample) -> None:
    present = np.stack([column(sample, f"present_{s}") for s in (1, 2, 3, 4)], axis=1)
    assert set(np.unique(present)) == {0.0, 1.0}
    assert np.all(present.sum(axis=1) >= 2)
    assert 0.05 < np.mean(present.sum(axis=1) < 4) < 0.4
    for s in (1, 2, 3, 4):
        missing = present[:, s - 1] == 0
        assert missing.any()
        involved = [f"bend_{s}", f"ring_{s}"] + [
            f"{kind}_{i}{j}" for kind in ("dphi", "dtheta") for i, j in PAIRS if s in (i, j)
        ]
        if s in (1, 2):
            involved.append(f"fr_{s}")
        for name in involved:
            assert np.all(column(sample, name)[missing] == 0.0), name
        assert set(np.unique(column(sample, f"ring_{s}")[~missing])) == {1.0, 2.0}
