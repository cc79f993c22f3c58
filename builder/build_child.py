"""One build in its own process: `python -m fpgaas.builder.build_child '<json request>'`.

The worker starts one of these per build (`fpgaas.builder.worker`), so that a crash of hls4ml,
g++ or TensorFlow, or a cancel that kills the process group, never takes the worker down.
Protocol: the process's stdout and stderr go to the build log (the tools' chatter too); the
descriptor the worker reads (the original stdout) carries JSON lines, one per event:

    {"event": "stage", "stage": "<name>", "done": false}             a stage started
    {"event": "stage", "stage": "<name>", "done": true, "seconds": s} a stage finished
    {"event": "built", "artifact": "<dir>"}                           sealed, ready to publish
    {"event": "failed", "error": "<message>", "code": "<code>"}        the build failed

The process dies with its worker (PR_SET_PDEATHSIG), so a SIGKILLed worker leaves no build
running on behind the retry.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import IO, Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_PR_SET_PDEATHSIG = 1
_STARTED = re.compile(r"^(?P<stage>.+) \.\.\.$")
_DONE = re.compile(r"^(?P<stage>.+) done in (?P<seconds>[0-9.]+) s$")


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker's cancel still kills the group
        return
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _events_and_log() -> IO[str]:
    """Keep the original stdout for events; send fd 1 and 2 (tools included) to the log (stderr)."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    return events


def main(argv: list[str]) -> int:
    request: dict[str, Any] = json.loads(argv[1])
    _die_with_parent(int(request["parent"]))
    events = _events_and_log()

    def emit(**event: Any) -> None:
        events.write(json.dumps(event) + "\n")

    def say(line: str) -> None:
        print(line, flush=True)
        if done := _DONE.match(line):
            emit(event="stage", stage=done["stage"], done=True, seconds=float(done["seconds"]))
        elif started := _STARTED.match(line):
            emit(event="stage", stage=started["stage"], done=False)

    from fpgaas.builder import build
    from fpgaas.builder.pipeline import DEFAULT_PART, DEFAULT_PLATFORM
    from fpgaas.kernels.errors import FpgaasError

    out = Path(request["out"])
    try:
        build(
            Path(request["model"]),
            name=request["name"],
            out=out,
            version=request["version"],
            part=request.get("part") or DEFAULT_PART,
            platform=request.get("platform") or DEFAULT_PLATFORM,
            reuse_factor=int(request.get("reuse_factor") or 1),
            strategy=request.get("strategy") or "Latency",
            precision=request.get("precision") or {},
            log=say,
        )
    except FpgaasError as exc:
        print(f"build failed: {exc}", flush=True)
        emit(event="failed", error=str(exc), code=exc.code)
        return 1
    emit(event="built", artifact=str(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
