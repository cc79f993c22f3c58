"""Hostile and clumsy clients against a live server (`serve()` in its own process, as deployed).

Whatever a request holds (nesting 100,000 deep, a 5,000-digit number, a shape of 2**62 or of 33
dimensions, a compressed body that inflates past the limit, a corrupt one), its answer is a 4xx
that names the problem, never a 500, and the server answers correctly right after. Compressed
bodies (gzip, deflate) give the same numbers as plain ones. Names of models that do not exist
never become metric labels. A client that goes away mid-body is not a server error. A client
that stalls in its request head or body is disconnected after `read_timeout_s`, while an idle
keep-alive connection is not. One large JSON body does not hold up small requests.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.raw_http import read_response
from tests.fixtures.servers import ServerProcess, serving_process

N_INPUTS = 6  # the tiny model of conftest.py: 6 inputs -> 2 outputs
N_OUTPUTS = 2
READ_TIMEOUT_S = 1.0
BOUND_S = 10.0  # generous bound on anything that should take about READ_TIMEOUT_S
JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}
V2_INFER = "/v2/models/tiny/infer"

Reference = Callable[[np.ndarray], np.ndarray]


def rows(n: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows for the tiny model."""
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


@pytest.fixture(scope="module")
def server(one_model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_file = tmp_path_factory.mktemp("hardening") / "server.log"
    with serving_process(
        model_repository=one_model_repo,
        log_file=log_file,
        log_level="info",
        read_timeout_s=READ_TIMEOUT_S,
        # Longer than any pause of the module's shared client: no keep-alive close races its reuse.
        keepalive_timeout_s=120,
        max_queue_rows=200_000,  # the large-body test queues 100,000 rows at once
        max_queue_delay_ms=60_000,  # these tests are not about shedding load
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def v2_input(http: httpx.Client) -> str:
    """The name of the tiny model's input tensor in the Open Inference Protocol."""
    return str(http.get("/v2/models/tiny").json()["inputs"][0]["name"])


def json_outputs(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"], dtype=np.float32)


def binary_outputs(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype="<f4").reshape(-1, N_OUTPUTS)


def v2_outputs(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def v2_request(name: str, x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    """An fpgaas error answer: status, JSON `{"error": {"code", "message", "field"}}`; `field`
    is checked when given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if field is not None:
        assert error["field"] == field, error


def assert_v2_error(response: httpx.Response, status: int) -> None:
    """An Open Inference Protocol error answer: status and JSON `{"error": "<message>"}`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error, error


def assert_still_serving(http: httpx.Client, reference: Reference) -> None:
    x = rows(3, 99)
    np.testing.assert_array_equal(
        json_outputs(http.post("/predict", json={"inputs": x.tolist()})), reference(x)
    )


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def server_errors(http: httpx.Client) -> float:
    return server_errors_in(http.get("/metrics").text)


def server_errors_in(metrics: str) -> float:
    """Requests answered 500, plus errors counted as `internal`, in a /metrics text."""
    total = 0.0
    for name, labels, value in samples(metrics):
        if name == "fpgaas_request_duration_seconds_count" and labels.get("status") == "500":
            total += value
        if name == "fpgaas_errors_total" and labels.get("code") == "internal":
            total += value
    return total


def client_disconnects(http: httpx.Client) -> float:
    return client_disconnects_in(http.get("/metrics").text)


def client_disconnects_in(metrics: str) -> float:
    return sum(v for n, _, v in samples(metrics) if n == "fpgaas_client_disconnects_total")


# Raw sockets, for what httpx will not send.


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=BOUND_S)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (at most BOUND_S) for the server to close `sock` without an answer."""
    sock.settimeout(BOUND_S)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def raw_predict(x: np.ndarray) -> bytes:
    body = json.dumps({"inputs": x.tolist()}).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


# Bodies that could exhaust the parser


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"inputs": ' + b"[" * 100_000],
    ids=["top-level", "inside-inputs"],
)
def test_json_nested_100000_deep_is_a_400_naming_the_body(
    http: httpx.Client, reference: Reference, body: bytes
) -> None:
    assert_error(http.post("/predict", content=body, headers=JSON), 400, "bad_input", "body")
    assert_still_serving(http, reference)


def test_v2_json_nested_100000_deep_is_a_400(http: httpx.Client, reference: Reference) -> None:
    assert_v2_error(http.post(V2_INFER, content=b"[" * 100_000, headers=JSON), 400)
    assert_v2_error(http.post(V2_INFER, content=b'{"inputs": ' + b"[" * 100_000, headers=JSON), 400)
    assert_still_serving(http, reference)


LONG_INTEGER = "9" * 5000


def test_a_5000_digit_integer_in_inputs_is_a_400(http: httpx.Client, reference: Reference) -> None:
    body = '{"inputs": [[1, 2, 3, 4, 5, ' + LONG_INTEGER + "]]}"
    assert_error(http.post("/predict", content=body.encode(), headers=JSON), 400, "bad_input")
    assert_still_serving(http, reference)


def test_a_5000_digit_integer_in_v2_data_is_a_400(
    http: httpx.Client, v2_input: str, reference: Reference
) -> None:
    body = '{"inputs": [{"name": "%s", "shape": [1, 6], "datatype": "FP32", "data": [1, 2, 3, 4, 5, %s]}]}'
    assert_v2_error(
        http.post(V2_INFER, content=(body % (v2_input, LONG_INTEGER)).encode(), headers=JSON), 400
    )
    assert_still_serving(http, reference)


@pytest.mark.parametrize(
    ("shape", "data"),
    [
        pytest.param([0, 2**62], [], id="zero-rows-of-2**62"),
        pytest.param([2**62, 6], [], id="2**62-rows-no-data"),
        pytest.param([1] * 33 + [6], [0.0] * 6, id="34-dims"),
        pytest.param([2**40, 2**40, 6], [0.0] * 6, id="product-overflows-int64"),
        pytest.param([2**70, 6], [0.0] * 6, id="dim-beyond-int64"),
        pytest.param([-1, 6], [0.0] * 6, id="negative-batch"),
        pytest.param([1, -6], [0.0] * 6, id="negative-width"),
    ],
)
def test_v2_shapes_that_no_tensor_can_have_are_400(
    http: httpx.Client, v2_input: str, shape: list[int], data: list[float]
) -> None:
    request = {"inputs": [{"name": v2_input, "shape": shape, "datatype": "FP32", "data": data}]}
    assert_v2_error(http.post(V2_INFER, json=request), 400)


# Content-Type and Content-Encoding


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)  # HTTP's "deflate" is the zlib format


ENCODERS = {"gzip": gzip.compress, "deflate": deflate}


@pytest.mark.parametrize("encoding", ENCODERS)
def test_compressed_binary_predict_answers_the_kernels_numbers(
    http: httpx.Client, reference: Reference, encoding: str
) -> None:
    x = rows(200, 3)
    body = ENCODERS[encoding](x.astype("<f4").tobytes())
    r = http.post("/predict?model=tiny", content=body, headers={**OCTET, "Content-Encoding": encoding})
    np.testing.assert_array_equal(binary_outputs(r), reference(x))


@pytest.mark.parametrize("encoding", ENCODERS)
def test_compressed_json_predict_answers_the_kernels_numbers(
    http: httpx.Client, reference: Reference, encoding: str
) -> None:
    x = rows(50, 4)
    body = ENCODERS[encoding](json.dumps({"inputs": x.tolist()}).encode())
    r = http.post("/predict", content=body, headers={**JSON, "Content-Encoding": encoding})
    np.testing.assert_array_equal(json_outputs(r), reference(x))


@pytest.mark.parametrize("encoding", ENCODERS)
def test_compressed_v2_infer_answers_the_kernels_numbers(
    http: httpx.Client, v2_input: str, reference: Reference, encoding: str
) -> None:
    x = rows(20, 5)
    body = ENCODERS[encoding](json.dumps(v2_request(v2_input, x)).encode())
    r = http.post(V2_INFER, content=body, headers={**JSON, "Content-Encoding": encoding})
    np.testing.assert_array_equal(v2_outputs(r), reference(x))


def test_an_unknown_content_encoding_is_415_naming_the_header(http: httpx.Client) -> None:
    body = rows(1).astype("<f4").tobytes()
    r = http.post("/predict?model=tiny", content=body, headers={**OCTET, "Content-Encoding": "br"})
    assert_error(r, 415, "unsupported_media_type", "Content-Encoding")
    r = http.post(
        "/predict", content=b'{"inputs": [[0,0,0,0,0,0]]}', headers={**JSON, "Content-Encoding": "br"}
    )
    assert_error(r, 415, "unsupported_media_type", "Content-Encoding")
    assert_v2_error(http.post(V2_INFER, content=b"{}", headers={**JSON, "Content-Encoding": "br"}), 415)


def test_a_gzip_body_inflating_past_the_limit_is_413(http: httpx.Client, reference: Reference) -> None:
    # 24 MiB of zero rows in ~24 KiB; the server's limit is 16 MiB, as sent and once inflated.
    bomb = gzip.compress(bytes(24 * 1024 * 1024), compresslevel=1)
    assert len(bomb) < 1024 * 1024
    r = http.post("/predict?model=tiny", content=bomb, headers={**OCTET, "Content-Encoding": "gzip"})
    assert_error(r, 413, "payload_too_large")
    assert_v2_error(http.post(V2_INFER, content=bomb, headers={**JSON, "Content-Encoding": "gzip"}), 413)
    assert_still_serving(http, reference)


def corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 8]) + data[middle + 8 :]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(corrupt(gzip.compress(rows(100).astype("<f4").tobytes())), id="corrupt"),
        pytest.param(gzip.compress(rows(100).astype("<f4").tobytes())[:-20], id="truncated"),
        pytest.param(b"\x1f\x8b not gzip at all", id="not-gzip"),
    ],
)
def test_a_corrupt_gzip_body_is_a_400(http: httpx.Client, reference: Reference, body: bytes) -> None:
    r = http.post("/predict?model=tiny", content=body, headers={**OCTET, "Content-Encoding": "gzip"})
    assert_error(r, 400, "bad_input")
    assert_still_serving(http, reference)


def test_v2_infer_refuses_text_plain_with_415(http: httpx.Client, v2_input: str) -> None:
    body = json.dumps(v2_request(v2_input, rows(1))).encode()
    assert_v2_error(http.post(V2_INFER, content=body, headers={"Content-Type": "text/plain"}), 415)


def test_booleans_are_not_numbers(http: httpx.Client, v2_input: str) -> None:
    request = v2_request(v2_input, rows(1))
    request["inputs"][0]["data"][2] = True
    assert_v2_error(http.post(V2_INFER, json=request), 400)
    r = http.post("/predict", json={"inputs": [[1.0, 2.0, True, 4.0, 5.0, 6.0]]})
    assert_error(r, 400, "bad_input", "inputs[0][2]")


# Metrics


def test_unknown_model_names_never_become_metric_labels(http: httpx.Client, v2_input: str) -> None:
    before = http.get("/metrics").text
    made_up = [f"made-up-{uuid.uuid4().hex}" for _ in range(300)]
    row = rows(1)
    for i, name in enumerate(made_up):
        if i % 3 == 0:
            r = http.post("/predict", json={"model": name, "inputs": row.tolist()})
        elif i % 3 == 1:
            r = http.post(f"/predict?model={name}", content=row.astype("<f4").tobytes(), headers=OCTET)
        else:
            r = http.post(f"/v2/models/{name}/infer", json=v2_request(v2_input, row))
        assert r.status_code == 404, r.text
    after = http.get("/metrics").text
    assert not [name for name in made_up if name in after]
    assert len(after) - len(before) < 20_000


# Clients that go away, or stall


def test_a_client_leaving_mid_body_is_not_a_server_error(
    server: ServerProcess, http: httpx.Client, reference: Reference
) -> None:
    log_start = len(server.log())
    errors, gone = server_errors(http), client_disconnects(http)
    heads = [
        "POST /predict HTTP/1.1\r\nContent-Type: application/json\r\n",
        "POST /predict?model=tiny HTTP/1.1\r\nContent-Type: application/octet-stream\r\n",
        f"POST {V2_INFER} HTTP/1.1\r\nContent-Type: application/json\r\n",
    ]
    for head in heads:
        with connect(server) as sock:
            sock.sendall(f"{head}Host: x\r\nContent-Length: 100000\r\n\r\n".encode() + b"[" * 100)
    deadline = time.monotonic() + BOUND_S
    while client_disconnects(http) < gone + len(heads):
        assert time.monotonic() < deadline, "the server did not notice the clients leaving"
        time.sleep(0.05)
    assert server_errors(http) == errors
    assert "Traceback" not in server.log()[log_start:]
    assert_still_serving(http, reference)


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        assert closed_by_server(sock)


def test_a_stalled_request_head_is_closed_while_others_are_served(
    server: ServerProcess, http: httpx.Client, reference: Reference
) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        assert_still_serving(http, reference)
        assert closed_by_server(sock)


def test_a_request_head_trickled_a_byte_at_a_time_is_closed(server: ServerProcess) -> None:
    # The deadline is for the whole head, not per byte: a slowloris cannot keep it open.
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"p" * 1000
    with connect(server) as sock:
        sock.settimeout(0.1)
        deadline = time.monotonic() + BOUND_S
        for byte in head:
            assert time.monotonic() < deadline, "a head trickled for 10 s was not cut off"
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    return
            except TimeoutError:
                continue
            except OSError:  # reset: closed
                return
        pytest.fail("the whole trickled head was accepted")


def test_a_stalled_request_body_is_closed_while_others_are_served(
    server: ServerProcess, http: httpx.Client, reference: Reference
) -> None:
    with connect(server) as sock:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head + b'{"inputs": [[1, 2')
        assert_still_serving(http, reference)
        assert closed_by_server(sock)


def test_a_body_trickling_in_steadily_is_not_cut_off(server: ServerProcess, reference: Reference) -> None:
    # Each chunk arrives well within the read timeout, the whole body well after it.
    x = rows(4, 8)
    request = raw_predict(x)
    head_end = request.index(b"\r\n\r\n") + 4
    body = request[head_end:]
    pieces = [body[i : i + len(body) // 5 + 1] for i in range(0, len(body), len(body) // 5 + 1)]
    with connect(server) as sock:
        sock.sendall(request[:head_end])
        for piece in pieces:
            time.sleep(READ_TIMEOUT_S * 0.4)
            sock.sendall(piece)
        status, _, answer = read_response(sock)
    assert status == 200
    np.testing.assert_array_equal(np.asarray(json.loads(answer)["outputs"], dtype=np.float32), reference(x))


def test_an_idle_keep_alive_connection_outlives_the_read_timeout(
    server: ServerProcess, reference: Reference
) -> None:
    with connect(server) as sock:
        for i in range(2):
            x = rows(2, 20 + i)
            sock.sendall(raw_predict(x))
            status, headers, answer = read_response(sock)
            assert status == 200 and headers.get("connection") != "close"
            np.testing.assert_array_equal(
                np.asarray(json.loads(answer)["outputs"], dtype=np.float32), reference(x)
            )
            if i == 0:  # idle: the keep-alive timeout applies, not the read timeout
                time.sleep(READ_TIMEOUT_S * 2)


# Large bodies


def test_a_large_json_body_does_not_hold_up_small_requests(
    server: ServerProcess, reference: Reference
) -> None:
    big = rows(100_000, 30)
    request = raw_predict(big)
    assert 8 * 1024 * 1024 < len(request) < 16 * 1024 * 1024
    finished: list[str] = []
    lock = threading.Lock()
    small = [rows(2, 40 + i) for i in range(4)]

    def small_requests(client: httpx.Client, x: np.ndarray, name: str) -> None:
        for _ in range(5):
            np.testing.assert_array_equal(
                json_outputs(client.post("/predict", json={"inputs": x.tolist()})), reference(x)
            )
        with lock:
            finished.append(name)

    with ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(base_url=server.url, timeout=60)) for _ in small]
        for client, x in zip(clients, small, strict=True):  # connected before the large upload starts
            assert client.post("/predict", json={"inputs": x.tolist()}).status_code == 200
        pool = stack.enter_context(ThreadPoolExecutor(len(small)))
        sock = stack.enter_context(connect(server))
        sock.settimeout(60)
        sock.sendall(request)  # returns once the server has taken all but a socket buffer of it
        futures = [
            pool.submit(small_requests, client, x, f"small-{i}")
            for i, (client, x) in enumerate(zip(clients, small, strict=True))
        ]
        status, _, answer = read_response(sock)
        with lock:
            finished.append("large")
        for future in futures:
            future.result()
    assert status == 200
    np.testing.assert_array_equal(np.asarray(json.loads(answer)["outputs"], dtype=np.float32), reference(big))
    assert finished[-1] == "large", finished
