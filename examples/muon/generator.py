"""Seeded generator of CMS-endcap-like (EMTF-style) muon trigger primitives in CSC stations ME1..ME4.

The model is deliberately simple but keeps the physics the pT assignment relies on:

* spectrum: pT ~ pT**-index on [3, 200] GeV (index 2 = flat in 1/pT), both charges, eta uniform in
  [1.2, 2.4], phi uniform;
* bending: station phi offset ``-q * S_station * h(eta) / pT`` (rad), ``S`` in rad*GeV falling from ME1
  to ME4 because the return-yoke field bends back; ``h(eta) = (tan(theta)/tan(theta(1.6)))**0.8``
  models the shrinking field integral and transverse lever arm at high eta; the ME1/1 ring sits deeper
  in the field than ME1/2, and front/rear chambers differ slightly in lever arm;
* multiple scattering: Highland-formula kicks in the calorimeter+solenoid and in the three yoke disks,
  propagated to each station's phi and theta with its lever arm; it scales as 1/pT, grows with the
  material (more at low eta) and has a 1 % single-hard-scatter tail;
* detector: per-ring Gaussian resolution, then phi quantized to 1/60 degree and theta to 36.5/128 degree
  like trigger primitives; stations are efficient with 90-94 % and a track needs at least two of them.

Features come out in the units documented in ``examples.muon.features``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from examples.muon.features import (
    BEND_LIMIT,
    DPHI_UNIT_RAD,
    DTHETA_UNIT_RAD,
    FEATURE_LIMIT,
    N_FEATURES,
    PAIRS,
    PHI_QUANTUM_RAD,
    THETA_QUANTUM_RAD,
    feature_index,
)

PT_RANGE_GEV: Final = (3.0, 200.0)
ETA_RANGE: Final = (1.2, 2.4)

_N_STATIONS: Final = 4
# Station z (m) for ring 1 / ring 2 (index 0 = ME1); ME1/1 sits closer to the solenoid than ME1/2.
_Z_M: Final = np.array([[6.0, 7.0], [8.3, 8.3], [9.4, 9.4], [10.3, 10.3]])
# Inner-ring (ring 1) coverage starts at these |eta| values.
_RING1_ETA: Final = np.array([1.6, 1.6, 1.7, 1.8])
# Bending strength S (rad*GeV at eta 1.6) per station and ring; differences give dphi.
_BEND_S: Final = np.array([[0.42, 0.30], [0.20, 0.20], [0.14, 0.14], [0.11, 0.11]])
# Local segment bend per station (rad*GeV) and the pattern step (rad) that quantizes it.
_LOCAL_BEND: Final = np.array([[0.30, 0.22], [0.10, 0.10], [0.07, 0.07], [0.05, 0.05]])
_BEND_STEP_RAD: Final = 0.02
# Front/rear chambers differ in z, hence in lever arm, by a few percent.
_FR_EFFECT: Final = np.array([0.04, 0.03, 0.0, 0.0])
# Scatterers: z (m) and radiation lengths: calorimeter+solenoid, yoke disks YE1, YE2, YE3.
_SCATTER_Z_M: Final = np.array([3.0, 7.6, 8.85, 9.85])
_SCATTER_X0: Final = np.array([120.0, 34.0, 34.0, 20.0])
_HARD_SCATTER_FRACTION: Final = 0.01
_HARD_SCATTER_FACTOR: Final = 4.0
# Per-ring phi resolution (rad) before quantization: half-strip / sqrt(12).
_PHI_SIGMA_RAD: Final = np.array(
    [[0.45e-3, 0.35e-3], [0.65e-3, 0.35e-3], [0.65e-3, 0.35e-3], [0.65e-3, 0.35e-3]]
)
_THETA_SIGMA_RAD: Final = 1.0e-3
_THETA_MIN_RAD: Final = np.deg2rad(8.5)
_EFFICIENCY: Final = np.array([0.94, 0.93, 0.92, 0.90])
_MIN_STATIONS: Final = 2


@dataclass(frozen=True)
class MuonSample:
    """Generated muons: ``features`` float32 (n, 27), true ``pt`` (GeV), ``charge`` (+1/-1), true ``eta``."""

    features: NDArray[np.float32]
    pt: NDArray[np.float32]
    charge: NDArray[np.int8]
    eta: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.pt.shape[0])


def generate(
    n: int,
    seed: int | None = None,
    *,
    rng: np.random.Generator | None = None,
    pt_range: tuple[float, float] = PT_RANGE_GEV,
    eta_range: tuple[float, float] = ETA_RANGE,
    spectrum_index: float = 2.0,
) -> MuonSample:
    """Generate ``n`` muons, reproducibly from ``seed`` or from a caller's ``rng`` (not both).

    ``pt_range`` in GeV, ``eta_range`` in pseudorapidity (within [1.2, 2.4]); the pT density falls as
    ``pT**-spectrum_index``.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if rng is not None and seed is not None:
        raise ValueError("pass either seed or rng, not both")
    lo_pt, hi_pt = pt_range
    if not 0 < lo_pt <= hi_pt:
        raise ValueError(f"pt_range must satisfy 0 < low <= high, got {pt_range}")
    lo_eta, hi_eta = eta_range
    if not ETA_RANGE[0] <= lo_eta <= hi_eta <= ETA_RANGE[1]:
        raise ValueError(f"eta_range must lie within {ETA_RANGE}, got {eta_range}")
    gen = rng if rng is not None else np.random.default_rng(seed)

    pt = _falling_spectrum(gen, n, lo_pt, hi_pt, spectrum_index)
    charge = np.where(gen.random(n) < 0.5, -1, 1).astype(np.int8)
    eta = gen.uniform(lo_eta, hi_eta, n)
    phi0 = gen.uniform(0.0, 2.0 * np.pi, n)
    features = _trigger_features(gen, pt, charge, eta, phi0)
    return MuonSample(features=features, pt=pt.astype(np.float32), charge=charge, eta=eta.astype(np.float32))


