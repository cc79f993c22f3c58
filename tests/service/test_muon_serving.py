"""The default muon pT model, served over HTTP, answers exactly what hls4ml's C simulation computes.

The artifact is built from the committed `models/muon-pt.h5` by the real builder; the server is a
live uvicorn process on a free loopback port; the reference is `hls_model.predict` of the same
converted model (hls4ml's own g++ build of its bit-accurate C++).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from examples.muon.generator import generate
from fpgaas.client import AsyncClient, Client
from tests.fixtures.builds import BuiltModel, shared_muon_build
from tests.fixtures.servers import serving


@pytest.fixture(scope="module")
def muon(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return shared_muon_build(tmp_path_factory)


@pytest.fixture(scope="module")
def muon_url(muon: BuiltModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repository = tmp_path_factory.mktemp("muon-repository")
    shutil.copytree(muon.artifact.path, repository / "muon-pt" / "1")
    with serving(model_repository=repository) as url:
        yield url


def c_simulation(muon: BuiltModel, x: np.ndarray) -> np.ndarray:
    return np.asarray(muon.reference.predict(x), dtype=np.float32).reshape(len(x), 1)


def samples() -> np.ndarray:
    """2,000 generated endcap muons plus 1,000 rows far outside ap_fixed<16,6> (they wrap)."""
    physics = generate(2_000, seed=5).features
    wild = np.random.default_rng(6).normal(0.0, 40.0, size=(1_000, 27)).astype(np.float32)
    return np.concatenate([physics, wild])


def test_served_predictions_equal_the_c_simulation_bit_for_bit(muon: BuiltModel, muon_url: str) -> None:
    x = samples()
    expected = c_simulation(muon, x)
    with Client(muon_url) as client:
        as_binary = client.predict(x, model="muon-pt", binary=True)
        as_json = client.predict(x[:300], model="muon-pt", binary=False)
        result = client.predict_result(x[:1])
    assert np.array_equal(as_binary, expected)
    assert np.array_equal(as_json, expected[:300])
    assert (result.model, result.version, result.device) == ("muon-pt", "1", "emulated-0")
    assert len(np.unique(expected)) > 500  # the comparison is not between constant outputs


def test_concurrent_callers_of_mixed_sizes_each_get_their_own_rows(muon: BuiltModel, muon_url: str) -> None:
    x = samples()
    expected = c_simulation(muon, x)
    rng = np.random.default_rng(7)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=199, replace=False))
    pieces = np.split(np.arange(len(x)), cuts)  # 200 requests of 1 .. ~100 rows

    async def run() -> list[np.ndarray]:
        async with AsyncClient(muon_url) as client:
            return await asyncio.gather(*(client.predict(x[idx], model="muon-pt") for idx in pieces))

    answers = asyncio.run(run())
    for idx, answer in zip(pieces, answers, strict=True):
        assert np.array_equal(answer, expected[idx])


def test_the_model_list_describes_the_muon_kernel(muon_url: str) -> None:
    with Client(muon_url) as client:
        (info,) = client.models()
    assert (info.name, info.version, info.n_inputs, info.n_outputs) == ("muon-pt", "1", 27, 1)
    assert info.inputs[0].fixed_point == "ap_fixed<16,6>"
