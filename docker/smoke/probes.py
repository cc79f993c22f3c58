"""The smoke run's checks and probes: one printed line per check, `Failed` on the first failure;
HTTP without third-party clients, and waiting on a process's log or readiness."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.signing import TrustedKeys, load_public_key, verify_artifact


class Failed(Exception):
    pass


def check(what: str, ok: bool, detail: str = "") -> None:
    print(f"smoke: {'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        raise Failed(what)


def verified_on_host(artifact: Path, public_key: Path) -> str:
    """ "verified on the host" when `artifact`'s manifest.sig is a valid signature by `public_key`
    over files that match it; else the reason, for the failed check to show."""
    try:
        verify_artifact(artifact, TrustedKeys.of(load_public_key(public_key)))
    except (ArtifactError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "verified on the host"


def tail(log: IO[bytes], n: int = 400) -> str:
    log.seek(0)
    return repr(log.read()[-n:].decode(errors="replace"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_ready(base: str, proc: subprocess.Popen[bytes], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, _ = http(f"{base}/readyz")
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.5)
    return status


def wait_for(log: IO[bytes], text: bytes, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether `text` appears in `log` within `seconds`, while `proc` runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log.seek(0)
        if text in log.read():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.5)
    return False


def line_with(log: IO[bytes], text: bytes) -> str:
    """The message of the first log line holding `text` (without time and level)."""
    log.seek(0)
    line = next((x for x in log.read().splitlines() if text in x), b"")
    return line.decode(errors="replace").split(": ", 1)[-1]
