"""The build queue under trouble: racing uploads, cancel, a worker killed outright, a server restart.
Real PostgreSQL, real `fpgaas worker` processes, live servers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from tests.fixtures.management import AUTH, Stack, upload, wait_build, wait_served


def _build_processes(stack: Stack) -> list[int]:
    """Pids of the build child processes working in this stack's store."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"fpgaas.builder.build_child" in command and str(stack.repository).encode() in command:
            found.append(int(pid))
    return found


def _wait_gone(stack: Stack, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while _build_processes(stack):
        assert time.monotonic() < deadline, f"build processes still running: {_build_processes(stack)}"
        time.sleep(0.2)


def test_two_concurrent_uploads_of_one_version_get_one_202_and_one_409_and_a_running_build_cancels(
    stack: Stack, small_h5: Path
) -> None:
    with stack.server() as server:
        worker = stack.worker("w1")
        start = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def send() -> None:
            start.wait()
            answers.append(upload(server.url, small_h5, "racer", version="5"))

        senders = [threading.Thread(target=send) for _ in range(2)]
        for s in senders:
            s.start()
        for s in senders:
            s.join()
        assert sorted(a.status_code for a in answers) == [202, 409]
        refused = next(a for a in answers if a.status_code == 409).json()["error"]
        assert refused["code"] == "conflict" and refused["field"] == "version"
        assert len(stack.uploads()) == 1  # the refused upload's file is gone
        build_id = next(a for a in answers if a.status_code == 202).json()["id"]

        running = wait_build(server.url, build_id, until=("stage:convert (hls4ml)", "succeeded", "failed"))
        assert running["state"] == "running", running
        assert _build_processes(stack), "the build runs in a child process"
        streamed: list[str] = []

        def follow_log() -> None:  # GET /builds/{id}/log follows the log until the build ends
            with httpx.stream("GET", f"{server.url}/builds/{build_id}/log", headers=AUTH, timeout=60) as log:
                streamed.extend(log.iter_text())

        follower = threading.Thread(target=follow_log)
        follower.start()
        time.sleep(1.0)
        answer = httpx.delete(f"{server.url}/builds/{build_id}", headers=AUTH)
        assert answer.status_code == 202, answer.text
        cancelled = wait_build(server.url, build_id, timeout_s=60)
        assert cancelled["state"] == "cancelled"
        follower.join(timeout=30)
        assert not follower.is_alive()
        text = "".join(streamed)
        assert "attempt 1 on worker w1" in text and "convert (hls4ml) ..." in text
        assert text.rstrip().endswith("its staging removed")
        _wait_gone(stack)  # the tools were stopped with it
        assert stack.staging() == [] and stack.uploads() == []  # staging and upload removed
        assert not (stack.repository / "racer" / "5").exists()
        assert worker.poll() is None  # the worker lives on
        again = httpx.delete(f"{server.url}/builds/{build_id}", headers=AUTH)
        assert again.status_code == 409


def test_a_build_whose_worker_is_killed_is_finished_by_another_worker(stack: Stack, small_h5: Path) -> None:
    with stack.server() as server:
        doomed = stack.worker("doomed")
        build_id = upload(server.url, small_h5, "phoenix").json()["id"]
        running = wait_build(server.url, build_id, until=("stage:convert (hls4ml)", "succeeded", "failed"))
        assert (running["state"], running["worker"]) == ("running", "doomed")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        _wait_gone(stack)  # the build process died with its worker, and its staging is not served
        assert not (stack.repository / "phoenix" / "1").exists()

        stack.worker("rescuer")
        done = wait_build(server.url, build_id)
        assert done["state"] == "succeeded", done["error"]
        assert (done["worker"], done["attempts"]) == ("rescuer", 2)
        wait_served(server.url, "phoenix", "1")
        log = httpx.get(f"{server.url}/builds/{build_id}/log", headers=AUTH).text
        assert "attempt 1 on worker doomed" in log and "attempt 2 on worker rescuer" in log


def test_builds_queued_and_running_survive_a_server_restart(stack: Stack, small_h5: Path) -> None:
    stack.worker("w1")  # one build at a time: the first runs while the second waits
    with stack.server() as first:
        running_id = upload(first.url, small_h5, "alpha").json()["id"]
        queued_id = upload(first.url, small_h5, "beta").json()["id"]
        wait_build(first.url, running_id, until=("running",))
        assert wait_build(first.url, queued_id, until=("queued",))["state"] == "queued"
        first.process.terminate()
        assert first.process.wait(timeout=30) == 0
    with stack.server() as second:
        assert [b["id"] for b in httpx.get(f"{second.url}/builds", headers=AUTH).json()["builds"]] == [
            queued_id,
            running_id,
        ]
        for build_id in (running_id, queued_id):
            assert wait_build(second.url, build_id)["state"] == "succeeded"
        wait_served(second.url, "alpha", "1")
        wait_served(second.url, "beta", "1")


def test_a_database_restart_loses_no_queued_or_finished_build(
    stack: Stack, small_h5: Path, postgres_cluster: EmbeddedPostgres
) -> None:
    with stack.server() as server:
        stack.worker("w1")
        built = upload(server.url, small_h5, "before").json()["id"]
        assert wait_build(server.url, built)["state"] == "succeeded"
        stack.stop_workers()
        queued = upload(server.url, small_h5, "during").json()["id"]

        postgres_cluster.stop()
        postgres_cluster.start()

        assert wait_build(server.url, built)["state"] == "succeeded"
        assert wait_build(server.url, queued, until=("queued",))["state"] == "queued"
        stack.worker("w2")
        assert wait_build(server.url, queued)["state"] == "succeeded"
        wait_served(server.url, "during", "1")
        assert [b["state"] for b in httpx.get(f"{server.url}/builds", headers=AUTH).json()["builds"]] == [
            "succeeded",
            "succeeded",
        ]


def test_a_worker_stopped_mid_build_puts_the_build_back_in_the_queue(stack: Stack, small_h5: Path) -> None:
    with stack.server() as server:
        stopping = stack.worker("stopping")
        build_id = upload(server.url, small_h5, "requeued").json()["id"]
        running = wait_build(server.url, build_id, until=("stage:convert (hls4ml)", "succeeded", "failed"))
        assert (running["state"], running["worker"]) == ("running", "stopping")
        stopping.terminate()  # SIGTERM: stop now, do not finish an hour-long build first
        assert stopping.wait(timeout=30) == 0
        _wait_gone(stack)
        requeued = wait_build(server.url, build_id, until=("queued",), timeout_s=10)
        assert "stopped" in requeued["error"]
        stack.worker("next")
        done = wait_build(server.url, build_id)
        assert (done["state"], done["worker"], done["attempts"]) == ("succeeded", "next", 2)
