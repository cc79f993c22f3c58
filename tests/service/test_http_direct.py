"""Hot requests answered straight from the connection (`fpgaas.service.http_direct`): which
requests take that path, that their answers are the ASGI path's byte for byte, and that the
connection behaves as uvicorn's does (pipelining, keep-alive and close, a client leaving
mid-body). Each test runs the production server (`uvicorn_config` + `Server`) in a thread.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaas.service.api.front import FrontDoor
from fpgaas.service.settings import Settings
from tests.service.test_hardening import client_disconnects_in as client_disconnects
from tests.service.test_hardening import server_errors_in as server_errors
from tests.service.test_server import N_INPUTS, N_OUTPUTS, LiveServer, free_port, rows

V2_INFER = "/v2/models/tiny/infer"
MAX_BODY = 8192  # bytes: small enough that a 413 is reachable within the direct path's 64 KiB


def settings(repo: Path, **extra: Any) -> Settings:
    return Settings(
        model_repository=repo,
        port=free_port(),
        max_body_bytes=MAX_BODY,
        max_queue_delay_ms=60_000,  # the server shares the test's GIL: no shedding here
        log_level="warning",
        **extra,
    )


@pytest.fixture
def direct(one_model_repo: Path) -> Iterator[LiveServer]:
    server = LiveServer(settings(one_model_repo))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def asgi_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that reached the front door through the ASGI app."""
    seen: list[str] = []
    original = FrontDoor.__call__

    async def recording(self: FrontDoor, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(FrontDoor, "__call__", recording)
    return seen


def request(
    method: str,
    target: str,
    body: bytes = b"",
    content_type: str = "application/json",
    *,
    extra: tuple[str, ...] = (),
    length: bool = True,
) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: x", f"Content-Type: {content_type}", *extra]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_predict(x: np.ndarray) -> bytes:
    return request("POST", "/predict", json.dumps({"inputs": x.tolist()}).encode())


def v2_infer(x: np.ndarray) -> bytes:
    tensor = {"name": "input_1", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return request("POST", V2_INFER, json.dumps({"inputs": [tensor]}).encode())


def binary_predict(x: np.ndarray) -> bytes:
    return request("POST", "/predict?model=tiny", x.astype("<f4").tobytes(), "application/octet-stream")


Response = tuple[int, list[tuple[bytes, bytes]], bytes]


def exchange(server: LiveServer, data: bytes, responses: int = 1) -> tuple[list[Response], bool]:
    """Send `data` on a new connection and read `responses` answers (each with a Content-Length,
    as every answer of this server has; a 100 Continue is skipped); also whether the server then
    closed the connection (waiting at most 1 s for it)."""
    host, port = server.url.removeprefix("http://").split(":")
    answers: list[Response] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        buffer = b""

        def take(n: int) -> bytes:
            nonlocal buffer
            while len(buffer) < n:
                chunk = sock.recv(65536)
                assert chunk, f"the connection closed after {len(answers)} answer(s)"
                buffer += chunk
            taken, buffer = buffer[:n], buffer[n:]
            return taken

        while len(answers) < responses:
            while b"\r\n\r\n" not in buffer:
                take(len(buffer) + 1)
            head_bytes, buffer = buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head_bytes.split(b"\r\n")
            status = int(status_line.split()[1])
            headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in lines)]
            if status == 100:
                continue
            length = int(dict(headers)[b"content-length"])
            answers.append((status, headers, take(length)))
        sock.settimeout(1.0)
        try:
            closed = buffer == b"" and sock.recv(65536) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
    return answers, closed


