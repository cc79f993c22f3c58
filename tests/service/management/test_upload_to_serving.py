"""Upload -> queue -> worker -> build -> hot load -> served, on a real PostgreSQL, a real worker
process and a live server, under continuous traffic."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import numpy as np

from tests.fixtures.builds import BuiltModel
from tests.fixtures.management import AUTH, Stack, upload, wait_build, wait_served
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
