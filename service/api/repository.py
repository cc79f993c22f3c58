"""The model repository as every front reports it: one answer for `POST /v2/repository/index`
(HTTP) and `RepositoryIndex` (gRPC), and for a model's readiness.

Without the management API a server serves what it loaded at start, so its index is every
loaded version, READY. With it (`FPGAAS_MANAGEMENT=1`) the index is every version the store
holds as this server's repository sync sees it (READY, LOADING, UNAVAILABLE with the reason:
not loaded yet, refused and why, unloaded by an operator, retired), plus a BUILDING entry for
each queued or running build of a version not in the store yet. Sorted by name, then version.

Readiness follows Triton: a model version the index lists but does not serve is not ready
(gRPC `ready=false`, HTTP 400), not unknown; only a name (or version) the index has never heard
of is ModelNotFound.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from fpgaas.kernels.errors import ModelNotFound
from fpgaas.service.dataplane import DataPlane
from fpgaas.service.hotload import VersionState

if TYPE_CHECKING:  # the build queue's dependencies load only with the management API
    from fpgaas.service.buildservice import BuildService

READY = "READY"


async def index(
    dataplane: DataPlane, builds: BuildService | None, ready_only: bool = False
) -> list[VersionState]:
    """Every version this server knows of and its state (see the module docstring); with
    `ready_only`, only the READY ones (Triton's `ready` flag of the index request)."""
    if builds is None:
        states = [VersionState(m.name, m.version, READY, "") for m in dataplane.models()]
    else:
        states = list(builds.sync.states())
        known = {(s.name, s.version) for s in states}
        for record in await builds.queue.table.unfinished():
            if (record.name, record.version) not in known:
                stage = f", {record.stage}" if record.stage else ""
                states.append(
                    VersionState(
                        record.name,
                        record.version,
                        "BUILDING",
                        f"build {record.id} {record.state.value}{stage}",
                    )
                )
    states.sort(key=lambda s: (s.name, s.version))
    return [s for s in states if not ready_only or s.state == READY]


def as_json(states: list[VersionState]) -> list[dict[str, str]]:
    """Triton's JSON index: name, version, state, reason for each version."""
    return [asdict(s) for s in states]


async def model_ready(
    dataplane: DataPlane, builds: BuildService | None, name: str, version: str | None
) -> bool:
    """Whether a model version serves now: its device is healthy. A version the repository knows
    but does not serve is False; ModelNotFound (naming what is loaded) for one it does not know."""
    try:
        return dataplane.model(name, version).device.healthy
    except ModelNotFound:
        if builds is None:
            raise
        listed = await index(dataplane, builds)
        if any(s.name == name and version in (None, s.version) for s in listed):
            return False
        raise
