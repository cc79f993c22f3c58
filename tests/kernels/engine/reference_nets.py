"""The test networks: hls4ml projects of the test networks and their C-simulation outputs.

Each network is built by `hls_reference.py` in a subprocess (QKeras needs tf_keras, the Keras 3
network needs Keras 3), two at a time, and cached in pytest's cache directory keyed by the
builder's source, so a rerun costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

BUILDER = Path(__file__).with_name("hls_reference.py")
REPO = Path(__file__).resolve().parents[3]
N_SAMPLES = 100_000
N_RANDOM_SAMPLES = 20_000
NAMED = ("muon", "sat_rnd", "unsigned_wide", "batchnorm", "keras3")
RANDOM = tuple(f"random{i}" for i in range(8))


@dataclass(frozen=True)
class Reference:
    name: str
    hls_dir: Path
    x: np.ndarray  # float32 (n, n_in)
    y: np.ndarray  # float32 (n, n_out): hls4ml's predict


def _key(name: str, n: int) -> str:
    h = hashlib.sha256(BUILDER.read_bytes())
    h.update(f"{name}:{n}".encode())
    muon = REPO / "models" / "muon-pt.h5"
    if name == "muon" and muon.is_file():
        h.update(muon.read_bytes())
    return f"{name}-{h.hexdigest()[:16]}"


def _build(root: Path, name: str, n: int) -> Path:
    out = root / _key(name, n)
    done = out / ("hls" if name == "tanh" else "ref.npy")
    if not done.exists():
        out.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        log = out / "build.log"
        with log.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, str(BUILDER), name, str(out), str(n), str(REPO)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=out,
                timeout=1200,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed, see {log}")
    return out


@pytest.fixture(scope="session")
def references(request: pytest.FixtureRequest) -> dict[str, Reference]:
    """Every test network, keyed by name (the muon model, four other nets, eight random ones)."""
    pytest.importorskip("hls4ml")
    root = Path(request.config.cache.mkdir("engine-hls-reference"))
    jobs = (
        [(name, N_SAMPLES) for name in NAMED] + [(name, N_RANDOM_SAMPLES) for name in RANDOM] + [("tanh", 0)]
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        dirs = dict(zip([j[0] for j in jobs], pool.map(lambda j: _build(root, *j), jobs), strict=True))
    refs = {}
    for name, out in dirs.items():
        if name == "tanh":
            refs[name] = Reference(
                name, out / "hls", np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)
            )
        else:
            refs[name] = Reference(name, out / "hls", np.load(out / "x.npy"), np.load(out / "ref.npy"))
    return refs
