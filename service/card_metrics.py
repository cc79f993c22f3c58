"""Card gauges, the FPGA counterpart of Triton's `nv_gpu_*`, collected when `/metrics` is read.

    fpgaas_card_healthy{card,kind}            1 while the card serves, 0 while it is unhealthy
    fpgaas_card_busy_seconds_total{card}      wall seconds of device calls on the card (rate() of
                                              it is the busy fraction over any window)
    fpgaas_card_busy_ratio{card}              busy fraction since the previous scrape (since the
                                              server started, at the first one): 0 .. 1
    fpgaas_card_calls_in_flight{card}         device calls running on the card now
    fpgaas_card_temperature_celsius{card}     only for cards whose runtime reports it
    fpgaas_card_power_watts{card}             only for cards whose runtime reports it

Temperature and power come from a device's optional `sensors() -> {"temperature_c": .., "power_w":
..}` (a real card's runtime sensors: `PyxrtDevice` reads XRT's thermal and electrical reports). A
card without sensors, as every emulated card by default, has no sample
in those families at all: absent, not zero, so a dashboard never shows an emulated card at 0 °C.

Lifetime: registered on the app's registry by `register` when the dataplane starts, unregistered
at shutdown. `collect` runs on the thread serving `/metrics` (the event loop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fpgaas.service.dataplane import DataPlane

log = logging.getLogger(__name__)


class CardCollector(Collector):
    """The card gauges of one dataplane (see the module docstring)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._last: dict[str, tuple[float, float]] = {}  # card -> (monotonic time, busy s) at the last scrape
        self._started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "fpgaas_card_healthy",
            "1 while the card serves requests, 0 while unhealthy",
            labels=["card", "kind"],
        )
        busy_total = CounterMetricFamily(
            "fpgaas_card_busy_seconds", "wall seconds of device calls on the card", labels=["card"]
        )
        busy_ratio = GaugeMetricFamily(
            "fpgaas_card_busy_ratio",
            "fraction of time the card ran calls since the previous scrape",
            labels=["card"],
        )
        in_flight = GaugeMetricFamily(
            "fpgaas_card_calls_in_flight", "device calls running on the card now", labels=["card"]
        )
        temperature = GaugeMetricFamily(
            "fpgaas_card_temperature_celsius",
            "card temperature, where its runtime reports one",
            labels=["card"],
        )
        power = GaugeMetricFamily(
            "fpgaas_card_power_watts", "card power draw, where its runtime reports one", labels=["card"]
        )
        now = time.monotonic()
        for device, busy_s, calls in self._dataplane.card_load():
            info = device.info
            healthy.add_metric([info.name, info.kind], 1.0 if info.healthy else 0.0)
            busy_total.add_metric([info.name], busy_s)
            then, busy_then = self._last.get(info.name, (self._started, 0.0))
            elapsed = now - then
            ratio = (busy_s - busy_then) / elapsed if elapsed > 0 else 0.0
            busy_ratio.add_metric([info.name], min(1.0, max(0.0, ratio)))
            self._last[info.name] = (now, busy_s)
            in_flight.add_metric([info.name], float(calls))
            sensors = _sensors(device)
            if "temperature_c" in sensors:
                temperature.add_metric([info.name], sensors["temperature_c"])
            if "power_w" in sensors:
                power.add_metric([info.name], sensors["power_w"])
        yield from (healthy, busy_total, busy_ratio, in_flight, temperature, power)


def _sensors(device: Any) -> dict[str, float]:
    read = getattr(device, "sensors", None)
    if not callable(read):
        return {}
    try:
        return {k: float(v) for k, v in dict(read()).items() if v is not None}
    except Exception as exc:  # a sensor read failing must not break the scrape
        log.debug("%s: reading sensors failed: %s", device.info.name, exc)
        return {}


def register(registry: CollectorRegistry, dataplane: DataPlane) -> CardCollector:
    """Register the card gauges of `dataplane` on `registry`; unregister the result at shutdown."""
    collector = CardCollector(dataplane)
    registry.register(collector)
    return collector
