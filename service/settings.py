"""The one configuration class of the server, read from `FPGAAS_*` environment variables.

Validated when constructed: a server that would misbehave (no repository, empty batches,
negative delays) refuses to start instead. Passed explicitly to `create_app`; never global.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DeviceKind = Literal["emulated", "pynq", "xrt"]
ShadowPolicy = Literal["keep-serving", "drain"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # model and device names


class Settings(BaseSettings):
    """Server settings; each field reads `FPGAAS_<FIELD>` (the port also plain `PORT`)."""

    model_config = SettingsConfigDict(
        env_prefix="FPGAAS_", extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    model_repository: Path = Field(
        default=Path("model_repository"), description="directory holding <name>/<version>/manifest.json"
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="bind address")
    # `make serve` exports PORT; FPGAAS_PORT wins when both are set.
    port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("FPGAAS_PORT", "PORT"),
        description="TCP port",
    )
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="TCP port of the gRPC front end (KServe v2 / Triton, what SONIC speaks), on the "
        "same host; 0: no gRPC",
    )
    device: DeviceKind = Field(default="emulated", description="which Device implementation runs the kernels")
    pynq_emulated_cards: int = Field(
        default=0,
        ge=0,
        le=16,
        description="with device=pynq: emulated PYNQ cards to install (no hardware needed)",
    )
    pynq_cards: list[int] | None = Field(
        default=None,
        description="with device=pynq: indices in pynq.Device.devices to open (JSON, e.g. [0, 2]); "
        "default every card",
    )
    xrt_emulated_cards: int = Field(
        default=0,
        ge=0,
        le=16,
        description="with device=xrt: use that many emulated cards through an emulated pyxrt "
        "(no XRT needed) instead of XRT's own binding",
    )
    xrt_cards: list[int] | None = Field(
        default=None,
        description="with device=xrt: card indices to open (JSON, e.g. [0, 2]); default every card",
    )
    xrt_compute_units: int = Field(
        default=1,
        ge=1,
        le=64,
        description="with device=xrt: compute units the xclbins hold (v++ nk=fpgaas_kernel:N)",
    )
    xrt_buffer_sets: int = Field(
        default=2,
        ge=1,
        le=64,
        description="with device=xrt: buffer sets per compute unit (runs in flight per CU)",
    )
    xrt_run_rows: int | None = Field(
        default=None,
        ge=1,
        description="with device=xrt: rows per kernel run; default max_batch / (compute units x buffer sets)",
    )
    shadow_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="fraction of device calls recomputed on the CPU twin off the hot path (0: off)",
    )
    shadow_cpu_budget: float = Field(
        default=0.25,
        gt=0.0,
        le=64.0,
        description="CPU-seconds per second the shadow check may use; calls beyond it are dropped, never waited for",
    )
    shadow_mismatch_policy: ShadowPolicy = Field(
        default="keep-serving",
        description="after a shadow mismatch: keep-serving (the card is marked suspect) or drain (no new requests)",
    )
    shadow_seed: int = Field(
        default=0, ge=0, description="seed of the shadow sampling (reproducible choices)"
    )
    # Device names are only known once the devices are open, so the registry checks them.
    placement: dict[str, list[str]] = Field(
        default_factory=dict,
        description="model name -> the devices to load it on, one replica each (JSON, e.g. "
        '{"muon-pt": ["pynq-0", "pynq-1"]}); models not listed are spread round-robin',
    )
    device_probe_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="seconds between attempts to bring an unhealthy device back into service",
    )
    max_batch: int = Field(default=1024, ge=1, le=1 << 20, description="rows per device call (buffer size)")
    max_delay_us: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="µs an idle device may wait for a fuller batch (ends early at max_batch rows); "
        "0: an idle device starts at once, and rows arriving during a call form the next batch",
    )
    max_queue_rows: int = Field(
        default=65536, ge=1, description="rows accepted but not yet answered, per model"
    )
    max_queue_delay_ms: float = Field(
        default=50.0,
        gt=0,
        le=3_600_000,
        description="admission budget: a request whose expected queue wait (rows ahead / the "
        "replica's measured rows per second) exceeds it gets a fast 503 with Retry-After",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="largest request body, bytes, as sent and (Content-Encoding) once inflated",
    )
    json_parse_processes: int = Field(
        default=1,
        ge=0,
        le=64,
        description="parser processes for large JSON bodies (orjson and pydantic hold the GIL: on a "
        "thread a 15 MB body stalls every other request ~150 ms); 0: parse them on a thread",
    )
    json_process_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        description="JSON bodies of at least this many bytes go to a parser process (smaller ones "
        "over 64 KiB to a thread, the rest are parsed on the event loop)",
    )
    read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="longest wait for the rest of a request head, or for the next chunk of its body, "
        "before the connection is closed",
    )
    keepalive_timeout_s: float = Field(
        default=5.0, gt=0, le=3600, description="an idle keep-alive connection is closed after this"
    )
    access_log: bool = Field(default=False, description="log one line per request (off: it costs ~10%)")
    device_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="seconds one device call may take"
    )
    retry_after_s: float = Field(
        default=1.0, gt=0, le=3600, description="Retry-After sent with 503 overloaded"
    )
    log_level: LogLevel = Field(default="info", description="log level of the server and uvicorn")
    management: bool = Field(
        default=False,
        description="serve the management API (uploads, builds, repository control); needs PostgreSQL",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the management routes; unset is allowed on a loopback host only",
    )
    inference_token: SecretStr | None = Field(
        default=None, description="bearer token of the inference routes; unset: they are open"
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL of the build queue (libpq URL); unset: the embedded one under state_dir",
    )
    state_dir: Path = Field(
        default=Path(".fpgaas"),
        description="the embedded PostgreSQL, uploads and build logs live here (made when needed)",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="largest model upload, bytes (413 beyond)"
    )
    # NoDecode: the variable is a PATH-like list (a:b), not JSON.
    trusted_keys: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        description="ed25519 public keys (PEM files, or directories of *.pub files), separated by ':', "
        "whose artifact signatures the server accepts; unset: <state_dir>/keys, the embedded default",
    )
    repository_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="seconds between looks at the build database for versions to load or unload",
    )

    @field_validator("model_repository")
    @classmethod
    def _repository_is_a_directory(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"model repository {str(value)!r} is not a directory")
        return value.resolve()

    @field_validator("pynq_cards")
    @classmethod
    def _distinct_card_indices(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("name at least one card index, or leave it unset for every card")
            if min(value) < 0 or len(set(value)) != len(value):
                raise ValueError(f"card indices must be distinct and >= 0, got {value}")
        return value

    @field_validator("placement")
    @classmethod
    def _placement_names_devices(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for model, devices in value.items():
            if not _NAME.match(model):
                raise ValueError(f"{model!r} is not a model name")
            if not devices or len(set(devices)) != len(devices):
                raise ValueError(f"model {model!r} needs one or more distinct devices, got {devices}")
            for device in devices:
                if not _NAME.match(device):
                    raise ValueError(f"{device!r} (for model {model!r}) is not a device name")
        return value

    @model_validator(mode="after")
    def _management_needs_a_token_off_loopback(self) -> Settings:
        if self.management and self.admin_token is None and not is_loopback(self.host):
            raise ValueError(
                f"management is enabled on {self.host!r}, which is not a loopback address: "
                "set FPGAAS_ADMIN_TOKEN (or bind 127.0.0.1)"
            )
        return self

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split_key_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(":") if part.strip()]
        return value

    def trusted_key_paths(self) -> list[Path]:
        """Where the trusted public keys are: FPGAAS_TRUSTED_KEYS, else <state_dir>/keys if it exists."""
        if self.trusted_keys is not None:
            return list(self.trusted_keys)
        embedded = self.state_dir / "keys"
        return [embedded] if embedded.is_dir() else []

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or name) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
