"""Large bodies are parsed in a parser process and give exactly what parsing on the loop gives:
the same rows, the same refusal naming the same field. A parser process that dies loses no
request, and closing the parsers leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import pytest_asyncio

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.body_parsers import THREAD_BYTES, BodyParsers
from fpgaas.service.api.payload import parse_json_predict
from fpgaas.service.api.v2 import codec

pytestmark = pytest.mark.asyncio

PROCESS_BYTES = 256 * 1024


def predict_body(n: int, seed: int = 0, width: int = 6) -> tuple[np.ndarray, bytes]:
    x = np.random.default_rng(seed).normal(0.0, 4.0, size=(n, width)).astype(np.float32)
    return x, orjson.dumps({"model": "tiny", "version": "3", "inputs": x.tolist()})


@pytest_asyncio.fixture
async def parsers() -> AsyncIterator[BodyParsers]:
    running = BodyParsers(processes=1, process_bytes=PROCESS_BYTES)
    running.start()
    yield running
    running.close()


def wait_for_pids(parsers: BodyParsers, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while len(parsers.pids) < count:
        assert time.monotonic() < deadline, "the parser process did not start"
        time.sleep(0.05)
    return parsers.pids


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its pool, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_large_body_parsed_in_a_process_gives_the_rows_parsed_on_the_loop(
    parsers: BodyParsers,
) -> None:
    x, body = predict_body(20_000)
    assert len(body) >= PROCESS_BYTES
    parsed = await parsers.run(parse_json_predict, body)
    inline = parse_json_predict(body)
    assert (parsed.model, parsed.version) == ("tiny", "3")
    assert parsed.inputs.dtype == inline.inputs.dtype
    np.testing.assert_array_equal(parsed.inputs, inline.inputs)
    np.testing.assert_array_equal(parsed.inputs.astype(np.float32), x)
    assert wait_for_pids(parsers, 1), "a parser process did the work"


async def test_a_bad_value_deep_in_a_large_body_is_the_same_refusal_naming_the_same_field(
    parsers: BodyParsers,
) -> None:
    _, body = predict_body(20_000)
    rows = orjson.loads(body)
    rows["inputs"][15_000][3] = "1.5"
    bad = orjson.dumps(rows)
    with pytest.raises(BadInput) as in_process:
        await parsers.run(parse_json_predict, bad)
    with pytest.raises(BadInput) as inline:
        parse_json_predict(bad)
    assert type(in_process.value) is type(inline.value)
    assert in_process.value.field == inline.value.field == "inputs[15000][3]"
    assert in_process.value.message == inline.value.message


async def test_a_large_v2_body_comes_back_as_tensors_without_its_json_data(parsers: BodyParsers) -> None:
    x = np.random.default_rng(2).normal(size=(20_000, 6)).astype(np.float32)
    request = {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    body = orjson.dumps(request)
    assert len(body) >= PROCESS_BYTES
    decoded = await parsers.run(codec.decode_detached, body, None, "tiny", {"x": (6,)})
    np.testing.assert_array_equal(
        decoded.tensors["x"], codec.decode(body, None, "tiny", {"x": (6,)}).tensors["x"]
    )
    np.testing.assert_array_equal(decoded.tensors["x"].reshape(x.shape), x)
    assert decoded.request.inputs[0].data is None
    assert decoded.request.inputs[0].shape == [20_000, 6]


async def test_a_parser_process_that_dies_loses_no_body_and_is_replaced(parsers: BodyParsers) -> None:
    x, body = predict_body(20_000, seed=5)
    (first,) = wait_for_pids(parsers, 1)
    os.kill(first, signal.SIGKILL)
    while alive(first):
        await asyncio.sleep(0.01)
    parsed = await parsers.run(parse_json_predict, body)
    np.testing.assert_array_equal(parsed.inputs.astype(np.float32), x)
    again = await parsers.run(parse_json_predict, body)  # the replacement pool serves
    np.testing.assert_array_equal(again.inputs.astype(np.float32), x)
    assert first not in wait_for_pids(parsers, 1)


async def test_small_bodies_never_leave_the_loop_and_without_processes_large_ones_use_a_thread() -> None:
    threadless = BodyParsers(processes=0, process_bytes=PROCESS_BYTES)
    threadless.start()
    x, body = predict_body(20_000)
    np.testing.assert_array_equal(
        (await threadless.run(parse_json_predict, body)).inputs.astype(np.float32), x
    )
    assert threadless.pids == []
    small_x, small = predict_body(3)
    assert len(small) < THREAD_BYTES
    np.testing.assert_array_equal(
        (await threadless.run(parse_json_predict, small)).inputs.astype(np.float32), small_x
    )
    threadless.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_ready_returns_once_the_parser_processes_have_imported_the_parsers() -> None:
    """The server reports ready only after this: a process still importing would share the
    serving core with the first requests."""
    parsers = BodyParsers(processes=1, process_bytes=PROCESS_BYTES)
    parsers.start()
    try:
        [pid] = parsers.pids
        assert _cpu_s(pid) < 0.1  # just spawned: numpy, orjson and the parsers are still to import
        await parsers.ready()
        assert _cpu_s(pid) >= 0.1
        await parsers.ready()  # a second call has nothing left to wait for
    finally:
        parsers.close()


async def test_parsers_that_are_not_ready_in_time_are_logged_and_never_block_startup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parsers = BodyParsers(processes=1, process_bytes=PROCESS_BYTES)
    parsers.start()
    try:
        await parsers.ready(timeout_s=0.0)
        assert "body parser processes not ready" in caplog.text
        x, body = predict_body(20_000)  # over PROCESS_BYTES: still parsed, once the process is up
        parsed = await parsers.run(parse_json_predict, body)
        np.testing.assert_array_equal(parsed.inputs.astype(np.float32), x)
    finally:
        parsers.close()


async def test_closing_the_parsers_stops_their_processes() -> None:
    running = BodyParsers(processes=2, process_bytes=PROCESS_BYTES)
    running.start()
    pids = wait_for_pids(running, 2)
    running.close()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"parser processes {pids} still run after close"
        await asyncio.sleep(0.05)