def outputs(response: Response) -> np.ndarray:
    status, headers, body = response
    assert status == 200, body
    if (b"content-type", b"application/octet-stream") in headers:
        return np.frombuffer(body, dtype="<f4").reshape(-1, N_OUTPUTS)
    answer = json.loads(body)
    if "outputs" in answer and isinstance(answer["outputs"][0], dict):  # v2
        tensor = answer["outputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    return np.asarray(answer["outputs"], dtype=np.float32)


def test_small_hot_requests_skip_the_asgi_app_and_answer_the_kernels_rows(
    direct: LiveServer, asgi_paths: list[str], reference: Any
) -> None:
    x = rows(5, seed=1)
    for data in (json_predict(x), v2_infer(x), binary_predict(x)):
        (answer,), _ = exchange(direct, data)
        np.testing.assert_array_equal(outputs(answer), reference(x))
    assert asgi_paths == []


def chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def test_other_requests_take_the_asgi_path_and_are_answered_the_same(
    direct: LiveServer, asgi_paths: list[str], reference: Any
) -> None:
    x = rows(3, seed=2)
    body = json.dumps({"inputs": x.tolist()}).encode()
    big = rows(65536 // (4 * N_INPUTS) + 1, seed=3)  # over 64 KiB of float32 rows
    cases = [
        (request("POST", "/predict", chunked(body), extra=("Transfer-Encoding: chunked",), length=False), x),
        (request("POST", "/predict", body, extra=("Expect: 100-continue",)), x),
    ]
    for data, x_sent in cases:
        answers, _ = exchange(direct, data)
        np.testing.assert_array_equal(outputs(answers[-1]), reference(x_sent))
    (too_large,), _ = exchange(direct, binary_predict(big))
    assert too_large[0] == 413  # over max_body_bytes: refused before the body is read
    (not_post,), _ = exchange(direct, request("GET", "/predict"))
    assert not_post[0] == 405 and (b"allow", b"POST") in not_post[1]
    assert asgi_paths == ["/predict"] * 4


def comparable(response: Response) -> Response:
    status, headers, body = response
    return status, [(k, v) for k, v in headers if k != b"date"], body


def test_direct_answers_are_the_asgi_answers_byte_for_byte(
    direct: LiveServer, one_model_repo: Path, asgi_paths: list[str]
) -> None:
    x = rows(2, seed=4)
    gzipped = gzip.compress(json.dumps({"inputs": x.tolist()}).encode())
    cases = [
        json_predict(x),
        v2_infer(x),
        binary_predict(x),
        request("POST", "/predict", gzipped, extra=("Content-Encoding: gzip",)),
        request("POST", "/predict", b'{"inputs": [[1, 2'),  # 400: not JSON
        request("POST", "/predict", b'{"inputs": [[1, 2, 3]]}'),  # 400: 3 of 6 inputs
        request("POST", "/predict?model=nope", x.astype("<f4").tobytes(), "application/octet-stream"),  # 404
        request("POST", V2_INFER, b"{}", "text/plain"),  # 415
        request("POST", "/predict", b"[" * (MAX_BODY + 1)),  # 413
        request("POST", "/predict", b"{}", extra=("Content-Encoding: br",)),  # 415
        request("POST", "/v2/models/nope/infer", b'{"inputs": []}'),  # 404, v2's error shape
    ]
    ours = [exchange(direct, data)[0][0] for data in cases]
    assert asgi_paths == []
    # An access log turns the direct path off: the same requests then go through the ASGI app.
    via_asgi = LiveServer(settings(one_model_repo, access_log=True))
    via_asgi.start()
    try:
        theirs = [exchange(via_asgi, data)[0][0] for data in cases]
    finally:
        via_asgi.stop()
    assert len(asgi_paths) == len(cases)
    assert [r[0] for r in ours] == [200, 200, 200, 200, 400, 400, 404, 415, 413, 415, 404]
    for mine, asgi in zip(ours, theirs, strict=True):
        assert comparable(mine) == comparable(asgi)


def test_pipelined_requests_are_answered_in_order(direct: LiveServer, reference: Any) -> None:
    xs = [rows(n, seed=10 + n) for n in (1, 4, 2)]
    data = json_predict(xs[0]) + binary_predict(xs[1]) + v2_infer(xs[2])
    answers, closed = exchange(direct, data, responses=3)
    assert len(answers) == 3 and not closed
    for answer, x in zip(answers, xs, strict=True):
        np.testing.assert_array_equal(outputs(answer), reference(x))


@pytest.mark.parametrize("how", ["Connection: close", "HTTP/1.0"], ids=["connection-close", "http-1.0"])
def test_a_request_without_keep_alive_is_answered_then_closed(
    direct: LiveServer, how: str, asgi_paths: list[str], reference: Any
) -> None:
    x = rows(1, seed=5)
    data = json_predict(x)
    if how == "HTTP/1.0":
        data = data.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    else:
        data = data.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n", 1)
    (answer,), closed = exchange(direct, data)
    assert (b"connection", b"close") in answer[1]
    np.testing.assert_array_equal(outputs(answer), reference(x))
    assert closed
    assert asgi_paths == []


def metrics_text(server: LiveServer) -> str:
    (answer,), _ = exchange(server, request("GET", "/metrics"))
    return answer[2].decode()


def test_a_client_leaving_mid_body_is_counted_as_a_disconnect_not_an_error(
    direct: LiveServer, reference: Any
) -> None:
    gone, errors = client_disconnects(metrics_text(direct)), server_errors(metrics_text(direct))
    host, port = direct.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:  # 1,000 bytes declared, 10 sent
        sock.sendall(request("POST", "/predict", b"[" * 1000)[:-990])
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while client_disconnects(metrics_text(direct)) < gone + 1:
        assert time.monotonic() < deadline, "the server did not count the client leaving"
        time.sleep(0.05)
    assert server_errors(metrics_text(direct)) == errors
    x = rows(2, seed=6)
    (answer,), _ = exchange(direct, json_predict(x))
    np.testing.assert_array_equal(outputs(answer), reference(x))
