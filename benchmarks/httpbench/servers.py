"""The servers under test: how each is started, when it is ready, which cases it can answer.

fpgaas runs as `fpgaas serve` (the installed console script) with `FPGAAS_*` settings; the peers
run as scripts from `benchmarks/peers/`. KServe runs in its own virtualenv, created on first use
(`ensure_kserve_venv`), because its dependency pins may clash with ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.httpbench.procs import free_port

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "benchmarks" / "peers"
KSERVE_VENV = REPO / ".venv-kserve"
KSERVE_REQUIREMENT = "kserve==0.21.*"

FPGAAS = "fpgaas"
FPGAAS_PYNQ = "fpgaas-pynq"
FPGAAS_BIG = "fpgaas-max-batch-65536"  # only for the 65,536-row requests
BARE = "bare-asgi"
FASTAPI = "fastapi-naive"
KSERVE = "kserve"
PEER_NAMES = (BARE, FASTAPI, KSERVE)


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server: `argv(port)`, extra environment, readiness path, cases it serves."""

    name: str
    description: str
    argv: Callable[[int], list[str]]
    ready_path: str
    cases: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    has_metrics: bool = False  # fpgaas's Prometheus counters
    grpc_port: int = 0  # fpgaas's gRPC front end (FPGAAS_GRPC_PORT), 0 for none

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def fpgaas_spec(name: str, repository: Path, description: str, **settings: str) -> ServerSpec:
    """fpgaas serving `repository`, with `FPGAAS_<KEY>=value` for each setting."""
    binary = Path(sys.executable).with_name("fpgaas")

    def argv(port: int) -> list[str]:
        return [
            str(binary),
            "serve",
            "--repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    # Every fpgaas server gets its own gRPC port (the default 8001 would be taken by the first).
    grpc_port = free_port()
    env = {f"FPGAAS_{key.upper()}": value for key, value in settings.items()}
    env["FPGAAS_GRPC_PORT"] = str(grpc_port)
    cases = ("json", "v2", "binary", "binary-1024", "grpc", "grpc-1024")
    return ServerSpec(name, description, argv, "/readyz", cases, env, True, grpc_port)


def peer_spec(
    name: str, script: str, python: Path, cases: tuple[str, ...], ready: str, text: str
) -> ServerSpec:
    def argv(port: int) -> list[str]:
        return [str(python), str(PEERS / script), "--port", str(port)]

    return ServerSpec(name, text, argv, ready, cases)


def all_specs(repository: Path, kserve_python: Path | None) -> list[ServerSpec]:
    """fpgaas (emulated device), fpgaas on two emulated PYNQ cards, and the three peers."""
    ours = Path(sys.executable)
    specs = [
        fpgaas_spec(FPGAAS, repository, "fpgaas serve, emulated device (CPU twin), default settings"),
        fpgaas_spec(
            FPGAAS_PYNQ,
            repository,
            "fpgaas serve, FPGAAS_DEVICE=pynq FPGAAS_PYNQ_EMULATED_CARDS=2",
            device="pynq",
            pynq_emulated_cards="2",
        ),
        peer_spec(
            BARE,
            "bare_asgi.py",
            ours,
            ("json", "v2", "binary", "binary-1024"),
            "/readyz",
            "raw ASGI on uvicorn (httptools, uvloop), orjson, numpy float32",
        ),
        peer_spec(
            FASTAPI,
            "naive_fastapi.py",
            ours,
            ("json",),
            "/readyz",
            "FastAPI + pydantic model + numpy per request",
        ),
    ]
    if kserve_python is not None:
        specs.append(
            peer_spec(
                KSERVE,
                "kserve_server.py",
                kserve_python,
                ("v2",),
                "/v2/health/ready",
                "KServe ModelServer (v2 REST), numpy float32",
            )
        )
    return specs


def _kserve_importable(python: Path) -> bool:
    done = subprocess.run([str(python), "-c", "import kserve"], capture_output=True, timeout=120, check=False)
    return done.returncode == 0


def ensure_kserve_venv(log: Path, install_timeout_s: float = 900.0) -> tuple[Path | None, str]:
    """The KServe virtualenv's python, creating it (venv + pip install) if needed.

    Returns (python, "") or (None, why not): a failed install is reported, not raised.
    """
    python = KSERVE_VENV / "bin" / "python"
    if python.exists() and _kserve_importable(python):
        return python, ""
    steps = [
        ["python3", "-m", "venv", str(KSERVE_VENV)],
        [str(python), "-m", "pip", "install", "-q", KSERVE_REQUIREMENT],
    ]
    with log.open("ab") as out:
        for step in steps:
            try:
                done = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, timeout=install_timeout_s, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"`{' '.join(step)}` failed: {exc}"
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                return None, f"`{' '.join(step[:4])} ...` exited with {done.returncode}: {' / '.join(tail)}"
    if not _kserve_importable(python):
        return None, f"kserve installed into {KSERVE_VENV} but `import kserve` fails (see {log})"
    return python, ""


def kserve_version(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('kserve'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or "unknown"
