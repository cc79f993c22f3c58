"""Smoke-test the built images without a container engine: each image's root filesystem is
mounted with `buildah mount`, and its entry point runs there the way a container would run it:

- in a private mount namespace (`unshare --mount`), the rootfs bind-mounted READ-ONLY, tmpfs on
  /tmp and /run, /proc and /dev from the host, volumes bind-mounted where compose/the chart
  mount them (the signing keys as secret files under /run/secrets, as compose.yaml does);
- `chroot --userspec=10001:10001`, with exactly the image's Env, WorkingDir, Entrypoint and Cmd
  (read from its OCI config) plus the deployment's FPGAAS_* variables, so a wrong USER, PATH or
  a write to the root fs shows up here.

The network namespace is the host's, so the server answers on loopback ports.

    builder: `fpgaas build` of models/muon-pt.h5 with FPGAAS_SIGNING_KEY_FILE=/run/secrets/signing_key
             -> manifest.sig, checked on the host against the public key
    server:  `fpgaas serve` with management on a private PostgreSQL (the embedded cluster of
             `make serve`, its Unix socket bind-mounted at /run/postgresql) and
             FPGAAS_TRUSTED_KEYS=/run/secrets/signing_pub: serves the signed artifact, refuses an
             unsigned and a tampered copy; /healthz, /readyz, /predict, gRPC (tritonclient)
    worker:  `fpgaas worker` from the builder image on the same database and artifact store;
             `fpgaas upload --wait` (client image) sends muon-pt.h5 over HTTP with the admin
             token, the worker builds and signs version 2, the server hot-loads it and answers
    client:  `fpgaas --help`, the SDK predicting through the server image, the upload above

Run by `make images` after the builds; prints one line per check and exits 1 on a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.signing import TrustedKeys, generate_keypair, load_public_key, verify_artifact

ROOT = Path(__file__).resolve().parent.parent
TAG = "0.1.0"
MUON_ROW = [0.8, 1.1, 1.3, 0.3, 0.5, 0.2, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1.8]
UID = 10001
# Where the deployments put things inside the containers (docker/compose.yaml).
SECRETS = "/run/secrets"
SOCKETS = "/run/postgresql"
DATABASE_URL = f"host={SOCKETS} dbname=fpgaas user=postgres"

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


class Failed(Exception):
    pass


def check(what: str, ok: bool, detail: str = "") -> None:
    print(f"smoke: {'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        raise Failed(what)


def tail(log: IO[bytes], n: int = 400) -> str:
    log.seek(0)
    return repr(log.read()[-n:].decode(errors="replace"))


def owned(path: Path) -> Path:
    """`path` (made if missing) and everything under it, owned by the images' user."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(path)], check=True)
    return path


def make_keys(tmp: Path) -> Path:
    """A signing key pair in `tmp/keys` named as compose's secrets are, readable by uid 10001 only."""
    private, public = generate_keypair(tmp / "keys")
    keys = tmp / "secrets"
    keys.mkdir()
    shutil.copy(private, keys / "signing_key")
    shutil.copy(public, keys / "signing_pub")
    owned(keys)
    os.chmod(keys / "signing_key", 0o400)
    return keys


def smoke_builder(tmp: Path, keys: Path) -> Path:
    """Build muon-pt version 1 in the builder image, signed; returns the artifact directory."""
    out = owned(tmp / "built")
    (tmp / "in").mkdir()
    shutil.copy(ROOT / "models" / "muon-pt.h5", tmp / "in" / "muon-pt.h5")
    with mounted(f"localhost/fpgaas-builder:{TAG}") as (rootfs, config):
        cmd = container(
            rootfs,
            config,
            ["build", "/mnt/muon-pt.h5", "--name", "muon-pt", "--version", "1", "--out", "/models/muon-pt/1"],
            {"/models": (out, False), "/mnt": (tmp / "in", True), SECRETS: (keys, True)},
            {"FPGAAS_SIGNING_KEY_FILE": f"{SECRETS}/signing_key"},
        )
        start = time.monotonic()
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    artifact = out / "muon-pt" / "1"
    check(
        "builder: fpgaas build muon-pt.h5 (read-only root, uid 10001, key from /run/secrets)",
        run.returncode == 0 and (artifact / "manifest.json").is_file(),
        f"{time.monotonic() - start:.0f} s; {run.stdout.strip().splitlines()[0] if run.stdout else run.stderr[-400:]}",
    )
    engine = json.loads((artifact / "manifest.json").read_text()).get("engine")
    check("builder: sealed manifest names its engine", bool(engine), str(engine))
    signature = (
        json.loads((artifact / "manifest.sig").read_text()) if (artifact / "manifest.sig").is_file() else {}
    )
    trusted = TrustedKeys.load([keys / "signing_pub"])
    try:
        verify_artifact(artifact, trusted)
        verified = "verified on the host"
    except (ArtifactError, OSError) as exc:  # reported as the failure
        verified = f"{type(exc).__name__}: {exc}"
    check(
        "builder: manifest.sig is an ed25519 signature by the given key",
        signature.get("key_id") in trusted.ids and verified == "verified on the host",
        f"key {str(signature.get('key_id'))[:16]}…, {verified}",
    )
    return artifact


