"""What the management API refuses, and that a refusal leaves nothing behind (live server, real
PostgreSQL, no worker needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fpgaas.service.settings import Settings
from tests.fixtures.management import AUTH, Stack, upload

LIMIT = 64 * 1024


def test_management_without_a_token_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="FPGAAS_ADMIN_TOKEN"):
        Settings(model_repository=tmp_path, management=True, host="0.0.0.0")
    Settings(model_repository=tmp_path, management=True, host="0.0.0.0", admin_token="t")
    Settings(model_repository=tmp_path, management=True, host="127.0.0.1")


def test_refusals(stack: Stack, small_h5: Path, tmp_path: Path) -> None:
    with stack.server(max_upload_bytes=LIMIT) as server:
        url = server.url
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
            assert upload(url, small_h5, "m", headers=headers).status_code == status
            assert httpx.get(f"{url}/builds", headers=headers).status_code == status
            assert httpx.delete(f"{url}/builds/1", headers=headers).status_code == status
            load = httpx.post(f"{url}/v2/repository/models/m/load", headers=headers)
            assert load.status_code == status
            assert load.json()["error"].startswith("Authorization: ")  # the v2 error shape
        assert httpx.post(f"{url}/v2/repository/index").status_code == 200  # reading needs no token

        # Over the limit without a Content-Length: refused while it streams.
        def chunks() -> Iterator[bytes]:
            boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.h5"\r\n\r\n'
            yield boundary + b"\x89HDF\r\n\x1a\n"
            for _ in range(64):
                yield b"\0" * 16384

        big = httpx.post(
            f"{url}/models/m/versions",
            content=chunks(),
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
        declared = httpx.post(
            f"{url}/models/m/versions",
            content=b"x" * (LIMIT + 1),
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert declared.status_code == 413

        truncated = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.h5"\r\n\r\n'
            + small_h5.read_bytes()[:500]
        )
        answer = httpx.post(
            f"{url}/models/m/versions",
            content=truncated,
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert answer.status_code == 400 and "truncated" in answer.json()["error"]["message"]

        text = tmp_path / "model.txt"
        text.write_text("not a model")
        assert upload(url, text, "m").json()["error"]["field"] == "file"
        fake = tmp_path / "fake.h5"
        fake.write_text("not HDF5 at all")
        assert "not an HDF5" in upload(url, fake, "m").json()["error"]["message"]
        assert upload(url, small_h5, "m", sha256="0" * 64).json()["error"]["field"] == "sha256"
        assert upload(url, small_h5, "m", colour="blue").json()["error"]["field"] == "colour"
        assert upload(url, small_h5, "m", strategy="Fastest").json()["error"]["field"] == "strategy"
        assert (
            upload(url, small_h5, "m", precision='{"dense_1": "float"}').json()["error"]["field"]
            == "precision.dense_1"
        )
        assert upload(url, small_h5, "bad/name").status_code == 404  # not a route
        assert upload(url, small_h5, "..").status_code in (400, 404)
        assert httpx.get(f"{url}/builds/999", headers=AUTH).status_code == 404

        assert stack.uploads() == []
        assert httpx.get(f"{url}/builds", headers=AUTH).json()["builds"] == []


def test_inference_routes_take_their_own_optional_token(stack: Stack) -> None:
    with stack.server(inference_token="infer-token") as server:
        body = {"model": "m", "inputs": [[0.0]]}
        for path in ("/predict", "/v2/models/m/infer"):
            assert httpx.post(f"{server.url}{path}", json=body).status_code == 401
            assert (
                httpx.post(f"{server.url}{path}", json=body, headers=AUTH).status_code == 403
            )  # not the admin's
            allowed = httpx.post(
                f"{server.url}{path}", json=body, headers={"Authorization": "Bearer infer-token"}
            )
            assert allowed.status_code in (404, 400, 503)  # past the token: no such model here
        assert (
            httpx.get(f"{server.url}/builds", headers={"Authorization": "Bearer infer-token"}).status_code
            == 403
        )


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_an_upload_streams_to_disk_and_is_never_held_in_memory(stack: Stack, small_h5: Path) -> None:
    size = 96 * 1024 * 1024
    model = small_h5.read_bytes()  # a real model, padded: HDF5 ignores bytes past its end

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.h5"\r\n\r\n' + model
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            yield chunk
        yield b"\r\n--b--\r\n"

    with stack.server(max_upload_bytes=2 * size) as server:
        before = _rss_bytes(server.pid)
        answer = httpx.post(
            f"{server.url}/models/big/versions",
            content=body(),
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
            timeout=120,
        )
        grown = _rss_bytes(server.pid) - before
        assert answer.status_code == 202, answer.text  # queued (no worker here)
        assert answer.json()["upload"]["bytes"] == size + len(model)
        assert grown < size // 4, f"the server grew by {grown} bytes for a {size}-byte upload"
        [stored] = stack.uploads()
        assert stored.stat().st_size == size + len(model)
