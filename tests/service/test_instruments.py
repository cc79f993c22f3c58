"""The hot-path instruments export exactly what prometheus_client's own metrics would."""

from __future__ import annotations

import threading

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fpgaas.service.instruments import Counter, Gauge, Histogram

BOUNDS = (0.001, 0.01, 0.1, 1.0)
VALUES = (0.0005, 0.001, 0.0011, 0.05, 0.1, 0.5, 3.0, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_histogram_exposes_the_same_samples_as_prometheus_clients() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = Histogram("wait_seconds", "doc", ["model"], buckets=BOUNDS, registry=ours)
    reference = prometheus_client.Histogram("wait_seconds", "doc", ["model"], buckets=BOUNDS, registry=theirs)
    for v in VALUES:  # values on a bound count in that bucket (`le`)
        mine.labels("a").observe(v)
        reference.labels("a").observe(v)
    mine.labels("b").observe(2.0)
    reference.labels("b").observe(2.0)
    assert _samples(ours) == _samples(theirs)


def test_counters_and_gauges_expose_the_same_samples_as_prometheus_clients() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    rows = Counter("rows", "doc", ["model"], registry=ours)
    ref_rows = prometheus_client.Counter("rows", "doc", ["model"], registry=theirs)
    depth = Gauge("depth", "doc", ["model", "device"], registry=ours)
    ref_depth = prometheus_client.Gauge("depth", "doc", ["model", "device"], registry=theirs)
    inflight = Gauge("inflight", "doc", [], registry=ours).labels()
    ref_inflight = prometheus_client.Gauge("inflight", "doc", registry=theirs)
    rows.labels("a").inc(3)
    ref_rows.labels("a").inc(3)
    depth.labels("a", "card-0").set(7)
    ref_depth.labels("a", "card-0").set(7)
    for gauge in (inflight, ref_inflight):
        gauge.inc()
        gauge.inc()
        gauge.dec()
    assert _samples(ours) == _samples(theirs)
    assert ours.get_sample_value("rows_total", {"model": "a"}) == 3.0


def test_concurrent_observations_are_all_counted() -> None:
    registry = CollectorRegistry()
    child = Histogram("h", "doc", [], buckets=BOUNDS, registry=registry).labels()
    counter = Counter("c", "doc", [], registry=registry).labels()

    def record() -> None:
        for _ in range(20_000):
            child.observe(0.05)
            counter.inc()

    threads = [threading.Thread(target=record) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.get_sample_value("h_count") == 80_000
    assert registry.get_sample_value("h_bucket", {"le": "0.01"}) == 0
    assert registry.get_sample_value("h_bucket", {"le": "0.1"}) == 80_000
    assert registry.get_sample_value("c_total") == 80_000


def test_label_counts_and_bucket_order_are_checked() -> None:
    registry = CollectorRegistry()
    family = Counter("c", "doc", ["model"], registry=registry)
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("a", "b")
    with pytest.raises(ValueError, match="ascending"):
        Histogram("h", "doc", [], buckets=(1.0, 0.5), registry=registry)
