"""Upload -> queue -> worker -> build -> hot load -> served, on a real PostgreSQL, a real worker
process and a live server: a Keras 2 / QKeras `.h5` under continuous traffic, and Keras 3 `.keras`
files (plain Keras 3 and HGQ2) through the same route, each bit-exact against hls4ml's C simulation."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fpgaas.builder.engine import self_check_inputs
from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from tests.fixtures.builds import BuiltModel, CsimReference
from tests.fixtures.management import AUTH, Stack, deployment, upload, wait_build, wait_served
from tests.fixtures.servers import ServerProcess
from tests.fixtures.signing import reseal


def test_an_upload_is_built_hot_loaded_and_served_bit_exact_with_no_failed_request(
    stack: Stack, small: BuiltModel, small_h5: Path
) -> None:
    reseal(small.artifact, stack.repository / "small" / "1", name="small", version="1")
    rows = np.random.default_rng(3).normal(0, 4, size=(64, 27)).astype(np.float32)
    with stack.server() as server:
        stack.worker("w1")
        answered, failed = [0], []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    answer = client.post("/predict", json={"model": "small", "inputs": rows[:4].tolist()})
                    if answer.status_code == 200:
                        answered[0] += 1
                    else:
                        failed.append((answer.status_code, answer.text))

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            accepted = upload(server.url, small_h5, "small", max_batch="64")
            assert accepted.status_code == 202, accepted.text
            created = accepted.json()
            assert created["version"] == "2"  # the next integer after the version already served
            assert accepted.headers["Location"] == f"/builds/{created['id']}"

            done = wait_build(server.url, created["id"])
            assert done["state"] == "succeeded", done["error"]
            assert done["worker"] == "w1" and done["progress"] == 1.0
            assert {"load", "convert (hls4ml)", "compile (g++)", "package", "publish"} <= set(
                done["stage_seconds"]
            )
            assert (done["manifest"]["name"], done["manifest"]["version"]) == ("small", "2")
            assert done["upload"]["sha256"] == hashlib.sha256(small_h5.read_bytes()).hexdigest()
            assert stack.staging() == [] and stack.uploads() == []  # nothing left behind

            wait_served(server.url, "small", "2")
            answer = httpx.post(
                f"{server.url}/predict", json={"model": "small", "inputs": rows.tolist()}
            ).json()
            assert answer["version"] == "2"  # the new version became the default once it passed
            assert httpx.get(f"{server.url}/models/small").json()["max_batch"] == 64  # the upload's option
            expected = np.asarray(small.reference.predict(rows), dtype=np.float32).reshape(len(rows), -1)
            got = np.asarray(answer["outputs"], dtype=np.float32)
            assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))

            log = httpx.get(f"{server.url}/builds/{created['id']}/log", headers=AUTH).text
            assert "compile (g++) done in" in log and "succeeded: published small version 2" in log

            unloaded = httpx.post(
                f"{server.url}/v2/repository/models/small/unload",
                params={"version": "1"},
                headers=AUTH,
                timeout=60,
            )
            assert unloaded.status_code == 200, unloaded.text
            assert unloaded.json()["versions"] == [
                {"version": "1", "state": "UNAVAILABLE", "reason": "unloaded by an operator"}
            ]
        finally:
            stop.set()
            sender.join()
        assert failed == [] and answered[0] > 0
        listed = httpx.get(f"{server.url}/builds", headers=AUTH).json()["builds"]
        assert [(b["id"], b["state"]) for b in listed] == [(created["id"], "succeeded")]


def test_a_failed_build_says_why_keeps_its_tool_log_and_leaves_no_files(stack: Stack, small_h5: Path) -> None:
    with stack.server() as server:
        stack.worker("w1")
        accepted = upload(server.url, small_h5, "broken", precision='{"no_such_layer": "fixed<8,2>"}')
        assert accepted.status_code == 202
        failed = wait_build(server.url, accepted.json()["id"])
        assert failed["state"] == "failed" and "no_such_layer" in failed["error"]
        assert failed["stage"] == "convert (hls4ml)"
        log = httpx.get(f"{server.url}/builds/{failed['id']}/log", headers=AUTH).text
        assert "== hls4ml.log" in log and "== failed:" in log
        assert stack.staging() == [] and stack.uploads() == []
        assert not (stack.repository / "broken").exists()


@pytest.fixture(scope="module")
def keras3_stack(
    postgres_cluster: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, ServerProcess]]:
    """One deployment, live server and worker shared by the `.keras` uploads (one model name each)."""
    with (
        deployment(postgres_cluster, tmp_path_factory.mktemp("keras3-stack")) as stack,
        stack.server() as server,
    ):
        stack.worker("w1")
        yield stack, server


@pytest.fixture(params=["keras3", "hgq2"])
def keras_file(request: pytest.FixtureRequest) -> Path:
    """A plain Keras 3 Dense net, then an HGQ2 QDense net (skipped, naming HGQ2, where it is missing)."""
    if request.param == "keras3":
        models = request.getfixturevalue("keras3_models")
        return Path(models.plain)
    return Path(request.getfixturevalue("hgq2_model"))


def test_a_keras3_upload_is_parsed_by_keras3_built_hot_loaded_and_served_bit_exact(
    keras3_stack: tuple[Stack, ServerProcess], keras_file: Path, tmp_path: Path
) -> None:
    stack, server = keras3_stack
    name = keras_file.stem
    accepted = upload(server.url, keras_file, name)
    assert accepted.status_code == 202, accepted.text
    created = accepted.json()
    assert created["version"] == "1"
    reference = CsimReference(keras_file, tmp_path)  # compiles while the worker builds
    try:
        done = wait_build(server.url, created["id"])
    finally:
        reference.join()
    assert done["state"] == "succeeded", done["error"]
    assert done["upload"]["sha256"] == hashlib.sha256(keras_file.read_bytes()).hexdigest()
    assert done["manifest"]["source_model"].endswith(".keras")
    # The worker parsed it with hls4ml's Keras 3 front end in the Keras 3 child, whose log it kept.
    assert (stack.repository / name / "1" / "logs" / "keras3.log").is_file()

    wait_served(server.url, name, "1")
    rows = np.concatenate(
        [
            np.random.default_rng(3).normal(0.0, 3.0, size=(96, 6)).astype(np.float32),
            self_check_inputs(6, rows=32, seed=7),  # far out of range (wrap, saturation), rounding ties
        ]
    )
    answer = httpx.post(f"{server.url}/predict", json={"model": name, "inputs": rows.tolist()}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "1"
    got = np.asarray(answer.json()["outputs"], dtype=np.float32)
    expected = np.asarray(reference.result().predict(rows), dtype=np.float32).reshape(len(rows), -1)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert np.unique(expected).size > len(rows)  # a real function of the input, not a constant
