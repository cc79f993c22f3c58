"""The fpgaas SDK in v2 mode against the live server: the same answers as `/predict` mode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from v2_live import LiveServer

from fpgaas.client import AsyncClient, Client, ModelNotFoundError

MODEL = "tiny"


def rows(n: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, width)).astype(np.float32)


@pytest.mark.parametrize("binary", [None, True, False], ids=["default", "binary", "json"])
def test_v2_mode_equals_predict_mode_and_the_twin(
    live_server: LiveServer, reference: Callable[[np.ndarray], np.ndarray], binary: bool | None
) -> None:
    with Client(live_server.url, protocol="v2") as v2, Client(live_server.url) as own:
        width = v2.model(MODEL).n_inputs
        x = rows(50, width, seed=11)
        prediction = v2.predict_result(x, model=MODEL, binary=binary)
        np.testing.assert_array_equal(prediction.outputs, own.predict(x, model=MODEL))
        np.testing.assert_array_equal(prediction.outputs, reference(x))
        assert (prediction.model, prediction.version) == (MODEL, "2")
        assert prediction.device  # fpgaas names the device in the answer's parameters
        assert v2.predict_result(x[:3], model=MODEL, version="1", binary=binary).version == "1"


def test_v2_mode_metadata_probes_and_errors(live_server: LiveServer) -> None:
    with Client(live_server.url, protocol="v2", retries=0) as v2:
        assert v2.health() and v2.ready()
        info = v2.model(MODEL)
        assert (info.name, info.version, info.versions) == (MODEL, "2", ("1", "2"))
        assert info.inputs[0].dtype == "float32" and info.n_outputs >= 1
        assert [(m.name, m.version) for m in v2.models()] == [(MODEL, "1"), (MODEL, "2")]
        with pytest.raises(ModelNotFoundError):
            v2.predict(np.ones((1, info.n_inputs)), model="nope")
        with pytest.raises(ModelNotFoundError):
            v2.predict(np.ones((1, info.n_inputs)), model=MODEL, version="9")
        with pytest.raises(ValueError, match="values per sample"):
            v2.predict(np.ones((1, info.n_inputs + 1)), model=MODEL)
        with pytest.raises(ModelNotFoundError):
            v2.model(MODEL, "9")


def test_async_v2_mode_under_concurrency(
    live_server: LiveServer, reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    async def run() -> None:
        async with AsyncClient(live_server.url, protocol="v2") as v2:
            width = (await v2.model(MODEL)).n_inputs
            batches = [rows(1 + i % 5, width, seed=i) for i in range(100)]
            answers = await asyncio.gather(*(v2.predict(x, model=MODEL) for x in batches))
            for x, y in zip(batches, answers, strict=True):
                np.testing.assert_array_equal(y, reference(x))

    asyncio.run(run())
