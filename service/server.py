"""`serve(settings)`: run the app under uvicorn on settings.host:settings.port until stopped."""

from __future__ import annotations

import logging

import uvicorn

from fpgaas.service.app import create_app
from fpgaas.service.settings import Settings


def serve(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; shutdown drains accepted requests (see `create_app`)."""
    logging.getLogger().setLevel(settings.log_level.upper())
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(5, int(settings.device_timeout_s) + 2),
    )
