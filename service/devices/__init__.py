"""Devices that run kernels, chosen in one place: `create_devices(settings)`.

`emulated` (default) runs each artifact's g++-compiled emulation library on the CPU;
`pynq` drives AMD/Xilinx cards through PYNQ (imported only when chosen, since it probes
for XRT); `xrt` drives them through XRT's own Python binding `pyxrt` (or, with
`xrt_emulated_cards` > 0, an emulated one). See `fpgaas.service.devices.base` for the protocol every implementation follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fpgaas.service.devices.base import Device, DeviceInfo, LoadedKernel, StageTimes

if TYPE_CHECKING:
    from fpgaas.service.settings import Settings

__all__ = ["Device", "DeviceInfo", "LoadedKernel", "StageTimes", "create_devices"]


def create_devices(settings: Settings) -> list[Device]:
    """The devices of a server, opened; the caller (the registry) closes them."""
    if settings.device == "emulated":
        from fpgaas.service.devices.emulated import EmulatedDevice

        return [EmulatedDevice("emulated-0")]
    if settings.device == "pynq":
        from fpgaas.service.devices.pynq import PynqOptions, open_pynq_devices

        options = PynqOptions(kernel_timeout_s=settings.device_timeout_s)
        return list(
            open_pynq_devices(
                indices=settings.pynq_cards, emulated_cards=settings.pynq_emulated_cards, options=options
            )
        )
    if settings.device == "xrt":
        from fpgaas.service.devices.xrt import XrtOptions, open_xrt_devices

        xrt_options = XrtOptions(
            kernel_timeout_s=settings.device_timeout_s,
            compute_units=settings.xrt_compute_units,
            buffer_sets=settings.xrt_buffer_sets,
            run_rows=settings.xrt_run_rows,
        )
        return list(
            open_xrt_devices(
                indices=settings.xrt_cards, emulated_cards=settings.xrt_emulated_cards, options=xrt_options
            )
        )
    raise ValueError(f"unknown device kind {settings.device!r}")
