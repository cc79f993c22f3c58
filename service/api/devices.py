"""`GET /devices`: every device of the server, its health, and the model versions it holds.

The wire schema lives here, next to its only route, and extends `DeviceOut` of `/models`.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fpgaas.service.api.deps import DataPlaneDep
from fpgaas.service.api.schemas import DeviceOut
from fpgaas.service.dataplane import DeviceStatus

router = APIRouter(tags=["devices"])


class ResidentModel(BaseModel):
    name: str
    version: str


class DeviceEntry(DeviceOut):
    models: list[ResidentModel] = Field(..., description="model versions resident on this device")
    suspect: str | None = Field(
        None, description="why this card's answers are in doubt (a shadow check against the CPU twin failed)"
    )

    @classmethod
    def of(cls, d: DeviceStatus) -> DeviceEntry:
        models = [ResidentModel(name=n, version=v) for n, v in d.models]
        return cls(**cls.fields_of(d.info), models=models, suspect=d.info.suspect)


class DeviceList(BaseModel):
    devices: list[DeviceEntry] = Field(..., description="in the order the server opened them")


@router.get("/devices", response_model=DeviceList, summary="Every device, its health and its models")
async def list_devices(dataplane: DataPlaneDep) -> DeviceList:
    return DeviceList(devices=[DeviceEntry.of(d) for d in dataplane.devices()])