def _falling_spectrum(
    gen: np.random.Generator, n: int, lo: float, hi: float, index: float
) -> NDArray[np.float64]:
    """Inverse-CDF sampling of dN/dpT ~ pT**-index on [lo, hi] GeV."""
    u = gen.random(n)
    if lo == hi:
        return np.full(n, lo)
    if np.isclose(index, 1.0):
        return lo * (hi / lo) ** u
    a = 1.0 - index
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def _trigger_features(
    gen: np.random.Generator,
    pt: NDArray[np.float64],
    charge: NDArray[np.int8],
    eta: NDArray[np.float64],
    phi0: NDArray[np.float64],
) -> NDArray[np.float32]:
    n = pt.shape[0]
    q = charge.astype(np.float64)
    theta = 2.0 * np.arctan(np.exp(-eta))
    field = (np.tan(theta) / np.tan(2.0 * np.arctan(np.exp(-1.6)))) ** 0.8

    # Ring from the local eta; the small smear mimics chamber overlaps near the boundary.
    local_eta = eta[:, None] + gen.normal(0.0, 0.01, (n, _N_STATIONS))
    ring = np.where(local_eta > _RING1_ETA[None, :], 1, 2)
    ring_col = ring - 1
    station = np.arange(_N_STATIONS)[None, :]
    z = _Z_M[station, ring_col]

    # Front/rear bit from the chamber containing the hit: 10-degree chambers, 20 degrees for ME2/1.
    width = np.where((station == 1) & (ring == 1), np.deg2rad(20.0), np.deg2rad(10.0))
    fr = (np.floor(phi0[:, None] / width).astype(np.int64) % 2).astype(np.float64)

    strength = _BEND_S[station, ring_col] * (1.0 + _FR_EFFECT[None, :] * (2.0 * fr - 1.0))
    phi = phi0[:, None] - q[:, None] * strength * field[:, None] / pt[:, None]

    scatter_phi, scatter_theta = _multiple_scattering(gen, pt, eta, theta, z)
    phi = phi + scatter_phi
    theta_hit = theta[:, None] + scatter_theta

    sigma_phi = _PHI_SIGMA_RAD[station, ring_col]
    phi = _quantize(phi + gen.normal(0.0, 1.0, (n, _N_STATIONS)) * sigma_phi, PHI_QUANTUM_RAD)
    theta_hit = _THETA_MIN_RAD + _quantize(
        theta_hit + gen.normal(0.0, _THETA_SIGMA_RAD, (n, _N_STATIONS)) - _THETA_MIN_RAD, THETA_QUANTUM_RAD
    )

    local = q[:, None] * _LOCAL_BEND[station, ring_col] * field[:, None] / pt[:, None]
    local = local * (1.0 + 0.15 * gen.normal(0.0, 1.0, (n, _N_STATIONS)))
    bend = np.clip(
        np.rint(local / _BEND_STEP_RAD + gen.normal(0.0, 0.4, (n, _N_STATIONS))), -BEND_LIMIT, BEND_LIMIT
    )

    present = _station_mask(gen, n)
    return _assemble(phi, theta_hit, bend, present, ring, fr)


