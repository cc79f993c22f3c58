"""The fpgaas HTTP front end: the front door and thin routers by resource over `fpgaas.service.dataplane`.

`front.FrontDoor` answers the hot routes (`POST /predict`, v2 infer) itself and times every
request; `routers` lists the FastAPI routers of everything else, in the order `create_app`
mounts them. A second protocol (the Open Inference Protocol) is one more router and one more
hot route over the same `DataPlane`.
"""

from __future__ import annotations

from fastapi import APIRouter

from fpgaas.service.api import devices, health, models, v2

routers: tuple[APIRouter, ...] = (models.router, devices.router, health.router, v2.router)
