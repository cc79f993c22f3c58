"""The v++ `--link` connectivity config: how many compute units, and which memory bank each
kernel argument of each CU uses.

`nk=fpgaas_kernel:N:fpgaas_kernel_1.fpgaas_kernel_2...` makes N instances of the kernel, which a
device drives with several runs in flight (`fpgaas.service.devices.xrt`). `sp=<cu>.<arg>:<bank>`
places each CU's input x and output y in memory banks: CU c (1-based) takes banks 2(c-1) and
2(c-1)+1 of the platform, wrapping around, so that a single CU keeps x and y in separate banks
(DDR[0], DDR[1]) and several CUs spread their traffic over every bank (the card's bandwidth is
per bank).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

DDR_BANKS: Final = tuple(f"DDR[{i}]" for i in range(4))  # U200/U250, AWS F1
HBM_BANKS: Final = tuple(f"HBM[{i}]" for i in range(32))  # U50, U55C, U280 (its HBM)
_HBM_PLATFORMS: Final = ("xilinx_u50", "xilinx_u55c", "xilinx_u280")
MAX_COMPUTE_UNITS: Final = 64


def memory_banks(platform: str) -> tuple[str, ...]:
    """The global-memory banks kernels are connected to on `platform` (a v++ platform name)."""
    return HBM_BANKS if platform.lower().startswith(_HBM_PLATFORMS) else DDR_BANKS


def cu_names(kernel: str, compute_units: int) -> list[str]:
    """The instance names v++ gives them, `<kernel>_1` .. `<kernel>_N`."""
    return [f"{kernel}_{c}" for c in range(1, compute_units + 1)]


def connectivity_config(kernel: str, compute_units: int = 1, banks: Sequence[str] = DDR_BANKS) -> str:
    """The `[connectivity]` section for `compute_units` instances of `kernel`(x, y, n)."""
    if not 1 <= compute_units <= MAX_COMPUTE_UNITS:
        raise ValueError(f"compute_units must be 1..{MAX_COMPUTE_UNITS}, got {compute_units}")
    if not banks:
        raise ValueError("name at least one memory bank")
    names = cu_names(kernel, compute_units)
    lines = [
        f"# v++ --link config for the fpgaas kernel: {compute_units} compute unit(s), inputs and outputs "
        "in separate banks",
        "[connectivity]",
        f"nk={kernel}:{compute_units}:{'.'.join(names)}",
    ]
    for c, name in enumerate(names):
        lines.append(f"sp={name}.x:{banks[(2 * c) % len(banks)]}")
        lines.append(f"sp={name}.y:{banks[(2 * c + 1) % len(banks)]}")
    return "\n".join(lines) + "\n"
