"""Running external tools (g++, v++) with their output kept as a log file.

Every tool runs as `subprocess.run([...], check=True, timeout=...)`; stdout and stderr go to one log
file inside the artifact's `logs/`, and a failure raises `BuildError` naming that log.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from fpgaas.kernels.errors import BuildError, ToolMissing


def require(tool: str, purpose: str) -> str:
    """Absolute path of `tool` on PATH, or `ToolMissing` saying what it was needed for."""
    found = shutil.which(tool)
    if found is None:
        raise ToolMissing(tool, purpose)
    return found


def run_logged(cmd: Sequence[str], *, log: Path, cwd: Path, timeout_s: float) -> None:
    """Run `cmd` in `cwd`, writing the command line and all its output to `log`.

    Raises `BuildError` naming `log` when the tool exits non-zero, times out or cannot start.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write(f"$ (cd {shlex.quote(str(cwd))} && {shlex.join(cmd)})\n")
        fh.flush()
        try:
            subprocess.run(
                list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=True, timeout=timeout_s
            )
        except subprocess.CalledProcessError as exc:
            raise BuildError(f"{cmd[0]} exited with status {exc.returncode}", log=str(log)) from exc
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{cmd[0]} did not finish within {timeout_s:.0f} s", log=str(log)) from exc
        except OSError as exc:
            raise BuildError(f"{cmd[0]} could not be started: {exc}", log=str(log)) from exc


def version_line(tool: str, *args: str) -> str:
    """First line `tool --version` prints, or "absent" when the tool is not on PATH."""
    found = shutil.which(tool)
    if found is None:
        return "absent"
    try:
        done = subprocess.run(
            [found, *(args or ("--version",))], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
