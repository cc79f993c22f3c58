"""The overload benchmark's own parts: the open-loop generator against a real server (the bare
ASGI peer), what a phase summary counts, and when each target of deliverable 4 holds. No timing is
asserted: the figures belong to `make bench` (docs/benchmarks/overload.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from benchmarks.httpbench.cases import BINARY, MODEL, N_INPUTS, inputs
from benchmarks.httpbench.openloop import NO_ANSWER, OpenLoopRun, Sample, open_loop, raw_request
from benchmarks.httpbench.overload import (
    FLAT_WINDOW_S,
    RSS_PERIOD_S,
    Phase,
    percentile_ms,
    rss_growth_mib,
    summarize,
    targets,
    windows,
)
from benchmarks.httpbench.procs import Cores, Server, free_port, running
from benchmarks.httpbench.servers import PEERS

REPO = Path(__file__).resolve().parents[2]
PATH = f"/predict?model={MODEL}"


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, str(PEERS / "bare_asgi.py"), "--port", str(port)]
    logs = tmp_path_factory.mktemp("overload-peer")
    with running(
        "bare-asgi", argv, port=port, ready_path="/readyz", core=Cores.pick().server, log_dir=logs
    ) as s:
        yield s


def offer(server: Server, body: bytes, expected: bytes, rate: float, seconds: float) -> OpenLoopRun:
    address = urlsplit(server.url)
    host, port = str(address.hostname), int(address.port or 80)
    raw = raw_request(host, port, PATH, BINARY, body)
    return asyncio.run(open_loop(host, port, raw, expected, rate_per_s=rate, seconds=seconds, connections=8))


def test_open_loop_sends_at_the_rate_and_checks_every_answer_body(bare: Server) -> None:
    body = inputs(4, seed=5).astype("<f4").tobytes()
    expected = httpx.post(bare.url + PATH, content=body, headers={"content-type": BINARY}).content
    run = offer(bare, body, expected, rate=200.0, seconds=1.5)
    # Poisson arrivals: 300 expected, the spread of a count of 300 is ~17.
    assert 200 <= len(run.samples) <= 400
    assert all(s.status == 200 and s.body_ok and not s.retry_after for s in run.samples)
    assert all(0 < s.latency_s < 5 and 0 <= s.due_s < 1.5 for s in run.samples)
    dues = [s.due_s for s in sorted(run.samples, key=lambda s: s.due_s)]
    assert dues[-1] - dues[0] > 1.0  # spread over the run, not sent in one burst
    assert run.reconnects == 0


def test_open_loop_marks_answers_that_are_not_the_expected_bytes(bare: Server) -> None:
    body = inputs(2, seed=6).astype("<f4").tobytes()
    run = offer(bare, body, b"not the answer", rate=100.0, seconds=0.5)
    assert run.samples and all(s.status == 200 and not s.body_ok for s in run.samples)

    wrong_width = np.zeros((2, N_INPUTS + 1), dtype="<f4").tobytes()
    refused = offer(bare, wrong_width, b"", rate=100.0, seconds=0.5)
    assert refused.samples and all(400 <= s.status < 500 and not s.body_ok for s in refused.samples)


ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def one_answer_per_connection(answer_first: bool, rate: float, seconds: float) -> OpenLoopRun:
    """Offer load to a server that closes every connection without a byte of answer at the request
    after the first (the keep-alive race, every time), or, with answer_first False, at the first."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answers in (answer_first, False):
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(line.split(b": ", 1) for line in head.strip().split(b"\r\n")[1:])
            length = int(fields[b"Content-Length"])
            await reader.readexactly(length)
            if not answers:
                break
            writer.write(ANSWER)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = raw_request("127.0.0.1", port, "/", BINARY, b"x" * 8)
    async with server:
        return await open_loop(
            "127.0.0.1", port, raw, b"ok", rate_per_s=rate, seconds=seconds, connections=4, drain_s=2.0
        )


def test_a_request_lost_to_the_keep_alive_race_is_sent_once_more_on_a_fresh_connection() -> None:
    run = asyncio.run(one_answer_per_connection(answer_first=True, rate=100.0, seconds=0.5))
    assert run.samples and all(s.status == 200 and s.body_ok for s in run.samples)
    # Without the second try, every request after a connection's first would be lost.
    assert run.retried > 0
    assert run.reconnects >= run.retried


def test_a_request_lost_on_its_connection_s_first_use_is_reported_not_retried() -> None:
    run = asyncio.run(one_answer_per_connection(answer_first=False, rate=100.0, seconds=0.3))
    assert run.samples and all(s.status == NO_ANSWER for s in run.samples)
    assert run.retried == 0


def sample(status: int, latency_ms: float, due_s: float = 0.0, ok: bool = True, retry: bool = True) -> Sample:
    return Sample(due_s, latency_ms / 1e3, status, retry and status == 503, ok and status == 200)


def test_a_percentile_is_the_nearest_rank_in_ms() -> None:
    values = [i / 1e3 for i in range(1, 101)]  # 1 .. 100 ms
    assert percentile_ms(values, 0.5) == pytest.approx(50.0)
    assert percentile_ms(values, 0.99) == pytest.approx(99.0)
    assert percentile_ms(values, 1.0) == pytest.approx(100.0)
    assert np.isnan(percentile_ms([], 0.5))