def _multiple_scattering(
    gen: np.random.Generator,
    pt: NDArray[np.float64],
    eta: NDArray[np.float64],
    theta: NDArray[np.float64],
    z: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Phi and theta offsets (rad) at each station from Highland kicks at the scatterers.

    A kick of angle t at z_k moves the hit at z_i by t*(z_i - z_k)/cos(theta) across the track; in phi
    that is t*(1 - z_k/z_i)/sin(theta), with t ~ sin(theta)/pT, so the phi smear goes as 1/pT. Low-eta
    tracks cross more material (longer oblique path plus the barrel-endcap transition).
    """
    n = pt.shape[0]
    extra = 1.0 + 0.5 * np.clip((1.6 - eta) / 0.4, 0.0, 1.0)
    x0 = _SCATTER_X0[None, :] * (extra / np.cos(theta))[:, None]
    momentum = pt / np.sin(theta)
    kick_sigma = 0.0136 / momentum[:, None] * np.sqrt(x0) * (1.0 + 0.038 * np.log(x0))
    tail = np.where(gen.random((n, 4)) < _HARD_SCATTER_FRACTION, _HARD_SCATTER_FACTOR, 1.0)
    kick_phi = gen.normal(0.0, 1.0, (n, 4)) * kick_sigma * tail
    kick_theta = gen.normal(0.0, 1.0, (n, 4)) * kick_sigma * tail
    # lever[n, station, scatterer]: only scatterers upstream of the station move it.
    lever = np.clip(1.0 - _SCATTER_Z_M[None, None, :] / z[:, :, None], 0.0, None)
    phi_offset = np.einsum("nsk,nk->ns", lever, kick_phi) / np.sin(theta)[:, None]
    theta_offset = np.einsum("nsk,nk->ns", lever, kick_theta)
    return phi_offset, theta_offset


def _station_mask(gen: np.random.Generator, n: int) -> NDArray[np.bool_]:
    """Which stations fired; rows with fewer than two hits are redrawn (the trigger needs two)."""
    present = gen.random((n, _N_STATIONS)) < _EFFICIENCY[None, :]
    redo = present.sum(axis=1) < _MIN_STATIONS
    while redo.any():
        present[redo] = gen.random((int(redo.sum()), _N_STATIONS)) < _EFFICIENCY[None, :]
        redo = present.sum(axis=1) < _MIN_STATIONS
    return present


def _quantize(value: NDArray[np.float64], quantum: float) -> NDArray[np.float64]:
    return np.rint(value / quantum) * quantum


def _assemble(
    phi: NDArray[np.float64],
    theta: NDArray[np.float64],
    bend: NDArray[np.float64],
    present: NDArray[np.bool_],
    ring: NDArray[np.int64],
    fr: NDArray[np.float64],
) -> NDArray[np.float32]:
    n = phi.shape[0]
    out = np.zeros((n, N_FEATURES), dtype=np.float64)
    mask = present.astype(np.float64)
    for i, j in PAIRS:
        both = mask[:, i - 1] * mask[:, j - 1]
        out[:, feature_index(f"dphi_{i}{j}")] = both * (phi[:, j - 1] - phi[:, i - 1]) / DPHI_UNIT_RAD
        out[:, feature_index(f"dtheta_{i}{j}")] = both * (theta[:, j - 1] - theta[:, i - 1]) / DTHETA_UNIT_RAD
    for s in range(1, _N_STATIONS + 1):
        out[:, feature_index(f"bend_{s}")] = mask[:, s - 1] * bend[:, s - 1]
        out[:, feature_index(f"present_{s}")] = mask[:, s - 1]
        out[:, feature_index(f"ring_{s}")] = mask[:, s - 1] * ring[:, s - 1]
    out[:, feature_index("fr_1")] = mask[:, 0] * fr[:, 0]
    out[:, feature_index("fr_2")] = mask[:, 1] * fr[:, 1]
    first = np.argmax(present, axis=1)
    first_theta = theta[np.arange(n), first]
    out[:, feature_index("eta")] = -np.log(np.tan(first_theta / 2.0))
    # Saturate like a fixed-width trigger word so that no input can wrap in ap_fixed<16,6>.
    np.clip(out, -FEATURE_LIMIT, FEATURE_LIMIT, out=out)
    return out.astype(np.float32)
