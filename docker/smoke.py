"""Smoke-test the built images without a container engine: each image's root filesystem is
mounted with `buildah mount`, and its entry point runs there the way a container would run it:

- in a private mount namespace (`unshare --mount`), the rootfs bind-mounted READ-ONLY, a tmpfs
  on /tmp, /proc and /dev from the host, volumes bind-mounted where compose/the chart mount them;
- `chroot --userspec=10001:10001`, with exactly the image's Env, WorkingDir, Entrypoint and Cmd
  (read from its OCI config), so a wrong USER, PATH or a write to the root fs shows up here.

The network namespace is the host's, so the server answers on a loopback port.

    server:  `fpgaas serve` with model_repository/ mounted read-only at /models; GET /healthz,
             GET /readyz and one POST /predict of the muon model on 127.0.0.1
    builder: `fpgaas build` of models/muon-pt.h5 into a mounted /models, then its manifest read
    client:  `fpgaas --help`, then the client SDK (inside the client image) predicts through the
             running server image

Run by `make images` after the builds; prints one line per check and exits 1 on a failure.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TAG = "0.1.0"
MUON_ROW = [0.8, 1.1, 1.3, 0.3, 0.5, 0.2, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1.8]


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
    rootfs: Path, config: dict[str, Any], args: list[str] | None, volumes: dict[str, tuple[Path, bool]]
) -> list[str]:
    """The command running the image's entry point (with `args` in place of its Cmd) as the
    image's user, in a read-only copy of `rootfs` with `volumes` {target: (host path, read-only)}."""
    env = [str(e) for e in config.get("Env") or []]
    argv = [*(config.get("Entrypoint") or []), *(args if args is not None else config.get("Cmd") or [])]
    user = str(config.get("User") or "0:0")
    workdir = str(config.get("WorkingDir") or "/")
    r = shlex.quote(str(rootfs))
    steps = [
        f"mount --bind {r} {r}",
        f"mount -o remount,bind,ro {r}",
        f"mount -t tmpfs -o size=512m,mode=1777 tmpfs {r}/tmp",
        f"mount -t proc proc {r}/proc",
        f"mount --rbind /dev {r}/dev",
    ]
    for target, (source, read_only) in volumes.items():
        steps.append(f"mount --bind {shlex.quote(str(source))} {r}{target}")
        if read_only:
            steps.append(f"mount -o remount,bind,ro {r}{target}")
    inner = " ".join(
        shlex.quote(a) for a in ["env", "-i", *env, "sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv]
    )
    steps.append(f"exec chroot --userspec={user} {r} {inner}")
    # No --fork: every step execs, so the caller's pid is the entry point's and gets its signals.
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", "; ".join(steps)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Failed(Exception):
    pass


def check(what: str, ok: bool, detail: str = "") -> None:
    print(f"smoke: {'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        raise Failed(what)


def smoke_builder(tmp: Path) -> None:
    out = tmp / "built"
    out.mkdir()
    (tmp / "in").mkdir()
    (tmp / "in" / "muon-pt.h5").write_bytes((ROOT / "models" / "muon-pt.h5").read_bytes())
    subprocess.run(["chown", "-R", "10001:10001", str(out)], check=True)
    with mounted(f"localhost/fpgaas-builder:{TAG}") as (rootfs, config):
        cmd = container(
            rootfs,
            config,
            ["build", "/mnt/muon-pt.h5", "--name", "muon-pt", "--version", "1", "--out", "/models/muon-pt/1"],
            {"/models": (out, False), "/mnt": (tmp / "in", True)},
        )
        start = time.monotonic()
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        manifest = out / "muon-pt" / "1" / "manifest.json"
        check(
            "builder: fpgaas build muon-pt.h5 (read-only root, uid 10001)",
            run.returncode == 0 and manifest.is_file(),
            f"{time.monotonic() - start:.0f} s; {run.stdout.strip().splitlines()[0] if run.stdout else run.stderr[-400:]}",
        )
        engine = json.loads(manifest.read_text()).get("engine")
        check("builder: sealed manifest names its engine", bool(engine), str(engine))


def smoke_server_and_client() -> None:
    repository = ROOT / "model_repository"
    port = free_port()
    with mounted(f"localhost/fpgaas-server:{TAG}") as (rootfs, config), tempfile.TemporaryFile() as log:
        cmd = container(
            rootfs,
            config,
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            {"/models": (repository, True)},
        )
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            status = 0
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status, _ = http(f"{base}/readyz")
                    if status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            log.seek(0)
            check(
                "server: fpgaas serve started, GET /readyz",
                status == 200,
                f"{status}; {log.read()[-300:]!r}" if status != 200 else "200",
            )
            status, body = http(f"{base}/healthz")
            check("server: GET /healthz", status == 200, body)
            status, body = http(f"{base}/predict", {"model": "muon-pt", "inputs": [MUON_ROW]})
            check("server: POST /predict muon-pt", status == 200 and "outputs" in body, body[:200])

            with mounted(f"localhost/fpgaas-client:{TAG}") as (crootfs, cconfig):
                run = subprocess.run(
                    container(crootfs, cconfig, None, {}), capture_output=True, text=True, timeout=120
                )
                check(
                    "client: fpgaas --help",
                    run.returncode == 0 and "usage" in run.stdout,
                    run.stdout.splitlines()[0] if run.stdout else run.stderr[-300:],
                )
                script = (
                    "from fpgaas.client import Client\n"
                    f"with Client('{base}') as c:\n"
                    f"    print(c.predict([{MUON_ROW}], model='muon-pt').tolist())\n"
                )
                cconfig = {**cconfig, "Entrypoint": ["/opt/fpgaas/bin/python"]}
                run = subprocess.run(
                    container(crootfs, cconfig, ["-c", script], {}),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                check(
                    "client: SDK predict through the server image",
                    run.returncode == 0 and run.stdout.startswith("[["),
                    (run.stdout or run.stderr[-300:]).strip(),
                )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            check("server: exits cleanly on SIGTERM", proc.returncode == 0, f"exit {proc.returncode}")


def main() -> int:
    try:
        smoke_server_and_client()
        with tempfile.TemporaryDirectory(dir=ROOT / "build" / "images") as tmp:
            smoke_builder(Path(tmp))
    except Failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
