"""The client against a live fpgaas server (uvicorn on a free loopback port) serving a QKeras
model built by the real builder; every answer is checked against the kernel's CPU twin."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fpgaas.client import (
    AsyncClient,
    BadRequest,
    Client,
    ModelNotFoundError,
    RequestTimeout,
    ServerOverloaded,
    TransportError,
)
from tests.client.conftest import ServedModel


def test_json_and_binary_answers_are_identical_and_equal_the_twin(
    server_url: str, served_model: ServedModel
) -> None:
    x = served_model.rows(500, seed=1)
    with Client(server_url) as c:
        as_json = c.predict_result(x, model=served_model.name, binary=False)
        as_binary = c.predict_result(x, model=served_model.name, binary=True)
    np.testing.assert_array_equal(as_json.outputs, as_binary.outputs)
    np.testing.assert_array_equal(as_binary.outputs, served_model.twin(x))
    assert as_json.outputs.shape == (500, 1) and as_json.outputs.dtype == np.float32
    for result in (as_json, as_binary):
        assert (result.model, result.version) == (served_model.name, "1")
        assert result.device  # which device answered, e.g. "emulated-0"


def test_one_sample_without_naming_the_only_model(server_url: str, served_model: ServedModel) -> None:
    x = served_model.rows(1, seed=2)[0]
    with Client(server_url) as c:
        out = c.predict(x.tolist())
    np.testing.assert_array_equal(out, served_model.twin(x.reshape(1, -1)))


def test_models_describe_the_served_model(server_url: str, served_model: ServedModel) -> None:
    with Client(server_url) as c:
        (listed,) = c.models()
        one = c.model(served_model.name)
        assert c.model(served_model.name, version="1") == one
    assert listed == one
    assert (one.name, one.version, one.versions) == (served_model.name, "1", ("1",))
    assert (one.n_inputs, one.n_outputs) == (served_model.n_inputs, 1)
    assert one.inputs[0].dtype == "float32" and one.inputs[0].fixed_point.startswith("ap_fixed")


def test_probes(server_url: str) -> None:
    with Client(server_url) as c:
        assert c.health() is True
        assert c.ready() is True


def test_hundreds_of_concurrent_requests_of_mixed_sizes_each_get_their_own_rows(
    server_url: str, served_model: ServedModel
) -> None:
    sizes = np.random.default_rng(3).choice([1, 2, 7, 31, 150, 152, 600], size=300)
    batches = [served_model.rows(int(n), seed=100 + i) for i, n in enumerate(sizes)]

    async def run_all() -> list[np.ndarray]:
        async with AsyncClient(server_url) as c:  # batches above 151 rows go binary, others JSON
            return await asyncio.gather(*(c.predict(x, model=served_model.name) for x in batches))

    answers = asyncio.run(run_all())
    assert len(answers) == len(batches)
    for x, y in zip(batches, answers, strict=True):
        np.testing.assert_array_equal(y, served_model.twin(x))


def test_one_client_shared_by_threads(server_url: str, served_model: ServedModel) -> None:
    batches = [served_model.rows(n, seed=200 + n) for n in range(1, 33)]
    answers: dict[int, np.ndarray] = {}
    with Client(server_url) as c:

        def work(i: int) -> None:
            answers[i] = c.predict(batches[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, x in enumerate(batches):
        np.testing.assert_array_equal(answers[i], served_model.twin(x))


@pytest.mark.parametrize("binary", [False, True])
def test_rows_of_the_wrong_width_are_a_bad_request_naming_the_field(
    server_url: str, binary: bool, served_model: ServedModel
) -> None:
    with Client(server_url) as c:
        with pytest.raises(BadRequest) as caught:
            c.predict(np.ones((3, served_model.n_inputs - 1)), model=served_model.name, binary=binary)
        assert caught.value.status_code == 400
        assert caught.value.field == ("body" if binary else "inputs")
        assert str(served_model.n_inputs) in caught.value.message
        assert c.predict(served_model.rows(1, seed=4)).shape == (1, 1)  # the server keeps serving


def test_an_unknown_model_is_model_not_found(server_url: str, served_model: ServedModel) -> None:
    with Client(server_url) as c:
        with pytest.raises(ModelNotFoundError) as caught:
            c.predict(served_model.rows(2, seed=5), model="no-such-model")
        assert caught.value.status_code == 404
        with pytest.raises(ModelNotFoundError):
            c.predict(served_model.rows(2, seed=5), model="no-such-model", binary=True)
        with pytest.raises(ModelNotFoundError):
            c.model("no-such-model")
        with pytest.raises(ModelNotFoundError):
            c.predict(served_model.rows(2, seed=5), model=served_model.name, version="99")


def test_a_read_timeout_raises_request_timeout_and_is_not_resent(
    slow_server_url: str, served_model: ServedModel
) -> None:
    # The slow server holds each request 0.2 s before it runs: longer than this client waits.
    with Client(slow_server_url, timeout=0.05, retries=3) as c:
        start = time.perf_counter()
        with pytest.raises(RequestTimeout) as caught:
            c.predict(served_model.rows(1, seed=6))
        assert time.perf_counter() - start < 0.19
        assert isinstance(caught.value, TransportError)
        assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    with Client(slow_server_url) as c:
        assert c.predict(served_model.rows(1, seed=6)).shape == (1, 1)


def test_nothing_listening_is_a_transport_error_after_the_retries() -> None:
    with Client("http://127.0.0.1:9", retries=2, backoff_s=0.01) as c:  # port 9: discard, closed here
        with pytest.raises(TransportError) as caught:
            c.predict(np.ones((1, 27)))
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        assert c.health() is False


def _rejected(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fpgaas_rejected_requests_total" and sample.labels.get("reason") == "overloaded"
    )


def test_an_overloaded_server_answers_503_with_retry_after(
    slow_server_url: str, served_model: ServedModel
) -> None:
    async def burst() -> list[np.ndarray | BaseException]:
        async with AsyncClient(slow_server_url, retries=0) as c:
            calls = [
                c.predict(served_model.rows(60, seed=10 + i)) for i in range(6)
            ]  # 360 rows for a queue of 100
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(burst())
    refused = [o for o in outcomes if isinstance(o, ServerOverloaded)]
    assert refused, outcomes
    assert all(e.status_code == 503 and e.retry_after is not None and e.retry_after > 0 for e in refused)
    assert all(isinstance(o, (np.ndarray, ServerOverloaded)) for o in outcomes)


def test_retries_carry_a_burst_through_an_overloaded_server(
    slow_server_url: str, served_model: ServedModel
) -> None:
    batches = [served_model.rows(60, seed=20 + i) for i in range(6)]
    before = _rejected(slow_server_url)

    async def burst() -> list[np.ndarray]:
        async with AsyncClient(slow_server_url, retries=30, backoff_s=0.05, max_backoff_s=0.25) as c:
            return await asyncio.gather(*(c.predict(x) for x in batches))

    answers = asyncio.run(burst())
    assert _rejected(slow_server_url) > before  # some attempts were refused with 503 ...
    for x, y in zip(batches, answers, strict=True):  # ... and every request still got its rows
        np.testing.assert_array_equal(y, served_model.twin(x))
