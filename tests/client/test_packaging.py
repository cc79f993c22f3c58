"""The client installs alone: httpx and numpy, none of the server, builder or kernel code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from fpgaas import client
from fpgaas.client import AsyncClient, Client

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: make the server-side packages unimportable, import the
# client, use it, and report which heavy packages ended up loaded anyway.
PROBE = """
import importlib.abc, json, sys

BLOCKED = {"fpgaas.service", "fpgaas.builder", "fpgaas.kernels", "service", "builder", "kernels",
           "fastapi", "pydantic", "uvicorn", "prometheus_client", "tensorflow", "keras", "qkeras", "hls4ml",
           "pynq"}

def blocked(name):
    parts = name.split(".")
    return parts[0] in BLOCKED or ".".join(parts[:2]) in BLOCKED

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if blocked(name):
            raise ImportError(f"the client must not import {name}")
        return None

sys.meta_path.insert(0, Block())
import httpx, numpy
from fpgaas.client import AsyncClient, Client

def answer(request):
    return httpx.Response(200, json={"model": "m", "version": "1", "device": "d", "outputs": [[1.0]]})

with Client("http://x", transport=httpx.MockTransport(answer)) as c:
    out = c.predict([1.0, 2.0]).tolist()
print(json.dumps({"out": out, "loaded": sorted(m for m in sys.modules if blocked(m))}))
"""


def test_import_client_loads_neither_service_builder_kernels_nor_their_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"out": [[1.0]], "loaded": []}


def test_the_public_api_is_what_all_lists() -> None:
    for name in client.__all__:
        assert getattr(client, name).__module__.startswith("fpgaas.client")
    assert {"Client", "AsyncClient", "Prediction", "ModelInfo", "FpgaasClientError"} <= set(client.__all__)


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"model": "m", "version": "1", "device": "d", "outputs": [[1.0]]})


def test_leaving_the_with_block_closes_the_client() -> None:
    with Client(transport=httpx.MockTransport(answer)) as c:
        assert c.predict([1.0]).tolist() == [[1.0]]
    with pytest.raises(RuntimeError, match="closed"):
        c.predict([1.0])


async def _use_and_leave() -> AsyncClient:
    async with AsyncClient(transport=httpx.MockTransport(answer)) as c:
        np.testing.assert_array_equal(await c.predict([1.0]), [[1.0]])
    return c


def test_leaving_the_async_with_block_closes_the_client() -> None:
    c = asyncio.run(_use_and_leave())
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(c.predict([1.0]))
