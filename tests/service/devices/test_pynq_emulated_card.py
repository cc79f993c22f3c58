"""The emulated card behaves like a card under PYNQ's own API (Overlay, allocate, sync, call)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pynq
import pytest

from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.xclbin import EMULATION_XCLBIN
from fpgaas.service.devices.pynq_emulation import EmulatedCard, emulated_cards


@pytest.fixture
def overlay(artifact: Artifact, cards: list[EmulatedCard]) -> Iterator[pynq.Overlay]:
    ol = pynq.Overlay(str(artifact.file(EMULATION_XCLBIN)), device=cards[0])
    yield ol
    ol.free()


def buffers(card: EmulatedCard, x: np.ndarray, n_out: int) -> tuple[pynq.PynqBuffer, pynq.PynqBuffer]:
    xb = pynq.allocate(x.shape, np.float32, target=card)
    yb = pynq.allocate((x.shape[0], n_out), np.float32, target=card)
    xb[:] = x
    return xb, yb


def test_the_registry_is_what_pynq_lists(cards: list[EmulatedCard]) -> None:
    assert emulated_cards()[:2] == cards
    assert all(card in pynq.Device.devices for card in cards)


def test_overlay_exposes_the_kernel_with_the_abi_signature(overlay: pynq.Overlay) -> None:
    ip = overlay.fpgaas_kernel_1

    assert list(ip.signature.parameters) == ["x", "y", "n"]


def test_the_paper_call_sequence_gives_the_twin_result(
    overlay: pynq.Overlay, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    xb, yb = buffers(cards[0], samples, twin.n_outputs)

    xb.sync_to_device()
    overlay.fpgaas_kernel_1.call(xb, yb, len(samples))
    yb.sync_from_device()

    np.testing.assert_array_equal(np.asarray(yb), twin.run(samples))


def test_without_sync_to_device_the_kernel_reads_stale_card_memory(
    overlay: pynq.Overlay, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    xb, yb = buffers(cards[0], samples, twin.n_outputs)

    overlay.fpgaas_kernel_1.call(xb, yb, len(samples))  # x never reached the card
    yb.sync_from_device()

    np.testing.assert_array_equal(np.asarray(yb), twin.run(np.zeros_like(samples)))
    assert not np.array_equal(np.asarray(yb), twin.run(samples))


def test_without_sync_from_device_the_host_sees_stale_results(
    overlay: pynq.Overlay, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    xb, yb = buffers(cards[0], samples, twin.n_outputs)
    yb[:] = -1.0

    xb.sync_to_device()
    overlay.fpgaas_kernel_1.call(xb, yb, len(samples))

    assert np.all(np.asarray(yb) == -1.0)


def test_the_register_start_path_gives_the_same_bits(
    overlay: pynq.Overlay, cards: list[EmulatedCard], twin, samples: np.ndarray
) -> None:
    xb, yb = buffers(cards[0], samples, twin.n_outputs)

    xb.sync_to_device()
    overlay.fpgaas_kernel_1.start_sw(xb, yb, len(samples)).wait()  # AXI-lite writes, AP_DONE poll
    yb.sync_from_device()

    np.testing.assert_array_equal(np.asarray(yb), twin.run(samples))


def test_buffers_live_at_distinct_addresses_in_the_ddr_bank(
    overlay: pynq.Overlay, cards: list[EmulatedCard]
) -> None:
    bank = overlay.mem_dict["DDR[0]"]
    a = pynq.allocate((100, 27), np.float32, target=cards[0])
    b = pynq.allocate((100, 27), np.float32, target=cards[0])

    assert a.device_address != b.device_address
    for buf in (a, b):
        assert bank["base_address"] <= buf.device_address < bank["base_address"] + bank["size"]


def test_an_unknown_fault_is_refused(cards: list[EmulatedCard]) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        cards[0].inject("melt")  # type: ignore[arg-type]
