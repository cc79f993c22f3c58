"""Fixtures for the card device tests (PYNQ, and XRT through the emulated pyxrt): the service suite's built artifact and emulated cards.

The artifact is `tiny_artifact` from tests/service/conftest.py (the real builder: hls4ml + g++)
(which holds the emulation xclbin); the cards are `EmulatedCard`s that PYNQ lists in
`pynq.Device.devices`, so `PynqDevice` runs through the real `pynq` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pynq
import pytest

from fpgaas.kernels.artifact import Artifact
from fpgaas.service.devices import xrt_emulation
from fpgaas.service.devices.pynq import PynqDevice, PynqOptions
from fpgaas.service.devices.pynq_emulation import EmulatedCard, install_emulated_cards
from fpgaas.service.devices.xrt import PyxrtDevice, XrtOptions
from fpgaas.service.devices.xrt_emulation import EmulatedXrtCard


@pytest.fixture(scope="session")
def artifact(tiny_artifact: Artifact) -> Artifact:
    """The service suite's tiny built artifact; the builder wrote the emulation xclbin the cards load."""
    return tiny_artifact


@pytest.fixture(scope="session")
def twin(artifact: Artifact):  # type: ignore[no-untyped-def]
    from fpgaas.kernels.twin import KernelLibrary

    return KernelLibrary.from_artifact(artifact)


@pytest.fixture(scope="session")
def cards() -> list[EmulatedCard]:
    return install_emulated_cards(2)[:2]


@pytest.fixture(autouse=True)
def _healthy_cards(cards: list[EmulatedCard]) -> Iterator[None]:
    yield
    for card in cards:
        card.clear_faults()
        card.kernel_latency_s = 0.0


def card_index(card: EmulatedCard) -> int:
    return pynq.Device.devices.index(card)


OPTIONS = PynqOptions(kernel_timeout_s=0.3, reload_attempts=3, reload_backoff_s=0.01)


@pytest.fixture
def device(cards: list[EmulatedCard]) -> Iterator[PynqDevice]:
    dev = PynqDevice(card_index(cards[0]), options=OPTIONS)
    yield dev
    dev.close()


@pytest.fixture
def second_device(cards: list[EmulatedCard]) -> Iterator[PynqDevice]:
    dev = PynqDevice(card_index(cards[1]), options=OPTIONS)
    yield dev
    dev.close()


@pytest.fixture
def samples(artifact: Artifact) -> np.ndarray:
    """64 rows spanning the fixed-point input range (including values that saturate)."""
    n_inputs = artifact.manifest.inputs[0].width
    return np.random.default_rng(3).normal(0.0, 8.0, size=(64, n_inputs)).astype(np.float32)


# --- both card runtimes behind one fixture: the fault specs run on PYNQ and on XRT --------
XRT_OPTIONS = XrtOptions(kernel_timeout_s=0.3, reload_attempts=3, reload_backoff_s=0.01)


@pytest.fixture(scope="session")
def xrt_cards() -> list[EmulatedXrtCard]:
    return xrt_emulation.install_emulated_cards(2)[:2]


@dataclass(frozen=True)
class Rig:
    """One card runtime under test: its two devices, their emulated cards, and its words."""

    kind: str
    device: PynqDevice | PyxrtDevice
    second_device: PynqDevice | PyxrtDevice
    cards: list[Any]  # EmulatedCard | EmulatedXrtCard: inject, clear_faults, downloads, kernel_latency_s
    load_failed: str  # how the device reports a program that does not load
    load_error: str  # what the emulated card's load error says


@pytest.fixture(params=["pynq", "xrt"])
def rig(
    request: pytest.FixtureRequest, cards: list[EmulatedCard], xrt_cards: list[EmulatedXrtCard]
) -> Iterator[Rig]:
    if request.param == "pynq":
        made: Rig = Rig(
            "pynq",
            PynqDevice(card_index(cards[0]), options=OPTIONS),
            PynqDevice(card_index(cards[1]), options=OPTIONS),
            list(cards),
            "overlay failed to load",
            "Programming Device failed",
        )
    else:
        made = Rig(
            "xrt",
            PyxrtDevice(xrt_emulation, 0, options=XRT_OPTIONS),
            PyxrtDevice(xrt_emulation, 1, options=XRT_OPTIONS),
            list(xrt_cards),
            "xclbin failed to load",
            "load_axlf",
        )
    yield made
    made.device.close()
    made.second_device.close()
    for card in made.cards:
        card.clear_faults()
        card.kernel_latency_s = 0.0
