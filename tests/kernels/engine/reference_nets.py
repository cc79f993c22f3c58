"""The test networks: hls4ml projects of the test networks and their C-simulation outputs.

"muon" is the served model exactly as `fpgaas.builder.build` makes it (`tests.fixtures.builds`), compared
with the hls4ml C simulation of the same conversion. The other networks are built by
`hls_reference.py` in two subprocesses (QKeras needs tf_keras, the "keras3" network Keras 3)
while the muon build runs, into a session temp directory: a fresh clone needs no cache and the
whole set costs about two minutes on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

BUILDER = Path(__file__).with_name("hls_reference.py")
REPO = Path(__file__).resolve().parents[3]
N_SAMPLES = 100_000
N_RANDOM_SAMPLES = 20_000
NAMED = ("muon", "muon_narrow", "sat_rnd", "unsigned_wide", "batchnorm", "keras3")
RANDOM = tuple(f"random{i}" for i in range(8))
# Two groups built side by side, each in one process (plus one for keras3, which needs Keras 3).
_GROUPS = (
    [("muon_narrow", N_SAMPLES), ("keras3", N_SAMPLES)],
    [("sat_rnd", N_SAMPLES), ("batchnorm", N_SAMPLES), ("unsigned_wide", N_SAMPLES), ("tanh", 0)]
    + [(name, N_RANDOM_SAMPLES) for name in RANDOM],
)
# Inputs the generator in hls_reference never draws; the served model must agree on them too.
SPECIAL_VALUES = np.array(
    [np.nan, -np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -1e-45, -0.0, 0.0, 2.0**40, 31.99951171875],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Reference:
    name: str
    hls_dir: Path
    x: np.ndarray  # float32 (n, n_in)
    y: np.ndarray  # float32 (n, n_out): hls4ml's predict


def _run_group(root: Path, jobs: list[tuple[str, int]]) -> None:
    """Build `jobs` one after the other: keras3 in a process of its own, the rest in one."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    legacy = [job for job in jobs if job[0] != "keras3"]
    for part in (legacy, [job for job in jobs if job[0] == "keras3"]):
        if not part:
            continue
        log = root / f"build-{part[0][0]}.log"
        with log.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, str(BUILDER), str(root), str(REPO), *(f"{n}:{k}" for n, k in part)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                timeout=900,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"building {[n for n, _ in part]} failed, see {log}")


def _muon(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    from hls_reference import inputs

    from tests.fixtures.builds import shared_muon_build

    built = shared_muon_build(tmp_path_factory)
    rng = np.random.default_rng(27)
    x = inputs(27, N_SAMPLES, 4.0, rng)
    special = rng.choice(SPECIAL_VALUES, size=(len(SPECIAL_VALUES) * 8, 27))
    x = np.concatenate([x, special.astype(np.float32)])
    y = np.asarray(built.reference.predict(x), dtype=np.float32).reshape(len(x), -1)
    return Reference("muon", built.artifact.path / "hls", x, y)


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Reference]:
    """Every test network, keyed by name (the served muon model, five other nets, eight random ones)."""
    pytest.importorskip("hls4ml")
    root = tmp_path_factory.mktemp("engine-references")
    with ThreadPoolExecutor(max_workers=len(_GROUPS)) as pool:
        # The subprocesses build while this process builds the muon artifact.
        pending: list[Future[None]] = [pool.submit(_run_group, root, group) for group in _GROUPS]
        refs = {"muon": _muon(tmp_path_factory)}
        for future in pending:
            future.result()
    for group in _GROUPS:
        for name, _ in group:
            out = root / name
            if name == "tanh":
                empty = np.empty((0, 0), np.float32)
                refs[name] = Reference(name, out / "hls", empty, empty)
            else:
                refs[name] = Reference(name, out / "hls", np.load(out / "x.npy"), np.load(out / "ref.npy"))
    return refs
