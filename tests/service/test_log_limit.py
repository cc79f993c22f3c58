"""`LimitedLog`: the first event of a kind is logged at once, later ones at most once per interval
with how many were left out; kinds do not share an interval."""

from __future__ import annotations

import logging

import pytest

from fpgaas.service.log_limit import LimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(clock: Clock) -> LimitedLog:
    return LimitedLog(logging.getLogger("test.log_limit"), interval_s=10.0, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.log_limit"]


def test_a_storm_of_one_kind_writes_one_line_then_one_per_interval_counting_the_rest(
    limited: LimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "test.log_limit")
    for i in range(1000):
        limited.warning("overloaded", "-> 503 overloaded: request %d", i)
        clock.now += 0.001  # a thousand a second
    assert lines(caplog) == ["-> 503 overloaded: request 0"]

    clock.now += 9.0  # 10 s after the first line
    limited.warning("overloaded", "-> 503 overloaded: request %d", 1000)
    assert lines(caplog)[1] == "-> 503 overloaded: request 1000 (and 999 more like it in the last 10 s)"


def test_an_event_after_a_quiet_interval_is_logged_plainly(
    limited: LimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "test.log_limit")
    limited.warning("fault", "device %s failed", "pynq-0")
    clock.now += 60.0
    limited.warning("fault", "device %s failed", "pynq-1")
    assert lines(caplog) == ["device pynq-0 failed", "device pynq-1 failed"]


def test_kinds_are_limited_apart(limited: LimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "test.log_limit")
    for _ in range(5):
        limited.warning((503, "overloaded", "muon-pt"), "shed muon-pt")
        limited.warning((503, "overloaded", "other"), "shed other")
        limited.warning((503, "device_error", "muon-pt"), "card fault")
    assert lines(caplog) == ["shed muon-pt", "shed other", "card fault"]
