"""The HTTP front end, through the real app (lifespan, batchers, emulated device) in-process.

Bad input of every kind gets a 4xx with `{"error": {"code", "message", "field"}}` naming the
field, and the server answers correctly right after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fpgaas.service.api import errors
from fpgaas.service.log_limit import LimitedLog
from fpgaas.service.settings import Settings

N_INPUTS = 6  # the tiny model of conftest.py: 6 inputs -> 2 outputs
N_OUTPUTS = 2


def rows(n: int, seed: int = 0) -> np.ndarray:
    """n random float32 rows for the tiny model."""
    return np.random.default_rng(seed).normal(0.0, 4.0, size=(n, N_INPUTS)).astype(np.float32)


pytestmark = pytest.mark.asyncio

OCTET = {"Content-Type": "application/octet-stream"}


def settings(repo: Path, **overrides: object) -> Settings:
    return Settings(model_repository=repo, max_delay_us=0, **overrides)  # type: ignore[arg-type]


async def one_model_client(app_factory, repo: Path, **overrides: object) -> httpx.AsyncClient:
    _app, client = await app_factory(settings(repo, **overrides))
    return client


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of one sample in Prometheus text exposition, or None when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["field"] == field, error
    assert error["message"]
    return str(error["message"])


async def assert_still_serving(client: httpx.AsyncClient, reference) -> None:
    x = rows(3, 99)
    r = await client.post("/predict", json={"model": "tiny", "inputs": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], dtype=np.float32), reference(x))


async def test_json_predict_answers_the_kernels_numbers(app_factory, one_model_repo, reference) -> None:
    client = await one_model_client(app_factory, one_model_repo)
    x = rows(5)
    r = await client.post("/predict", json={"model": "tiny", "inputs": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["device"]) == ("tiny", "1", "emulated-0")
    outputs = np.asarray(body["outputs"], dtype=np.float32)
    assert outputs.shape == (5, N_OUTPUTS)
    np.testing.assert_array_equal(outputs, reference(x))


async def test_the_model_may_be_omitted_when_only_one_is_loaded(
    app_factory, one_model_repo, reference
) -> None:
    client = await one_model_client(app_factory, one_model_repo)
    x = rows(2)
    r = await client.post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"], dtype=np.float32), reference(x))


async def test_binary_and_json_give_identical_numbers(app_factory, one_model_repo, reference) -> None:
    client = await one_model_client(app_factory, one_model_repo)
    x = rows(300, 7)
    binary = await client.post("/predict?model=tiny", content=x.astype("<f4").tobytes(), headers=OCTET)
    assert binary.status_code == 200, binary.text
    assert binary.headers["content-type"] == "application/octet-stream"
    assert binary.headers["x-model"] == "tiny"
    assert binary.headers["x-model-version"] == "1"
    assert binary.headers["x-device"] == "emulated-0"
    assert binary.headers["x-output-shape"] == f"300,{N_OUTPUTS}"
    from_binary = np.frombuffer(binary.content, dtype="<f4").reshape(300, N_OUTPUTS)

    as_json = await client.post("/predict", json={"model": "tiny", "inputs": x.tolist()})
    from_json = np.asarray(as_json.json()["outputs"], dtype=np.float32)
    np.testing.assert_array_equal(from_binary, from_json)
    np.testing.assert_array_equal(from_binary, reference(x))


BAD_JSON_BODIES = [
    pytest.param(
        {"model": "tiny", "inputs": [[1.0] * (N_INPUTS - 1)]}, "bad_input", "inputs", id="wrong-width"
    ),
    pytest.param({"inputs": [[1.0] * N_INPUTS, [1.0] * 3]}, "bad_input", "inputs[1]", id="ragged"),
    pytest.param({"inputs": [[1.0] * 5 + ["7"]]}, "bad_input", "inputs[0][5]", id="string"),
    pytest.param(
        {"inputs": [[1.0] * N_INPUTS, [1.0, True, 1, 1, 1, 1]]}, "bad_input", "inputs[1][1]", id="bool"
    ),
    pytest.param({"inputs": [[1.0] * 3 + [None] * 3]}, "bad_input", "inputs[0][3]", id="null"),
    pytest.param({"inputs": [[1.0] * N_INPUTS, 4.0]}, "bad_input", "inputs[1]", id="row-not-a-list"),
    pytest.param({"inputs": [[1e39] * N_INPUTS]}, "bad_input", "inputs[0][0]", id="beyond-float32"),
    pytest.param({"inputs": []}, "bad_input", "inputs", id="empty-batch"),
    pytest.param({"inputs": "1,2,3"}, "bad_input", "inputs", id="inputs-not-a-list"),
    pytest.param({"model": "tiny"}, "bad_input", "inputs", id="missing-inputs"),
    pytest.param({"model": 3, "inputs": [[1.0] * N_INPUTS]}, "bad_input", "model", id="model-not-a-string"),
    pytest.param({"input": [[1.0] * N_INPUTS]}, "bad_input", "input", id="unknown-field"),
    pytest.param(
        {"model": "nope", "inputs": [[1.0] * N_INPUTS]}, "model_not_found", "model", id="unknown-model"
    ),
    pytest.param(
        {"model": "tiny", "version": "9", "inputs": [[1.0] * N_INPUTS]},
        "model_not_found",
        "version",
        id="bad-version",
    ),
    pytest.param([[1.0] * N_INPUTS], "bad_input", "body", id="body-not-an-object"),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_JSON_BODIES)
async def test_bad_json_input_is_refused_naming_the_field(
    app_factory, one_model_repo, reference, body: object, code: str, field: str
) -> None:
    client = await one_model_client(app_factory, one_model_repo)
    r = await client.post("/predict", json=body)
    assert_error(r, 404 if code == "model_not_found" else 400, code, field)
    await assert_still_serving(client, reference)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b'{"inputs": [[1, 2, 3, 4, 5, NaN]]}', "inputs", id="NaN"),
        pytest.param(b'{"inputs": [[1, 2, 3, 4, 5, -Infinity]]}', "inputs", id="Infinity"),
        pytest.param(b'{"inputs": [[1, 2, 3, 4, 5, 6]', "body", id="malformed"),
        pytest.param(b"\xff\xfe not utf-8", "body", id="not-utf8"),
        pytest.param(b"", "body", id="empty-body"),
    ],
)
async def test_raw_json_that_is_not_valid_json_numbers_is_refused(
    app_factory, one_model_repo, reference, raw: bytes, field: str
) -> None:
    client = await one_model_client(app_factory, one_model_repo)
    r = await client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_input", field)
    await assert_still_serving(client, reference)


async def test_bad_binary_input_is_refused_naming_the_field(app_factory, one_model_repo, reference) -> None:
    client = await one_model_client(app_factory, one_model_repo)
    partial = rows(2).tobytes()[:-4]
    assert_error(await client.post("/predict", content=partial, headers=OCTET), 400, "bad_input", "body")
    assert_error(await client.post("/predict", content=b"", headers=OCTET), 400, "bad_input", "body")
    nan = rows(3)
    nan[1, 4] = np.nan
    msg = assert_error(
        await client.post("/predict", content=nan.tobytes(), headers=OCTET), 400, "bad_input", "inputs[1][4]"
    )
    assert "nan" in msg
    inf = rows(1)
    inf[0, 0] = -np.inf
    assert_error(
        await client.post("/predict", content=inf.tobytes(), headers=OCTET), 400, "bad_input", "inputs[0][0]"
    )
    r = await client.post("/predict?model=nope", content=rows(1).tobytes(), headers=OCTET)
    assert_error(r, 404, "model_not_found", "model")
    r = await client.post("/predict", content=b"a,b", headers={"Content-Type": "text/csv"})
    assert_error(r, 415, "unsupported_media_type", "Content-Type")
    await assert_still_serving(client, reference)


async def test_bodies_over_max_body_bytes_get_413_whether_declared_or_streamed(
    app_factory, one_model_repo, reference
) -> None:
    client = await one_model_client(app_factory, one_model_repo, max_body_bytes=4096)
    big = rows(200).tobytes()  # 4800 bytes
    declared = await client.post("/predict", content=big, headers=OCTET)
    assert_error(declared, 413, "payload_too_large", "body")

    async def chunks():  # no Content-Length: the limit is enforced on the bytes read
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    streamed = await client.post("/predict", content=chunks(), headers=OCTET)
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "payload_too_large", "body")
    await assert_still_serving(client, reference)


async def test_several_models_need_a_name_and_serve_each_version(
    app_factory, multi_model_repo, reference
) -> None:
    _app, client = await app_factory(settings(multi_model_repo))
    x = rows(2)
    r = await client.post("/predict", json={"inputs": x.tolist()})
    msg = assert_error(r, 400, "bad_input", "model")
    assert "other" in msg and "tiny" in msg
    for model, version, expected in (("tiny", None, "2"), ("tiny", "1", "1"), ("other", None, "1")):
        body = {"model": model, "inputs": x.tolist()} | ({"version": version} if version else {})
        r = await client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        assert (r.json()["model"], r.json()["version"]) == (model, expected)
        np.testing.assert_array_equal(np.asarray(r.json()["outputs"], dtype=np.float32), reference(x))
    r = await client.post("/predict?model=tiny&version=1", content=x.tobytes(), headers=OCTET)
    assert r.headers["x-model-version"] == "1"


async def test_a_tampered_artifact_is_refused_and_the_others_are_served(
    app_factory, multi_model_repo
) -> None:
    _app, client = await app_factory(settings(multi_model_repo))
    listing = (await client.get("/models")).json()
    assert sorted(m["name"] for m in listing["models"]) == ["other", "tiny"]
    [refused] = listing["refused"]
    assert refused["path"].endswith("broken/1")
    assert "sha256 mismatch" in refused["reason"] and "libkernel.so" in refused["reason"]
    r = await client.post("/predict", json={"model": "broken", "inputs": rows(1).tolist()})
    assert_error(r, 404, "model_not_found", "model")
    assert (await client.get("/readyz")).status_code == 200


async def test_models_describe_shapes_types_device_and_engine(
    app_factory, multi_model_repo, tiny_artifact
) -> None:
    _app, client = await app_factory(settings(multi_model_repo))
    tiny = (await client.get("/models/tiny")).json()
    assert tiny["name"] == "tiny"
    assert tiny["version"] == "2"
    assert tiny["versions"] == ["1", "2"]
    manifest = tiny_artifact.manifest
    assert tiny["inputs"] == [
        {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "fixed_point": t.fixed_point}
        for t in manifest.inputs
    ]
    assert sum(np.prod(t["shape"]) for t in tiny["inputs"]) == N_INPUTS
    assert sum(np.prod(t["shape"]) for t in tiny["outputs"]) == N_OUTPUTS
    assert re.search(r"fixed<", tiny["inputs"][0]["fixed_point"])
    assert tiny["device"] == {
        "name": "emulated-0",
        "kind": "emulated",
        "healthy": True,
        "detail": tiny["device"]["detail"],
    }
    assert (tiny["engine"], tiny["engine_note"]) == (manifest.engine, manifest.engine_note)
    assert tiny["engine"] == "fixed-point-engine" and "bit-identical" in tiny["engine_note"]
    assert tiny["xclbin_status"] == manifest.binaries.xclbin_status
    assert tiny["max_batch"] == 1024
    v1 = (await client.get("/models/tiny", params={"version": "1"})).json()
    assert v1["version"] == "1"
    assert_error(await client.get("/models/nope"), 404, "model_not_found", "model")
    assert_error(await client.get("/models/tiny", params={"version": "7"}), 404, "model_not_found", "version")


async def test_probes(app_factory, one_model_repo, tmp_path) -> None:
    _app, client = await app_factory(settings(one_model_repo))
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True

    _app, empty = await app_factory(settings(tmp_path))  # an empty repository: alive, not ready
    assert (await empty.get("/healthz")).status_code == 200
    not_ready = await empty.get("/readyz")
    assert not_ready.status_code == 503
    assert "no model loaded" in not_ready.json()["reason"]
    assert_error(await empty.post("/predict", json={"inputs": [[1.0] * N_INPUTS]}), 503, "not_ready", None)


async def test_unknown_routes_and_methods_answer_in_the_error_shape(app_factory, one_model_repo) -> None:
    _app, client = await app_factory(settings(one_model_repo))
    assert_error(await client.get("/nowhere"), 404, "not_found", None)
    assert_error(await client.get("/predict"), 405, "method_not_allowed", None)


async def test_metrics_after_traffic_show_every_family_with_samples(app_factory, one_model_repo) -> None:
    _app, client = await app_factory(settings(one_model_repo))
    await client.post("/predict", json={"model": "tiny", "inputs": rows(4).tolist()})
    await client.post("/predict?model=tiny", content=rows(6).tobytes(), headers=OCTET)
    await client.post("/predict", json={"model": "tiny", "inputs": [[1.0]]})
    text = (await client.get("/metrics")).text
    route = {"route": "/predict", "model": "tiny"}
    stage = {"device": "emulated-0", "model": "tiny"}
    expected = [
        ("fpgaas_request_duration_seconds_count", {**route, "status": "200"}, 2),
        ("fpgaas_request_duration_seconds_count", {**route, "status": "400"}, 1),
        ("fpgaas_request_duration_seconds_bucket", {**route, "status": "200", "le": "10.0"}, 2),
        ("fpgaas_queue_wait_seconds_count", {"model": "tiny"}, 2),
        ("fpgaas_batch_size_sum", {"model": "tiny"}, 10),
        ("fpgaas_device_stage_seconds_count", {**stage, "stage": "input_transfer"}, 2),
        ("fpgaas_device_stage_seconds_count", {**stage, "stage": "kernel"}, 2),
        ("fpgaas_device_stage_seconds_count", {**stage, "stage": "output_transfer"}, 2),
        ("fpgaas_errors_total", {"model": "tiny", "code": "bad_input"}, 1),
        ("fpgaas_rows_total", {"model": "tiny"}, 10),
        ("fpgaas_queue_rows", {"model": "tiny", "device": "emulated-0"}, 0),
        ("fpgaas_inflight_requests", {}, 1),  # this very scrape
    ]
    for name, labels, value in expected:
        assert sample(text, name, labels) == value, (name, labels)
    assert "# TYPE fpgaas_rejected_requests_total counter" in text


async def queued(client: httpx.AsyncClient, inputs: np.ndarray) -> asyncio.Task[httpx.Response]:
    """Post `inputs` to model tiny and return once its rows sit in the queue (the metric says so)."""
    task = asyncio.create_task(client.post("/predict", json={"model": "tiny", "inputs": inputs.tolist()}))
    deadline = time.monotonic() + 5
    labels = {"model": "tiny", "device": "emulated-0"}
    while sample((await client.get("/metrics")).text, "fpgaas_queue_rows", labels) != len(inputs):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    return task


async def test_a_full_queue_answers_503_with_retry_after(app_factory, one_model_repo, reference) -> None:
    # The 10 s delay keeps the first 10 rows queued until 16 arrive: the queue state is exact.
    _app, client = await app_factory(
        Settings(model_repository=one_model_repo, max_batch=16, max_queue_rows=16, max_delay_us=10_000_000)
    )
    first_rows = rows(10, 1)
    first = await queued(client, first_rows)

    refused = await client.post("/predict", json={"model": "tiny", "inputs": rows(10, 2).tolist()})
    assert_error(refused, 503, "overloaded", None)
    assert int(refused.headers["retry-after"]) >= 1
    text = (await client.get("/metrics")).text
    assert sample(text, "fpgaas_rejected_requests_total", {"model": "tiny", "reason": "overloaded"}) == 1

    last = rows(6, 3)  # fills the batch of 16: both queued requests are answered at once
    r_last = await client.post("/predict", json={"model": "tiny", "inputs": last.tolist()})
    r_first = await first
    np.testing.assert_array_equal(
        np.asarray(r_first.json()["outputs"], dtype=np.float32), reference(first_rows)
    )
    np.testing.assert_array_equal(np.asarray(r_last.json()["outputs"], dtype=np.float32), reference(last))


async def test_a_storm_of_refusals_is_counted_each_and_logged_once(
    app_factory, one_model_repo, reference, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process-wide limiter may have logged a refusal of this kind in an earlier test: a fresh one.
    monkeypatch.setattr(errors, "_refusals", LimitedLog(errors.log))
    caplog.set_level(logging.WARNING, errors.log.name)
    _app, client = await app_factory(
        Settings(model_repository=one_model_repo, max_batch=16, max_queue_rows=16, max_delay_us=10_000_000)
    )
    first_rows = rows(10, 1)
    first = await queued(client, first_rows)

    for i in range(25):
        refused = await client.post("/predict", json={"model": "tiny", "inputs": rows(10, 2 + i).tolist()})
        assert_error(refused, 503, "overloaded", None)
    text = (await client.get("/metrics")).text
    assert sample(text, "fpgaas_rejected_requests_total", {"model": "tiny", "reason": "overloaded"}) == 25
    logged = [r.getMessage() for r in caplog.records if r.name == errors.log.name]
    assert len(logged) == 1 and logged[0].startswith("-> 503 overloaded: model tiny has 10 rows queued")

    last = rows(6, 99)  # fills the batch: the queued request is answered, nothing was lost
    await client.post("/predict", json={"model": "tiny", "inputs": last.tolist()})
    np.testing.assert_array_equal(
        np.asarray((await first).json()["outputs"], dtype=np.float32), reference(first_rows)
    )


async def test_openapi_documents_the_routes(app_factory, one_model_repo) -> None:
    _app, client = await app_factory(settings(one_model_repo))
    spec = (await client.get("/openapi.json")).json()
    assert {"/predict", "/models", "/models/{name}", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(body)
    assert (await client.get("/docs")).status_code == 200


async def test_json_answers_round_trip_float32_exactly() -> None:
    from fpgaas.service.api.payload import encode_json_answer

    y = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    back = np.asarray(json.loads(encode_json_answer("m", "1", "d", y))["outputs"], dtype=np.float32)
    np.testing.assert_array_equal(back, y)


async def test_an_artifact_filed_under_another_name_is_refused(app_factory, tiny_artifact, tmp_path) -> None:
    shutil.copytree(tiny_artifact.path, tmp_path / "alias" / "1")  # its manifest still says tiny
    _app, client = await app_factory(settings(tmp_path))
    listing = (await client.get("/models")).json()
    assert listing["models"] == []
    [refused] = listing["refused"]
    assert "manifest says 'tiny'" in refused["reason"]
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503 and "1 refused" in not_ready.json()["reason"]


async def test_a_raw_body_the_queue_could_never_hold_is_refused_before_it_is_read(
    app_factory, one_model_repo
) -> None:
    """The rows a raw body holds are known from its Content-Length, so the queue bound answers
    before a byte of it is read (a retry storm of large requests costs no body reads)."""
    app, client = await app_factory(settings(one_model_repo, max_queue_rows=100))
    declared = 200 * 6 * 4  # 200 rows of the tiny model's 6 float32 inputs
    reads = 0
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        nonlocal reads
        reads += 1
        await asyncio.Event().wait()  # the body never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "query_string": b"model=tiny",
        "headers": [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(declared).encode()),
        ],
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert reads == 0
    assert sent[0]["status"] == 413
    body = json.loads(sent[1]["body"])  # type: ignore[arg-type]
    assert body["error"]["code"] == "payload_too_large" and body["error"]["field"] == "inputs"
    assert "200 rows" in body["error"]["message"]
    # The same request with its body is refused the same way, and a fitting one is served.
    refused = await client.post(
        "/predict?model=tiny",
        content=rows(200).tobytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert refused.status_code == 413
    served = await client.post(
        "/predict?model=tiny",
        content=rows(50).tobytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert served.status_code == 200
