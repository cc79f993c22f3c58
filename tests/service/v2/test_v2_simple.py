"""The one-pass v2 path (`fpgaas.service.api.v2.simple`) is the general path, only faster: for a
request in the protocol's common form it gives the general path's rows and, through the server,
byte for byte its answer; every other request, each one the general path refuses included, is
left to the general path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from fpgaas.kernels.errors import BadInput
from fpgaas.service.api.v2 import codec, tensors
from fpgaas.service.api.v2.simple import simple_rows
from fpgaas.service.app import create_app
from fpgaas.service.dataplane import ModelHandle, check_rows
from fpgaas.service.settings import Settings

MODEL = "tiny"


@pytest_asyncio.fixture
async def served(v2_repo: Path) -> AsyncIterator[tuple[ModelHandle, httpx.AsyncClient]]:
    """(tiny's handle, a client of the in-process app serving it)."""
    app = create_app(Settings(model_repository=v2_repo))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fpgaas.test") as client:
            yield app.state.dataplane.resolve(MODEL), client


def general_rows(body: bytes, model: ModelHandle) -> np.ndarray:
    """What the general path hands the batcher (BadInput where it answers 400)."""
    decoded = codec.decode(body, None, model.name, {t.name: t.shape for t in model.inputs})
    tensors.plan_outputs(model, decoded.request)
    return check_rows(tensors.rows_from_inputs(model, decoded), model.n_inputs)


def common(model: ModelHandle, n: int = 1, **extra: Any) -> dict[str, Any]:
    tensor = model.inputs[0]
    data = np.random.default_rng(n).normal(0.0, 4.0, size=n * tensor.width).round(3).tolist()
    spec = {"name": tensor.name, "shape": [n, *tensor.shape], "datatype": "FP32", "data": data}
    return {"inputs": [spec], **extra}


def with_input(model: ModelHandle, **changes: Any) -> dict[str, Any]:
    request = common(model, 2)
    request["inputs"][0].update(changes)
    return request


def encode(request: Any) -> bytes:
    return request if isinstance(request, bytes) else json.dumps(request).encode()


@pytest.mark.asyncio
async def test_common_requests_get_the_general_paths_rows(
    served: tuple[ModelHandle, httpx.AsyncClient],
) -> None:
    model, _ = served
    width = model.inputs[0].width
    nested = common(model, 3)
    nested["inputs"][0]["data"] = np.asarray(nested["inputs"][0]["data"]).reshape(3, width).tolist()
    integers = common(model, 2)
    integers["inputs"][0]["data"] = list(range(-width, width))
    requests = [
        common(model, 1),
        common(model, 64),
        common(model, 2, id="run-7"),
        common(model, 2, id=None, parameters={}, outputs=None),
        with_input(model, parameters={}),
        nested,
        integers,
    ]
    for request in requests:
        body = encode(request)
        simple = simple_rows(body, model)
        assert simple is not None, request
        want = general_rows(body, model)
        assert simple.rows.dtype == np.float32 and simple.rows.flags.c_contiguous
        assert np.array_equal(simple.rows.view(np.uint32), want.view(np.uint32))
        assert simple.id == request.get("id")


@pytest.mark.asyncio
async def test_every_other_request_is_left_to_the_general_path(
    served: tuple[ModelHandle, httpx.AsyncClient],
) -> None:
    model, _ = served
    tensor = model.inputs[0]
    width = tensor.width
    two_inputs = common(model, 2)
    two_inputs["inputs"].append(dict(two_inputs["inputs"][0], name="other"))
    refused = {  # the general path answers these with a 400 naming the problem
        "boolean data": with_input(model, data=[True] + [0.0] * (2 * width - 1)),
        "too few values": with_input(model, data=[0.0] * (2 * width - 1)),
        "ragged": with_input(model, data=[[0.0] * width, [0.0] * (width - 1)]),
        "strings": with_input(model, data=["1"] * (2 * width)),
        "nulls": with_input(model, data=[None] * (2 * width)),
        "beyond float32": with_input(model, data=[1e39] + [0.0] * (2 * width - 1)),
        "integers beyond int64": with_input(model, data=[2**64] + [0] * (2 * width - 1)),
        "no samples": with_input(model, shape=[0, *tensor.shape], data=[]),
        "negative samples": with_input(model, shape=[-2, *tensor.shape]),
        "wrong width": with_input(model, shape=[2, width + 1]),
        "boolean in shape": with_input(model, shape=[2, *(True for _ in tensor.shape)]),
        "float in shape": with_input(model, shape=[2.0, *tensor.shape]),
        "float sample dimension": with_input(model, shape=[2, *(float(d) for d in tensor.shape)]),
        "string sample dimension": with_input(model, shape=[2, *(str(d) for d in tensor.shape)]),
        "shape too short": with_input(model, shape=[2]),
        "unknown input": with_input(model, name="nope"),
        "name not a string": with_input(model, name=7),
        "unknown datatype": with_input(model, datatype="FP33"),
        "no data": {"inputs": [{k: v for k, v in common(model)["inputs"][0].items() if k != "data"}]},
        "id not a string": common(model, 1, id=7),
        "parameters not an object": common(model, 1, parameters=None),
        "shared memory": common(model, 1, parameters={"shared_memory_region": "r"}),
        "no inputs": {"inputs": []},
        "not an object": [common(model)],
        "NaN token": encode(common(model)).replace(b'"data": [', b'"data": [NaN, ', 1),
        "data and binary data": with_input(model, parameters={"binary_data_size": 0}),
        "malformed JSON": encode(common(model))[:-1],
        "too deep": b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
        + b"[" * 2000
        + b"]" * 2000
        + b"}]}",
    }
    other_forms = {  # valid, but not the common form: the general path serves them
        "FP64 data": with_input(model, datatype="FP64"),
        "outputs named": common(model, 2, outputs=[{"name": model.outputs[0].name}]),
        "binary outputs": common(model, 2, parameters={"binary_data_output": True}),
        "an unknown field": common(model, 2, trace="x"),
        "an unknown input field": with_input(model, note="x"),
        "two inputs": two_inputs,
        "boolean elsewhere": common(model, 2, parameters={"binary_data_output": False}),
    }
    for why, request in refused.items():
        body = encode(request)
        assert simple_rows(body, model) is None, why
        with pytest.raises(BadInput):
            general_rows(body, model)
    for why, request in other_forms.items():
        assert simple_rows(encode(request), model) is None, why


@pytest.mark.asyncio
async def test_a_run_of_19_digits_anywhere_leaves_the_body_to_the_general_path(
    served: tuple[ModelHandle, httpx.AsyncClient],
) -> None:
    # 19 digits in a row may be an integer beyond 64 bits, which orjson and pydantic read
    # differently; 18 cannot. Where the run is (an integer value, a fraction, inside the id
    # string between non-ASCII letters) does not matter: the check reads bytes, not JSON.
    model, _ = served
    body = encode(common(model, 2))
    first = body.index(b"[", body.index(b'"data"')) + 1
    first_end = body.index(b",", first)
    last_end = body.index(b"]", first)
    last = body.rindex(b", ", 0, last_end) + 2
    for digits in (18, 19, 25):
        run = b"1" * digits
        variants = {
            "an integer value": body[:first] + run + body[first_end:],
            "a fraction": body[:last] + b"0." + run + body[last_end:],
            "the id": json.dumps(common(model, 2, id="é" + "7" * digits + "é"), ensure_ascii=False).encode(),
        }
        for where, variant in variants.items():
            assert (simple_rows(variant, model) is None) is (digits >= 19), (digits, where)


@pytest.mark.asyncio
async def test_the_one_pass_answer_is_byte_for_byte_the_general_paths(
    served: tuple[ModelHandle, httpx.AsyncClient],
) -> None:
    model, client = served
    for request in (common(model, 1), common(model, 5, id="evt-42")):
        body = encode(request)
        # An ignored unknown field: the same request, but the general path answers it.
        general = encode({**request, "trace": "ignored"})
        assert simple_rows(body, model) is not None and simple_rows(general, model) is None
        fast = await client.post(f"/v2/models/{MODEL}/infer", content=body)
        slow = await client.post(f"/v2/models/{MODEL}/infer", content=general)
        assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
        assert fast.content == slow.content
        assert fast.headers["content-type"] == slow.headers["content-type"]
        answer = fast.json()
        assert answer["outputs"][0]["shape"] == [request["inputs"][0]["shape"][0], *model.outputs[0].shape]
        assert answer.get("id") == request.get("id")
