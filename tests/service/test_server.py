"""The server process: the production uvicorn configuration (`uvicorn_config`), a live server
built from it driven by the project's own client SDK, the access log, and stopping the server,
which answers the requests it had accepted (drain).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fpgaas.client import Client, ModelNotFoundError
from fpgaas.service.app import create_app
from fpgaas.service.server import Server, uvicorn_config
from fpgaas.service.settings import Settings
from tests.fixtures.servers import serving_process

N_INPUTS = 6  # the tiny model of conftest.py: 6 inputs -> 2 outputs
N_OUTPUTS = 2


def rows(n: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows for the tiny model."""
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The production server (`uvicorn_config` + `Server`) in a thread; `stop` asks it to exit
    as SIGTERM would, and waits."""

    def __init__(self, settings: Settings) -> None:
        self.server = Server(uvicorn_config(settings, create_app(settings)))
        self.url = f"http://{settings.host}:{settings.port}"
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def live(one_model_repo: Path) -> Iterator[LiveServer]:
    # This server shares the test's GIL with its client threads, so its device calls look slow
    # and the default admission budget would shed load; these tests are about rows, not shedding.
    settings = Settings(
        model_repository=one_model_repo,
        port=free_port(),
        max_batch=256,
        max_queue_delay_ms=60_000,
        log_level="warning",
    )
    server = LiveServer(settings)
    server.start()
    yield server
    if server.thread.is_alive():
        server.stop()


def test_the_server_runs_httptools_on_uvloop_with_the_settings_timeouts(one_model_repo: Path) -> None:
    settings = Settings(
        model_repository=one_model_repo,
        read_timeout_s=2.5,
        keepalive_timeout_s=0.75,
        access_log=True,
        device_timeout_s=30,
        log_level="debug",
    )
    config = uvicorn_config(settings, create_app(settings))
    assert isinstance(config.http, type) and issubclass(config.http, HttpToolsProtocol)
    assert config.http.read_timeout_s == 2.5  # type: ignore[attr-defined]
    assert config.loop == "uvloop"
    assert config.lifespan == "on"
    assert config.timeout_keep_alive == 0.75
    assert config.access_log is True
    assert config.timeout_graceful_shutdown is not None and config.timeout_graceful_shutdown > 30
    assert uvicorn_config(Settings(model_repository=one_model_repo), create_app(settings)).access_log is False


def test_the_client_sdk_predicts_through_a_live_server(live: LiveServer, reference) -> None:
    with Client(live.url, retries=0) as client:
        assert [m.name for m in client.models()] == ["tiny"]
        info = client.model("tiny")
        assert (info.n_inputs, info.n_outputs) == (N_INPUTS, N_OUTPUTS)
        small, large = rows(3, 1), rows(5000, 2)
        np.testing.assert_array_equal(client.predict(small, binary=False), reference(small))
        np.testing.assert_array_equal(client.predict(large, binary=True), reference(large))
        with pytest.raises(ModelNotFoundError):
            client.predict(small, model="nope")


def test_concurrent_clients_each_get_their_rows(live: LiveServer, reference) -> None:
    inputs = [rows(1 + (i * 37) % 300, i) for i in range(64)]
    with Client(live.url, retries=0) as client, ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(lambda x: client.predict(x, model="tiny"), inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, reference(x))
    metrics = httpx.get(f"{live.url}/metrics").text
    assert "fpgaas_batch_size_bucket" in metrics


def test_stopping_the_server_answers_accepted_requests(one_model_repo: Path, reference) -> None:
    # A 1 s batching delay keeps these requests queued while the server is told to stop.
    settings = Settings(
        model_repository=one_model_repo, port=free_port(), max_delay_us=1_000_000, log_level="warning"
    )
    server = LiveServer(settings)
    server.start()
    inputs = [rows(4, i) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(httpx.post, f"{server.url}/predict", json={"inputs": x.tolist()}, timeout=30)
            for x in inputs
        ]
        deadline = time.monotonic() + 10
        while (
            'fpgaas_queue_rows{device="emulated-0",model="tiny"} 12.0'
            not in httpx.get(f"{server.url}/metrics").text
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.stop()
        for x, future in zip(inputs, futures, strict=True):
            answer = future.result()
            assert answer.status_code == 200
            np.testing.assert_array_equal(
                np.asarray(answer.json()["outputs"], dtype=np.float32), reference(x)
            )


def served_requests_then_log(repo: Path, log_file: Path, **settings: object) -> str:
    """Start a server logging at info level, send two requests, stop it, and return its log."""
    with serving_process(model_repository=repo, log_file=log_file, log_level="info", **settings) as server:
        assert httpx.post(f"{server.url}/predict", json={"inputs": rows(1).tolist()}).status_code == 200
        assert httpx.get(f"{server.url}/models").status_code == 200
    return server.log()


def test_the_access_log_is_off_by_default(one_model_repo: Path, tmp_path: Path) -> None:
    log = served_requests_then_log(one_model_repo, tmp_path / "server.log")
    assert "Application startup complete" in log  # the log was captured at info level
    assert "POST /predict" not in log
    assert "GET /models" not in log


def test_the_access_log_when_on_has_one_line_per_request(one_model_repo: Path, tmp_path: Path) -> None:
    log = served_requests_then_log(one_model_repo, tmp_path / "server.log", access_log=True)
    assert sum('"POST /predict HTTP/1.1" 200' in line for line in log.splitlines()) == 1
    assert sum('"GET /models HTTP/1.1" 200' in line for line in log.splitlines()) == 1
