"""Repository control across two server replicas sharing one store and one database: they converge
on what the store holds and operators want (no build needed: artifacts are placed in the store as a
worker's publish would)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from fpgaas.kernels.artifact import SIGNATURE_NAME
from tests.fixtures.builds import BuiltModel
from tests.fixtures.management import AUTH, Stack
from tests.fixtures.signing import reseal


def _index(url: str) -> dict[tuple[str, str], tuple[str, str]]:
    rows: list[dict[str, Any]] = httpx.post(f"{url}/v2/repository/index", timeout=10).json()
    return {(r["name"], r["version"]): (r["state"], r["reason"]) for r in rows}


def _converge(urls: list[str], expected: dict[tuple[str, str], str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = [{k: v[0] for k, v in _index(url).items()} for url in urls]
        if all(s == expected for s in seen):
            return
        assert time.monotonic() < deadline, f"expected {expected}, servers see {seen}"
        time.sleep(0.2)


def test_replicas_converge_on_loads_unloads_and_retirement(stack: Stack, small: BuiltModel) -> None:
    store = stack.repository
    with stack.server() as a, stack.server() as b:
        urls = [a.url, b.url]
        (store / "m").mkdir()
        reseal(small.artifact, store / ".fpgaas" / "staging" / "v1", name="m", version="1").rename(
            store / "m" / "1"
        )
        # A sealed artifact in a staging directory is never served.
        reseal(small.artifact, store / ".fpgaas" / "staging" / "9" / "artifact", name="m", version="9")
        _converge(urls, {("m", "1"): "READY"})
        # Forged beside the store, then moved in whole (as a worker publishes).
        forged = reseal(small.artifact, store / ".fpgaas" / "staging" / "forged", name="m", version="2")
        (forged / SIGNATURE_NAME).unlink()
        forged.rename(store / "m" / "2")
        deadline = time.monotonic() + 30
        while not all("sign" in _index(url).get(("m", "2"), ("", ""))[1] for url in urls):
            assert time.monotonic() < deadline, [_index(url) for url in urls]  # refused, saying why
            time.sleep(0.2)
        _converge(urls, {("m", "1"): "READY", ("m", "2"): "UNAVAILABLE"})
        assert (
            httpx.post(f"{b.url}/predict", json={"model": "m", "inputs": [[0.0] * 27]}).json()["version"]
            == "1"
        )

        unloaded = httpx.post(
            f"{a.url}/v2/repository/models/m/unload", params={"version": "1"}, headers=AUTH, timeout=60
        )
        assert unloaded.status_code == 200
        _converge(urls, {("m", "1"): "UNAVAILABLE", ("m", "2"): "UNAVAILABLE"})
        assert httpx.post(f"{b.url}/predict", json={"model": "m", "inputs": [[0.0] * 27]}).status_code == 404

        loaded = httpx.post(
            f"{b.url}/v2/repository/models/m/load", params={"version": "1"}, headers=AUTH, timeout=60
        )
        assert loaded.json()["versions"] == [{"version": "1", "state": "READY", "reason": ""}]
        _converge(urls, {("m", "1"): "READY", ("m", "2"): "UNAVAILABLE"})

        retired = httpx.delete(
            f"{a.url}/models/m/versions/1", params={"purge": "true"}, headers=AUTH, timeout=60
        )
        assert retired.json() == {"model": "m", "version": "1", "retired": True, "purged": True}
        assert not (store / "m" / "1").exists()
        _converge(urls, {("m", "2"): "UNAVAILABLE"})
        missing = httpx.post(f"{a.url}/v2/repository/models/m/load", params={"version": "1"}, headers=AUTH)
        assert missing.status_code == 404


def test_an_unloaded_version_stays_unloaded_across_a_restart(stack: Stack, small: BuiltModel) -> None:
    (stack.repository / "m").mkdir()
    for version in ("1", "2"):
        reseal(small.artifact, stack.repository / "m" / version, name="m", version=version)
    with stack.server() as first:
        unloaded = httpx.post(
            f"{first.url}/v2/repository/models/m/unload", params={"version": "2"}, headers=AUTH
        )
        assert unloaded.status_code == 200
    with stack.server() as second:  # from its first request on, version 2 is not served
        answer = httpx.post(f"{second.url}/predict", json={"model": "m", "inputs": [[0.0] * 27]})
        assert answer.json()["version"] == "1"
        assert _index(second.url)[("m", "2")] == ("UNAVAILABLE", "unloaded by an operator")
