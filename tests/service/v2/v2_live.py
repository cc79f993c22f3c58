"""What the v2 tests know of the live server the session runs (see conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiveServer:
    url: str  # "http://127.0.0.1:PORT"
    hostport: str  # "127.0.0.1:PORT", as tritonclient wants it
