"""The build-queue metrics on `/metrics`: builds per state, the oldest queued build's age, finished
builds and their durations, read from the builds table at each scrape. Real PostgreSQL, a live
server; the builds are real uploads (queued by the server) moved on as a worker moves them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from fpgaas.kernels.builds.records import BuildState
from tests.fixtures.build_rows import advance
from tests.fixtures.management import Stack, upload


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_builds_per_state_and_finished_durations(stack: Stack, small_h5: Path) -> None:
    with stack.server() as server:
        empty = _samples(server.url)
        assert empty[("fpgaas_build_queue_up", ())] == 1
        assert empty[("fpgaas_build_queue_builds", (("state", "queued"),))] == 0
        assert empty[("fpgaas_build_queue_oldest_seconds", ())] == 0
        assert empty[("fpgaas_builds_finished_total", (("state", "failed"),))] == 0
        assert empty[("fpgaas_build_duration_seconds_count", (("state", "succeeded"),))] == 0

        ids = []
        for _ in range(5):
            answer = upload(server.url, small_h5, "metered")
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        advance(stack.conninfo, ids[0], BuildState.RUNNING, BuildState.SUCCEEDED, hold_s=1.2)
        advance(stack.conninfo, ids[1], BuildState.RUNNING, BuildState.FAILED)
        advance(stack.conninfo, ids[2], BuildState.CANCELLED)  # cancelled in the queue: no duration
        advance(stack.conninfo, ids[3], BuildState.RUNNING)
        time.sleep(0.3)

        seen = _samples(server.url)
        assert seen[("fpgaas_build_queue_builds", (("state", "queued"),))] == 1
        assert seen[("fpgaas_build_queue_builds", (("state", "running"),))] == 1
        assert seen[("fpgaas_build_queue_oldest_seconds", ())] > 0.3
        for state in ("succeeded", "failed", "cancelled"):
            assert seen[("fpgaas_builds_finished_total", (("state", state),))] == 1, state
        succeeded = (("state", "succeeded"),)
        assert seen[("fpgaas_build_duration_seconds_count", succeeded)] == 1
        assert 1.2 <= seen[("fpgaas_build_duration_seconds_sum", succeeded)] < 10
        # the 1.2 s build is over the 1 s bound and under the 2 s one
        assert seen[("fpgaas_build_duration_seconds_bucket", (("le", "1.0"), *succeeded))] == 0
        assert seen[("fpgaas_build_duration_seconds_bucket", (("le", "2.0"), *succeeded))] == 1
        assert seen[("fpgaas_build_duration_seconds_count", (("state", "cancelled"),))] == 0

    # The counters are rows of the table: a new server carries on where the last one stood.
    with stack.server() as server:
        assert _samples(server.url)[("fpgaas_builds_finished_total", (("state", "failed"),))] == 1


def test_a_server_without_management_exports_no_build_metrics(stack: Stack) -> None:
    with stack.server(management=False) as server:
        assert not any(name.startswith("fpgaas_build") for name, _ in _samples(server.url))


def test_an_unreadable_builds_table_says_so_and_the_scrape_still_answers(stack: Stack) -> None:
    with stack.server() as server:
        with psycopg.connect(stack.conninfo, autocommit=True) as db:
            db.execute("ALTER TABLE fpgaas_builds RENAME TO fpgaas_builds_away")
            try:
                broken = _samples(server.url)
            finally:
                db.execute("ALTER TABLE fpgaas_builds_away RENAME TO fpgaas_builds")
        assert broken[("fpgaas_build_queue_up", ())] == 0
        # no stale numbers beside the 0: only the up gauge of the build families
        assert {name for name, _ in broken if name.startswith("fpgaas_build")} == {"fpgaas_build_queue_up"}
        assert any(name == "fpgaas_inflight_requests" for name, _ in broken)
        assert _samples(server.url)[("fpgaas_build_queue_up", ())] == 1
