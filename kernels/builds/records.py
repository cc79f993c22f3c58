"""A build as both sides see it: its state, options, stages and record (plain dataclasses).

States move queued -> running -> succeeded | failed | cancelled; a running build whose worker
died goes back to queued (a retry) and runs again on another worker. Times are UTC, durations
seconds.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Final

from fpgaas.kernels.errors import BadInput

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
UPLOAD_SUFFIXES: Final = (".h5", ".keras")

# The builder's stages in order (as `fpgaas.builder.pipeline` names them); progress = done / len.
STAGES: Final = (
    "load",
    "convert (hls4ml)",
    "kernel top",
    "compile (g++)",
    "choose the CPU engine",
    "synthesize (v++)",
    "package",
    "publish",
)
STRATEGIES: Final = ("Latency", "Resource")


class BuildState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED)


@dataclass(frozen=True)
class BuildOptions:
    """What an upload may ask of its build. None leaves the builder's default."""

    part: str | None = None
    platform: str | None = None
    max_batch: int | None = None  # rows per device call when served (the kernel's buffers)
    reuse_factor: int = 1
    strategy: str = "Latency"
    precision: dict[str, str] = field(default_factory=dict)  # layer name -> hls4ml precision
    expected_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch is not None and not 1 <= self.max_batch <= 1 << 20:
            raise BadInput(f"max_batch must be 1..{1 << 20}, got {self.max_batch}", field="max_batch")
        if not 1 <= self.reuse_factor <= 4096:
            raise BadInput(f"reuse_factor must be 1..4096, got {self.reuse_factor}", field="reuse_factor")
        if self.strategy not in STRATEGIES:
            raise BadInput(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}", field="strategy"
            )
        for what, value in (("part", self.part), ("platform", self.platform)):
            if value is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", value):
                raise BadInput(f"{what} {value!r} is not a part/platform name", field=what)
        for layer, precision in self.precision.items():
            if not NAME_RE.match(layer) or not re.fullmatch(
                r"u?(fixed|int)<\d{1,3}(,-?\d{1,3})?>|[a-z_]+_t", precision.replace(" ", "")
            ):
                raise BadInput(
                    f"precision override {layer!r}: {precision!r} is not an hls4ml precision such as fixed<16,6>",
                    field=f"precision.{layer}",
                )
        if self.expected_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.expected_sha256):
            raise BadInput("sha256 must be 64 lower-case hex digits", field="sha256")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class BuildRecord:
    """One row of `fpgaas_builds`."""

    id: int
    name: str
    version: str
    state: BuildState
    options: BuildOptions
    upload: str  # the store's key of the uploaded model file
    upload_sha256: str
    upload_bytes: int
    created_at: datetime
    stage: str | None = None
    progress: float = 0.0  # 0..1, stages done / stages
    stage_seconds: dict[str, float] = field(default_factory=dict)
    worker: str | None = None
    attempts: int = 0
    error: str | None = None
    manifest: dict[str, Any] | None = None
    job_id: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BuildRecord:
        return cls(
            id=int(row["id"]),
            name=row["name"],
            version=row["version"],
            state=BuildState(row["state"]),
            options=BuildOptions.from_json(row["options"] or {}),
            upload=row["upload"],
            upload_sha256=row["upload_sha256"],
            upload_bytes=int(row["upload_bytes"]),
            created_at=row["created_at"],
            stage=row["stage"],
            progress=float(row["progress"]),
            stage_seconds=dict(row["stage_seconds"] or {}),
            worker=row["worker"],
            attempts=int(row["attempts"]),
            error=row["error"],
            manifest=row["manifest"],
            job_id=row["job_id"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def to_json(self) -> dict[str, Any]:
        """The public view (`GET /builds/{id}`): ISO times, state names."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "state": self.state.value,
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "stage_seconds": self.stage_seconds,
            "worker": self.worker,
            "attempts": self.attempts,
            "error": self.error,
            "options": self.options.to_json(),
            "upload": {"sha256": self.upload_sha256, "bytes": self.upload_bytes},
            "manifest": self.manifest,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def check_name(value: str, field_name: str) -> str:
    if not NAME_RE.match(value):
        raise BadInput(
            f"{field_name} {value!r} must be 1-64 characters of letters, digits, '.', '_' or '-'",
            field=field_name,
        )
    return value
