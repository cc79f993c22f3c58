"""The 27 endcap-muon trigger features: names, units, fixed-point limits and a reader for user files.

Every feature is a float in a fixed unit chosen so that the whole population lies well inside the
FPGA input type ``ap_fixed<16,6>`` (range [-32, 32), resolution 2**-10) while the trigger-primitive
quantum stays many LSBs wide:

* ``dphi_ij`` -- phi(station j) - phi(station i) in units of 10 mrad (``DPHI_UNIT_RAD``); the trigger
  phi quantum of 1/60 degree (0.29 mrad) is 0.029 units = 30 LSBs. A positive muon gives dphi > 0.
* ``dtheta_ij`` -- theta(j) - theta(i) in units of 10 mrad (``DTHETA_UNIT_RAD``); the theta quantum
  (36.5 deg / 128 = 5.0 mrad) is 0.5 units.
* ``bend_i`` -- signed CSC pattern bend of the station's segment, an integer in [-4, 4] (pattern steps).
* ``present_i`` -- 1 if station MEi contributed a hit, else 0.
* ``ring_i`` -- CSC ring number of the hit (1 = inner, 2 = outer), 0 when missing.
* ``fr_1``, ``fr_2`` -- front/rear chamber bit of the ME1 and ME2 hit (0 or 1; 0 when missing).
* ``eta`` -- track pseudorapidity from the quantized theta of the first station, in [1.2, 2.4].

A missing station sets every feature that involves it to 0 and its ``present_i`` flag to 0.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

STATIONS: Final = (1, 2, 3, 4)
PAIRS: Final = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))

FEATURES: Final[tuple[str, ...]] = (
    *(f"dphi_{i}{j}" for i, j in PAIRS),
    *(f"dtheta_{i}{j}" for i, j in PAIRS),
    *(f"bend_{s}" for s in STATIONS),
    *(f"present_{s}" for s in STATIONS),
    *(f"ring_{s}" for s in STATIONS),
    "fr_1",
    "fr_2",
    "eta",
)
N_FEATURES: Final = len(FEATURES)
assert N_FEATURES == 27

DPHI_UNIT_RAD: Final = 0.010
DTHETA_UNIT_RAD: Final = 0.010
PHI_QUANTUM_RAD: Final = np.deg2rad(1.0 / 60.0)
THETA_QUANTUM_RAD: Final = np.deg2rad(36.5 / 128.0)
BEND_LIMIT: Final = 4

# ap_fixed<16,6>: 6 integer bits including sign.
FIXED_MIN: Final = -32.0
FIXED_MAX: Final = 32.0 - 2.0**-10
# Features saturate here, like a fixed-width trigger word, so that no input can wrap on the FPGA.
FEATURE_LIMIT: Final = 30.0

FEATURE_UNITS: Final[dict[str, str]] = {
    **{f"dphi_{i}{j}": "10 mrad" for i, j in PAIRS},
    **{f"dtheta_{i}{j}": "10 mrad" for i, j in PAIRS},
    **{f"bend_{s}": "pattern steps" for s in STATIONS},
    **{f"present_{s}": "flag" for s in STATIONS},
    **{f"ring_{s}": "ring number" for s in STATIONS},
    "fr_1": "flag",
    "fr_2": "flag",
    "eta": "pseudorapidity",
}


def feature_index(name: str) -> int:
    """Column of feature ``name`` in the (n, 27) matrix."""
    return FEATURES.index(name)


def load_features(path: str | Path) -> NDArray[np.float32]:
    """Read user features from ``.npz`` (key ``features`` or ``X``) or ``.csv`` (27 columns).

    A CSV may start with a header row; if it does, it must list exactly ``FEATURES`` in order.
    Returns a float32 array of shape (n, 27). Raises ``ValueError`` naming the problem and
    ``FileNotFoundError`` when the file is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        array = _read_npz(path)
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npz or .csv")
    return _validated(array, str(path))


def _read_npz(path: Path) -> NDArray[np.float32]:
    with np.load(path, allow_pickle=False) as archive:
        for key in ("features", "X"):
            if key in archive.files:
                raw = archive[key]
                break
        else:
            raise ValueError(f"{path}: no array named 'features' or 'X' (found {sorted(archive.files)})")
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"{path}: array must be numeric, got dtype {raw.dtype}")
    if raw.ndim == 1 and raw.size == N_FEATURES:
        raw = raw.reshape(1, N_FEATURES)
    if raw.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array (n, {N_FEATURES}), got shape {raw.shape}")
    if raw.shape[1] != N_FEATURES:
        raise ValueError(f"{path}: expected {N_FEATURES} feature columns, got {raw.shape[1]}")
    return raw.astype(np.float32)


def _read_csv(path: Path) -> NDArray[np.float32]:
    with path.open(newline="") as handle:
        rows = [
            (number, row)
            for number, row in enumerate(csv.reader(handle), start=1)
            if any(c.strip() for c in row)
        ]
    if not rows:
        raise ValueError(f"{path}: file holds no rows")
    header = [cell.strip() for cell in rows[0][1]]
    if not _is_numeric_row(header):
        if tuple(header) != FEATURES:
            raise ValueError(f"{path}: header row does not match FEATURES (expected {', '.join(FEATURES)})")
        rows = rows[1:]
    values = np.empty((len(rows), N_FEATURES), dtype=np.float32)
    for index, (line, row) in enumerate(rows):
        if len(row) != N_FEATURES:
            raise ValueError(f"{path}: line {line} has {len(row)} columns, expected {N_FEATURES}")
        for column, cell in enumerate(row):
            try:
                values[index, column] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}: line {line}, column {column + 1} ({FEATURES[column]}): non-numeric value {cell!r}"
                ) from None
    return values


def _is_numeric_row(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _validated(array: NDArray[np.float32], source: str) -> NDArray[np.float32]:
    if array.shape[0] == 0:
        raise ValueError(f"{source}: no samples")
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{source}: sample {row}, feature {FEATURES[column]} is not finite")
    return np.ascontiguousarray(array)