def forged_copies(artifact: Path, repository: Path) -> None:
    """muon-unsigned/1: the artifact without manifest.sig; muon-forged/1: its manifest edited
    (renamed) under the original signature."""
    unsigned = repository / "muon-unsigned" / "1"
    shutil.copytree(artifact, unsigned)
    (unsigned / "manifest.sig").unlink()
    forged = repository / "muon-forged" / "1"
    shutil.copytree(artifact, forged)
    manifest = forged / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"muon-pt"', '"muon-forged"'))


@contextmanager
def postgres(tmp: Path) -> Iterator[Path]:
    """The embedded PostgreSQL of `make serve` and the tests under `tmp`; yields its socket
    directory, opened to uid 10001 (the containers connect as the postgres role, trust auth on
    the socket only)."""
    tmp.mkdir(mode=0o755)
    for path in (tmp.parent, tmp):  # initdb runs as the postgres user, which must reach the cluster
        path.chmod(0o755)
    db = EmbeddedPostgres(tmp / "postgres")
    db.start()
    try:
        db.sockets.chmod(0o711)
        for sock in db.sockets.glob(".s.PGSQL.*"):
            if not sock.name.endswith(".lock"):
                sock.chmod(0o777)
        yield db.sockets
    finally:
        db.stop()


@contextmanager
def running(cmd: list[str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def predict(base: str, model: str, version: str | None = None) -> tuple[int, str]:
    body: dict[str, object] = {"model": model, "inputs": [MUON_ROW]}
    if version is not None:
        body["version"] = version
    return http(f"{base}/predict", body)


def smoke_grpc(target: str) -> None:
    import numpy as np
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(target)
    try:
        check("server: gRPC ServerReady", bool(client.is_server_ready()), target)
        meta = client.get_model_metadata("muon-pt", as_json=True)
        x = triton.InferInput(meta["inputs"][0]["name"], [1, len(MUON_ROW)], "FP32")
        x.set_data_from_numpy(np.asarray([MUON_ROW], dtype=np.float32))
        result = client.infer("muon-pt", [x])
        y = result.as_numpy(meta["outputs"][0]["name"])
        check(
            "server: gRPC ModelInfer muon-pt",
            y is not None and y.shape[0] == 1,
            str(y.tolist() if y is not None else y),
        )
    finally:
        client.close()


def smoke_services(tmp: Path, keys: Path, artifact: Path) -> None:
    repository = owned(tmp / "repository")
    shutil.copytree(artifact, repository / "muon-pt" / "1")
    forged_copies(artifact, repository)
    owned(repository)
    upload_dir = tmp / "in"
    token = secrets.token_urlsafe(24)
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        sockets = stack.enter_context(postgres(tmp / "db"))
        database = {"FPGAAS_DATABASE_URL": DATABASE_URL, "FPGAAS_STATE_DIR": "/tmp/state"}
        srootfs, sconfig = stack.enter_context(mounted(f"localhost/fpgaas-server:{TAG}"))
        slog = stack.enter_context(tempfile.TemporaryFile())
        server = stack.enter_context(
            running(
                container(
                    srootfs,
                    sconfig,
                    ["serve", "--host", "127.0.0.1", "--port", str(port)],
                    {"/models": (repository, False), SECRETS: (keys, True), SOCKETS: (sockets, False)},
                    {
                        **database,
                        "FPGAAS_GRPC_PORT": str(grpc_port),
                        "FPGAAS_TRUSTED_KEYS": f"{SECRETS}/signing_pub",
                        "FPGAAS_MANAGEMENT": "true",
                        "FPGAAS_ADMIN_TOKEN": token,
                        "FPGAAS_REPOSITORY_POLL_S": "1",
                    },
                ),
                slog,
            )
        )
        status = wait_ready(base, server, 180)
        check(
            "server: fpgaas serve (management, PostgreSQL, trusted key) started, GET /readyz",
            status == 200,
            f"{status}; {tail(slog)}" if status != 200 else "200",
        )
        status, body = http(f"{base}/healthz")
        check("server: GET /healthz", status == 200, body)
        status, body = predict(base, "muon-pt")
        check(
            "server: POST /predict muon-pt (signed version 1)",
            status == 200 and "outputs" in body,
            body[:200],
        )
        v1 = json.loads(body)["outputs"]
        status, body = http(f"{base}/models")
        refused = {
            Path(r["path"]).parent.name: r.get("untrusted")
            for r in json.loads(body).get("refused", [])
            if isinstance(r, dict)
        }
        check(
            "server: refuses the unsigned and the tampered copy (GET /models)",
            bool(refused.get("muon-unsigned")) and bool(refused.get("muon-forged")),
            "; ".join(f"{k}: {v}" for k, v in sorted(refused.items())) or body[:300],
        )
        status, body = predict(base, "muon-forged")
        check("server: POST /predict muon-forged is not served", status != 200, f"{status}")
        smoke_grpc(f"127.0.0.1:{grpc_port}")

        brootfs, bconfig = stack.enter_context(mounted(f"localhost/fpgaas-builder:{TAG}"))
        wlog = stack.enter_context(tempfile.TemporaryFile())
        worker = stack.enter_context(
            running(
                container(
                    brootfs,
                    bconfig,
                    ["worker"],
                    {"/models": (repository, False), SECRETS: (keys, True), SOCKETS: (sockets, False)},
                    {
                        **database,
                        "FPGAAS_MODEL_REPOSITORY": "/models",
                        "FPGAAS_SIGNING_KEY_FILE": f"{SECRETS}/signing_key",
                        "FPGAAS_WORKER_CONCURRENCY": "1",
                    },
                ),
                wlog,
            )
        )
        started = wait_for(wlog, b"building from", worker, 120)
        check(
            "worker: fpgaas worker connected to PostgreSQL (schema migrated), waiting for builds",
            started,
            line_with(wlog, b"building from") if started else tail(wlog),
        )
        crootfs, cconfig = stack.enter_context(mounted(f"localhost/fpgaas-client:{TAG}"))
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
        pyconfig = {**cconfig, "Entrypoint": ["/opt/fpgaas/bin/python"]}
        run = subprocess.run(
            container(crootfs, pyconfig, ["-c", script], {}), capture_output=True, text=True, timeout=120
        )
        check(
            "client: SDK predict through the server image",
            run.returncode == 0 and run.stdout.startswith("[["),
            (run.stdout or run.stderr[-300:]).strip(),
        )
        start = time.monotonic()
        run = subprocess.run(
            container(
                crootfs,
                cconfig,
                ["upload", "/mnt/muon-pt.h5", "--name", "muon-pt", "--version", "2", "--url", base, "--wait"],
                {"/mnt": (upload_dir, True)},
                {"FPGAAS_ADMIN_TOKEN": token},
            ),
            capture_output=True,
            text=True,
            timeout=900,
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("build ")]
        check(
            "worker: fpgaas upload --wait (client image, admin token) -> built by fpgaas worker (builder image)",
            run.returncode == 0 and len(lines) == 2,
            f"{time.monotonic() - start:.0f} s; "
            + (
                " / ".join(lines)
                if run.returncode == 0
                else f"exit {run.returncode}: {run.stderr[-300:]!r}; worker log {tail(wlog)}"
            ),
        )
        signed = repository / "muon-pt" / "2"
        try:
            verify_artifact(signed, TrustedKeys.of(load_public_key(keys / "signing_pub")))
            verified = "signature verified on the host"
        except (ArtifactError, OSError) as exc:  # reported as the failure
            verified = f"{type(exc).__name__}: {exc}"
        check("worker: version 2 is signed with the worker's key", verified.startswith("signature"), verified)
        deadline = time.monotonic() + 120
        status, body = 0, ""
        while time.monotonic() < deadline:
            status, body = predict(base, "muon-pt", "2")
            if status == 200:
                break
            time.sleep(1)
        check(
            "server: hot-loaded version 2, POST /predict muon-pt version 2",
            status == 200 and json.loads(body).get("version") == "2",
            body[:200],
        )
        check("server: version 2 answers as version 1 (same model)", json.loads(body)["outputs"] == v1, "")
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        check(
            "worker: exits cleanly on SIGTERM",
            worker.returncode == 0,
            f"exit {worker.returncode}; {tail(wlog, 200)}" if worker.returncode else "exit 0",
        )
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        check("server: exits cleanly on SIGTERM", server.returncode == 0, f"exit {server.returncode}")


def main() -> int:
    (ROOT / "build" / "images").mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=ROOT / "build" / "images") as name:
            tmp = Path(name)
            keys = make_keys(tmp)
            artifact = smoke_builder(tmp, keys)
            smoke_services(tmp, keys, artifact)
    except Failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
