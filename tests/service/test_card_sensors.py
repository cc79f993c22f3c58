"""Card temperature and power: read from XRT's `thermal` / `electrical` reports, exported only
where the card reports them (absent, never a made-up 0), through the shadow-check wrapper too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fpgaas.service.devices import xrt_emulation
from fpgaas.service.devices.xrt import PyxrtDevice
from fpgaas.service.devices.xrt_emulation import EmulatedXrtCard
from fpgaas.service.settings import Settings

CARDS = 2
SENSOR_METRICS = ("fpgaas_card_temperature_celsius", "fpgaas_card_power_watts")


@pytest.fixture
def cards() -> Iterator[list[EmulatedXrtCard]]:
    cards = list(xrt_emulation.install_emulated_cards(CARDS)[:CARDS])
    yield cards
    for card in cards:
        card.fpga_temperature_c = card.power_w = None


def test_a_card_without_sensors_reports_none(cards: list[EmulatedXrtCard]) -> None:
    device = PyxrtDevice(xrt_emulation, 0)
    # What XRT itself says for such a card: the sensor is listed, not present; power "N/A".
    thermal = json.loads(xrt_emulation.device(0).get_info(xrt_emulation.xrt_info_device.thermal))
    assert thermal["thermals"][0]["is_present"] == "false"
    assert device.sensors() == {}
    device.close()


def test_present_sensors_are_read_in_celsius_and_watts(cards: list[EmulatedXrtCard]) -> None:
    device = PyxrtDevice(xrt_emulation, 0)
    cards[0].fpga_temperature_c, cards[0].power_w = 61.5, 23.25
    assert device.sensors() == {"temperature_c": 61.5, "power_w": 23.25}
    cards[0].power_w = None  # a card that measures its die but not its board power
    assert device.sensors() == {"temperature_c": 61.5}
    device.close()


@pytest.mark.asyncio
async def test_metrics_export_a_sample_only_for_the_card_that_reports_one(
    app_factory, one_model_repo: Path, cards: list[EmulatedXrtCard]
) -> None:
    cards[1].fpga_temperature_c, cards[1].power_w = 58.0, 21.5
    settings = Settings(
        model_repository=one_model_repo,
        device="xrt",
        xrt_emulated_cards=CARDS,
        xrt_cards=[0, 1],
        shadow_fraction=1.0,  # the devices are wrapped by the shadow checker: it must pass sensors on
    )
    _app, client = await app_factory(settings)

    text = (await client.get("/metrics")).text
    samples = {
        (s.name, s.labels["card"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in SENSOR_METRICS
    }
    assert samples == {
        ("fpgaas_card_temperature_celsius", "xrt-1"): 58.0,
        ("fpgaas_card_power_watts", "xrt-1"): 21.5,
    }
