"""The fpgaas HTTP front end: thin routers by resource on top of `fpgaas.service.dataplane`.

`routers` lists them in the order `create_app` mounts them; a second protocol (the Open
Inference Protocol) is one more router calling the same `DataPlane`.
"""

from __future__ import annotations

from fastapi import APIRouter

from fpgaas.service.api import devices, health, models, predict, v2

# v2 last: its catch-all answers unknown /v2 paths in the protocol's error form.
routers: tuple[APIRouter, ...] = (predict.router, models.router, devices.router, health.router, v2.router)
