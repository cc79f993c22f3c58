"""Run an image's entry point the way a container runtime would, without one: its rootfs from
`buildah mount`, read-only, in a private mount namespace, as the image's user with its Env."""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

UID = 10001
# Where the deployments put things inside the containers (docker/compose.yaml).
SECRETS = "/run/secrets"
SOCKETS = "/run/postgresql"

Volumes = dict[str, tuple[Path, bool]]


@contextmanager
def mounted(image: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(rootfs path, OCI config) of a working container of `image`; removed afterwards."""
    ctr = subprocess.run(
        ["buildah", "from", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mnt = subprocess.run(["buildah", "mount", ctr], check=True, capture_output=True, text=True)
        raw = subprocess.run(
            ["buildah", "inspect", "--type", "image", image], check=True, capture_output=True, text=True
        )
        yield Path(mnt.stdout.strip()), json.loads(raw.stdout)["OCIv1"]["config"]
    finally:
        subprocess.run(["buildah", "umount", ctr], check=False, capture_output=True)
        subprocess.run(["buildah", "rm", ctr], check=False, capture_output=True)


def container(
    rootfs: Path,
    config: dict[str, Any],
    args: list[str] | None,
    volumes: Volumes,
    env: dict[str, str] | None = None,
) -> list[str]:
    """The command running the image's entry point (with `args` in place of its Cmd) as the
    image's user, in a read-only copy of `rootfs` with `volumes` {target: (host path, read-only)}
    and `env` added to the image's Env. Targets under /tmp and /run are made in their tmpfs (as
    a runtime makes /run/secrets); any other target must exist in the image."""
    merged = dict(str(e).split("=", 1) for e in config.get("Env") or [])
    merged.update(env or {})
    argv = [*(config.get("Entrypoint") or []), *(args if args is not None else config.get("Cmd") or [])]
    user = str(config.get("User") or "0:0")
    workdir = str(config.get("WorkingDir") or "/")
    r = shlex.quote(str(rootfs))
    steps = [
        f"mount --bind {r} {r}",
        f"mount -o remount,bind,ro {r}",
        f"mount -t tmpfs -o size=512m,mode=1777 tmpfs {r}/tmp",
        f"mount -t tmpfs -o size=16m,mode=755 tmpfs {r}/run",
        f"mount -t proc proc {r}/proc",
        f"mount --rbind /dev {r}/dev",
    ]
    for target, (source, read_only) in volumes.items():
        if target.startswith(("/tmp/", "/run/")):
            steps.append(f"mkdir -p {r}{target}")
        steps.append(f"mount --bind {shlex.quote(str(source))} {r}{target}")
        if read_only:
            steps.append(f"mount -o remount,bind,ro {r}{target}")
    inner = " ".join(
        shlex.quote(a)
        for a in [
            "env",
            "-i",
            *(f"{k}={v}" for k, v in merged.items()),
            "sh",
            "-c",
            'cd "$0" && exec "$@"',
            workdir,
            *argv,
        ]
    )
    steps.append(f"exec chroot --userspec={user} {r} {inner}")
    # No --fork: every step execs, so the caller's pid is the entry point's and gets its signals.
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", "; ".join(steps)]


def owned(path: Path) -> Path:
    """`path` (made if missing) and everything under it, owned by the images' user."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(path)], check=True)
    return path


@contextmanager
def running(cmd: list[str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` started with its output to `log`, stopped (if it still runs) on exit."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stop(proc, 30)


def started(
    stack: ExitStack, image: str, args: list[str], volumes: Volumes, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`image`'s entry point with `args` (see `container`), running until `stack` closes; with the
    temporary file its output goes to."""
    rootfs, config = stack.enter_context(mounted(image))
    log = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115  (closed by `stack`)
    return stack.enter_context(running(container(rootfs, config, args, volumes, env), log)), log


def stop(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM, then SIGKILL if `proc` has not exited within `grace_s` seconds; its exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
