"""Compatibility of PYNQ 3.0.1 (the last release driving Alveo and AWS F1) with NumPy 2.

NumPy 2 added a read-only `ndarray.device` (the array API), so PYNQ 3.0.1's
`PynqBuffer.__new__` fails on `self.device = device` for real and emulated cards alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pynq.buffer import PynqBuffer


def ensure_pynq_numpy2_compat() -> None:
    """Give `PynqBuffer` back the writable `device` attribute PYNQ 3.0.1 assigns.

    NumPy 2 added a read-only `ndarray.device` (the array API), so PYNQ 3.0.1's
    `PynqBuffer.__new__` fails on `self.device = device` for real and emulated cards alike.
    A data descriptor on the subclass takes precedence; idempotent, a no-op on NumPy 1.
    """
    if "device" in vars(PynqBuffer) or "device" not in vars(np.ndarray):
        return

    def get(buf: PynqBuffer) -> Any:
        return buf.__dict__.get("pynq_device")

    def set_(buf: PynqBuffer, value: Any) -> None:
        buf.__dict__["pynq_device"] = value

    PynqBuffer.device = property(get, set_, doc="The pynq.Device holding this buffer")
