"""CMS Level-1 endcap muon pT assignment (the paper's use case) on generated EMTF-style data.

Modules: ``generator`` (seeded muons -> 27 features), ``features`` (names, units, ``load_features``),
``target`` (y = 32 GeV * q / pT and back), ``baseline`` (L1-style LUT), ``resolution`` (Delta pT / pT
figures), ``model`` (the QKeras network; imports TensorFlow), ``train`` and ``evaluate`` (scripts).
This package namespace imports numpy only.
"""

from __future__ import annotations

from examples.muon.baseline import Baseline
from examples.muon.features import FEATURE_UNITS, FEATURES, N_FEATURES, load_features
from examples.muon.generator import MuonSample, generate
from examples.muon.resolution import Resolution, resolution, resolution_in_bins
from examples.muon.target import TARGET_DEFINITION, charge_from_output, pt_from_output, target_from_pt

__all__ = [
    "FEATURES",
    "FEATURE_UNITS",
    "N_FEATURES",
    "TARGET_DEFINITION",
    "Baseline",
    "MuonSample",
    "Resolution",
    "charge_from_output",
    "generate",
    "load_features",
    "pt_from_output",
    "resolution",
    "resolution_in_bins",
    "target_from_pt",
]