def test_a_summary_counts_outcomes_and_keeps_latencies_of_answers_and_refusals_apart() -> None:
    samples = (
        *(sample(200, 40.0) for _ in range(97)),
        sample(200, 90.0, ok=False),  # a wrong answer: counted, and its latency still an answer's
        *(sample(503, 1.0) for _ in range(50)),
        sample(503, 2.0, retry=False),
        sample(NO_ANSWER, 5000.0),
    )
    s = summarize(OpenLoopRun(100.0, 2.0, 8, 0, 0, samples))
    assert s.statuses == {NO_ANSWER: 1, 200: 98, 503: 51}
    assert s.sent_per_s == 75.0 and s.answered_per_s == 49.0
    assert s.ok_p50_ms == pytest.approx(40.0) and s.ok_max_ms == pytest.approx(90.0)
    assert s.refused_p99_ms == pytest.approx(2.0)
    assert s.wrong_bodies == 1 and s.refusals_without_retry_after == 1


def test_windows_cut_a_run_by_due_time() -> None:
    samples = tuple(sample(200 if i % 2 else 503, 10.0, due_s=i * 0.1) for i in range(40))  # 4 s
    cut = windows(samples, 4.0, 2.0)
    assert [start for start, _ in cut] == [0.0, 2.0]
    assert [sum(w.statuses.values()) for _, w in cut] == [20, 20]
    assert cut[0][1].statuses == {200: 10, 503: 10}


def test_memory_growth_is_the_last_window_against_the_first() -> None:
    k = int(FLAT_WINDOW_S / RSS_PERIOD_S)
    flat = [300.0 + (i % 3) * 0.5 for i in range(4 * k)]  # noise, no trend
    assert abs(rss_growth_mib(flat)) <= 1.0
    leaking = [300.0 + i * 0.5 for i in range(4 * k)]  # 2 MiB a second
    assert rss_growth_mib(leaking) == pytest.approx(0.5 * 3 * k)
    with pytest.raises(ValueError, match="needs"):
        rss_growth_mib(flat[: k + 1])


def phase(name: str, samples: tuple[Sample, ...], seconds: float = 20.0, **overrides: object) -> Phase:
    fields: dict[str, object] = {
        "device_us_per_call": 12_000.0,
        "rows_per_call": 1024.0,
        "rejected": float(sum(1 for s in samples if s.status == 503)),
        "rss_mib": tuple([300.0] * int(seconds / RSS_PERIOD_S)),
        "queue_rows_max": 4096.0,
    }
    fields.update(overrides)
    return Phase(name, OpenLoopRun(900.0, seconds, 256, 0, 0, samples), **fields)  # type: ignore[arg-type]


def healthy_overload() -> tuple[Sample, ...]:
    # 85 answers/s at ~50 ms and 800 fast refusals/s for 20 s.
    answers = tuple(sample(200, 45.0 + (i % 10), due_s=i / 85) for i in range(1700))
    refusals = tuple(sample(503, 0.8, due_s=i / 800) for i in range(16_000))
    return answers + refusals


def quiet(n: int = 420) -> tuple[Sample, ...]:
    return tuple(sample(200, 14.0, due_s=i / 42) for i in range(n))


def verdicts(overload: Phase, after: Phase | None = None) -> dict[str, bool]:
    below = phase("below", quiet(), 10.0)
    result = targets(86.0, 50.0, below, overload, after or phase("after", quiet(), 10.0), 276.0)
    return {v.target.split(":")[0].split(" <=")[0].split(" >=")[0]: v.met for v in result}


def test_a_healthy_overload_meets_every_target() -> None:
    assert all(verdicts(phase("overload", healthy_overload())).values())


def test_each_target_misses_when_its_claim_fails() -> None:
    slow = tuple(sample(200, 80.0, due_s=i / 85) for i in range(1700)) + healthy_overload()[1700:]
    assert not verdicts(phase("overload", slow))["accepted p99"]  # 80 ms > 50 + 12

    growing = tuple(300.0 + i * 0.1 for i in range(80))  # +2 MiB every 5 s
    assert not verdicts(phase("overload", healthy_overload(), rss_mib=growing))["memory flat under overload"]

    starved = healthy_overload()[:800] + healthy_overload()[1700:]  # 40 answers/s of 86
    assert not verdicts(phase("overload", starved))["goodput"]

    slow_refusals = healthy_overload()[:1700] + tuple(sample(503, 30.0) for _ in range(16_000))
    assert not verdicts(phase("overload", slow_refusals))["refusals fast"]
    no_hint = (*healthy_overload(), sample(503, 0.5, retry=False))
    assert not verdicts(phase("overload", no_hint))["refusals fast"]

    wrong = (*healthy_overload(), sample(200, 40.0, ok=False))
    assert not verdicts(phase("overload", wrong))["nothing answered wrongly or lost"]
    lost = (*healthy_overload(), sample(NO_ANSWER, 5000.0))
    assert not verdicts(phase("overload", lost))["nothing answered wrongly or lost"]
    miscounted = phase("overload", healthy_overload(), rejected=15_000.0)  # the server saw fewer
    assert not verdicts(miscounted)["nothing answered wrongly or lost"]

    still_shedding = phase("after", quiet(200) + tuple(sample(503, 1.0) for _ in range(220)), 10.0)
    assert not verdicts(phase("overload", healthy_overload()), still_shedding)[
        "served as before once the overload ends"
    ]


def test_the_slow_card_server_needs_emulated_pynq_cards() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "slow_card_serve.py"), "--call-ms", "5", "serve"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 2
    assert "FPGAAS_DEVICE=pynq and FPGAAS_PYNQ_EMULATED_CARDS >= 1" in done.stderr
