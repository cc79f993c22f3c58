"""Feature names, the regression target, and reading user feature files (.npz / .csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples.muon.features import FEATURE_UNITS, FEATURES, FIXED_MAX, N_FEATURES, load_features
from examples.muon.generator import generate
from examples.muon.target import PT_MAX_GEV, charge_from_output, pt_from_output, target_from_pt


@pytest.fixture
def features() -> np.ndarray:
    return generate(50, seed=21).features


def test_there_are_27_distinct_documented_features() -> None:
    assert N_FEATURES == len(FEATURES) == len(set(FEATURES)) == 27
    assert set(FEATURE_UNITS) == set(FEATURES)
    assert FEATURES[:6] == ("dphi_12", "dphi_13", "dphi_14", "dphi_23", "dphi_24", "dphi_34")


@pytest.mark.parametrize("key", ["features", "X"])
def test_npz_round_trip(tmp_path: Path, features: np.ndarray, key: str) -> None:
    path = tmp_path / "muons.npz"
    if key == "features":
        np.savez(path, features=features.astype(np.float64))
    else:
        np.savez(path, X=features.astype(np.float64))
    loaded = load_features(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, features)


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path: Path, features: np.ndarray, header: bool) -> None:
    path = tmp_path / "muons.csv"
    np.savetxt(
        path, features, delimiter=",", fmt="%.9g", header=",".join(FEATURES) if header else "", comments=""
    )
    loaded = load_features(path)
    assert loaded.shape == (50, 27)
    np.testing.assert_array_equal(loaded, features)


def test_csv_with_wrong_column_count_names_the_line(tmp_path: Path, features: np.ndarray) -> None:
    path = tmp_path / "short.csv"
    np.savetxt(path, features[:, :26], delimiter=",", header=",".join(FEATURES[:26]), comments="")
    with pytest.raises(ValueError, match="header row does not match FEATURES"):
        load_features(path)
    np.savetxt(path, features[:, :26], delimiter=",")
    with pytest.raises(ValueError, match=r"line 1 has 26 columns, expected 27"):
        load_features(path)


def test_csv_with_non_numeric_cell_names_line_and_feature(tmp_path: Path, features: np.ndarray) -> None:
    rows = [",".join(FEATURES)] + [",".join(f"{v:g}" for v in row) for row in features[:3]]
    cells = rows[2].split(",")
    cells[4] = "abc"
    rows[2] = ",".join(cells)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"line 3, column 5 \(dphi_24\): non-numeric value 'abc'"):
        load_features(path)


def test_npz_problems_are_reported(tmp_path: Path, features: np.ndarray) -> None:
    wrong_key = tmp_path / "wrong_key.npz"
    np.savez(wrong_key, data=features)
    with pytest.raises(ValueError, match="no array named 'features' or 'X'"):
        load_features(wrong_key)
    wrong_width = tmp_path / "wrong_width.npz"
    np.savez(wrong_width, X=features[:, :20])
    with pytest.raises(ValueError, match="expected 27 feature columns, got 20"):
        load_features(wrong_width)
    not_finite = tmp_path / "nan.npz"
    bad = features.copy()
    bad[2, 26] = np.nan
    np.savez(not_finite, X=bad)
    with pytest.raises(ValueError, match="sample 2, feature eta is not finite"):
        load_features(not_finite)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    other = tmp_path / "muons.txt"
    other.write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_features(other)
    with pytest.raises(FileNotFoundError):
        load_features(tmp_path / "absent.npz")


def test_target_round_trips_and_fits_the_output_type() -> None:
    pt = np.array([3.0, 5.0, 20.0, 100.0, 200.0])
    charge = np.array([1, -1, 1, -1, 1])
    y = target_from_pt(pt, charge)
    assert np.all(np.abs(y) < FIXED_MAX / 2)
    assert np.all(np.sign(y) == charge)
    np.testing.assert_allclose(pt_from_output(y), pt, rtol=1e-6)
    np.testing.assert_allclose(pt_from_output(y[:, None]), pt, rtol=1e-6)
    np.testing.assert_array_equal(charge_from_output(y), charge)


def test_a_zero_output_saturates_at_the_maximum_pt() -> None:
    assert pt_from_output(np.array([0.0]))[0] == pytest.approx(PT_MAX_GEV)
    with pytest.raises(ValueError):
        target_from_pt([0.0], [1])
