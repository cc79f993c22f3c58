"""Histograms, counters and gauges cheap enough to record several times per request.

prometheus_client's own metric objects cost 2-4 µs per `observe` (a lock per value, a linear
bucket scan, exemplar handling); a single-row request records about ten values, which was ~10% of
its whole server-side time. These keep plain numbers under one lock per child, find a bucket by
bisection, and are exported through prometheus_client's custom-collector interface, so the
exposition format, the registry and `get_sample_value` are prometheus_client's.

Same surface as prometheus_client for what the service uses: `labels(*values)` returns a child
bound once (keep it), and the child has `observe` / `inc` / `dec` / `set`. Metric names follow
prometheus_client's rules: a counter named `x` is exported as `x_total`. No `_created` samples.
Thread-safe; a child lives as long as its family (children are never removed).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class HistogramChild:
    """One label set of a histogram: counts per bucket (`le` semantics) and the sum."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect_left(self._bounds, value)  # the first bound >= value: Prometheus' `le`
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """(cumulative counts per bound then +Inf, sum), read consistently."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        running, cumulative = 0, []
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total


class ValueChild:
    """One label set of a counter or gauge."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value -= amount

    def set(self, value: float) -> None:
        self._value = float(value)  # one store: atomic under the GIL

    def get(self) -> float:
        return self._value


class _Family(Collector):
    """A named family of children keyed by label values, registered on `registry`."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def _child(self, values: tuple[str, ...]) -> object:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        found = self._children.get(values)
        if found is None:
            with self._lock:
                found = self._children.setdefault(values, self._new_child())
        return found

    def _new_child(self) -> object:
        raise NotImplementedError

    def _items(self) -> list[tuple[tuple[str, ...], object]]:
        with self._lock:
            return list(self._children.items())

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are checked by collect(); describing would need a snapshot


class Histogram(_Family):
    """A histogram family; `buckets` are the finite upper bounds, ascending."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        if list(self._bounds) != sorted(set(self._bounds)):
            raise ValueError(f"{name}: buckets must be distinct and ascending")
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def labels(self, *values: str) -> HistogramChild:
        child = self._child(tuple(str(v) for v in values))
        assert isinstance(child, HistogramChild)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        names = [floatToGoString(b) for b in self._bounds] + ["+Inf"]  # as prometheus_client
        for values, child in self._items():
            assert isinstance(child, HistogramChild)
            cumulative, total = child.snapshot()
            family.add_metric(list(values), list(zip(names, cumulative, strict=True)), total)
        yield family


class _ValueFamily(_Family):
    def _new_child(self) -> ValueChild:
        return ValueChild()

    def labels(self, *values: str) -> ValueChild:
        child = self._child(tuple(str(v) for v in values))
        assert isinstance(child, ValueChild)
        return child

    def _values(self) -> Iterator[tuple[list[str], float]]:
        for values, child in self._items():
            assert isinstance(child, ValueChild)
            yield list(values), child.get()


class Counter(_ValueFamily):
    """A counter family (exported as `<name>_total`)."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in self._values():
            family.add_metric(values, value)
        yield family


class Gauge(_ValueFamily):
    """A gauge family."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in self._values():
            family.add_metric(values, value)
        yield family
