"""The images together: the server image on a private PostgreSQL serving the builder's signed
artifacts (the QKeras muon-pt and the HGQ2 net, and refusing forged copies), the builder image's
worker building an upload the client image sends, the server hot-loading it."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from fpgaas.kernels.artifact import load_artifact
from fpgaas.kernels.builds.postgres import EmbeddedPostgres
from fpgaas.kernels.twin import open_cpu_kernel
from smoke import TAG
from smoke.probes import check, free_port, http, line_with, tail, verified_on_host, wait_for, wait_ready
from smoke.rootfs import SECRETS, SOCKETS, Volumes, container, mounted, owned, started, stop

MUON_ROW = [0.8, 1.1, 1.3, 0.3, 0.5, 0.2, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1.8]
# Rows for the HGQ2 net (examples/hgq2/qdense.py: 6 inputs); the second has larger values.
HGQ2_ROWS = [[0.5, -1.25, 2.0, 0.75, -0.5, 1.5], [3.1, 0.0, -2.7, 9.5, 0.125, -0.875]]
DATABASE_URL = f"host={SOCKETS} dbname=fpgaas user=postgres"


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


def predict(base: str, model: str, version: str | None = None) -> tuple[int, str]:
    body: dict[str, object] = {"model": model, "inputs": [MUON_ROW]}
    if version is not None:
        body["version"] = version
    return http(f"{base}/predict", body)


def smoke_hgq2_served(base: str, artifact: Path) -> None:
    """The HGQ2 build, served by the server image, answers exactly what the artifact's CPU twin
    computes on the host for the same rows (the twin is bit-exact with the kernel)."""
    rows = np.array(HGQ2_ROWS, dtype=np.float32)
    status, body = http(f"{base}/predict", {"model": "hgq2", "inputs": rows.tolist()})
    served = np.array(json.loads(body)["outputs"], dtype=np.float32) if status == 200 else None
    twin = open_cpu_kernel(load_artifact(artifact))
    expected = np.empty((len(rows), twin.n_outputs), dtype=np.float32)
    twin.run_into(rows, expected)
    check(
        "server: POST /predict hgq2 (the HGQ2 build) answers the host twin's bits",
        served is not None and served.shape == expected.shape and bool(np.array_equal(served, expected)),
        body[:200],
    )


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


def smoke_services(tmp: Path, keys: Path, artifact: Path, hgq2: Path) -> None:
    repository = owned(tmp / "repository")
    shutil.copytree(artifact, repository / "muon-pt" / "1")
    shutil.copytree(hgq2, repository / "hgq2" / "1")
    forged_copies(artifact, repository)
    owned(repository)
    upload_dir = tmp / "in"
    token = secrets.token_urlsafe(24)
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        sockets = stack.enter_context(postgres(tmp / "db"))
        database = {"FPGAAS_DATABASE_URL": DATABASE_URL, "FPGAAS_STATE_DIR": "/tmp/state"}
        shared: Volumes = {"/models": (repository, False), SECRETS: (keys, True), SOCKETS: (sockets, False)}
        server, slog = started(
            stack,
            f"localhost/fpgaas-server:{TAG}",
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            shared,
            {
                **database,
                "FPGAAS_GRPC_PORT": str(grpc_port),
                "FPGAAS_TRUSTED_KEYS": f"{SECRETS}/signing_pub",
                "FPGAAS_MANAGEMENT": "true",
                "FPGAAS_ADMIN_TOKEN": token,
                "FPGAAS_REPOSITORY_POLL_S": "1",
            },
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
        smoke_hgq2_served(base, repository / "hgq2" / "1")
        smoke_grpc(f"127.0.0.1:{grpc_port}")

        worker, wlog = started(
            stack,
            f"localhost/fpgaas-builder:{TAG}",
            ["worker"],
            shared,
            {
                **database,
                "FPGAAS_MODEL_REPOSITORY": "/models",
                "FPGAAS_SIGNING_KEY_FILE": f"{SECRETS}/signing_key",
                "FPGAAS_WORKER_CONCURRENCY": "1",
            },
        )
        waiting = wait_for(wlog, b"building from", worker, 120)
        check(
            "worker: fpgaas worker connected to PostgreSQL (schema migrated), waiting for builds",
            waiting,
            line_with(wlog, b"building from") if waiting else tail(wlog),
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
        verified = verified_on_host(repository / "muon-pt" / "2", keys / "signing_pub")
        check(
            "worker: version 2 is signed with the worker's key", verified == "verified on the host", verified
        )
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
        status = stop(worker, 60)
        check(
            "worker: exits cleanly on SIGTERM",
            status == 0,
            f"exit {status}; {tail(wlog, 200)}" if status else "exit 0",
        )
        status = stop(server, 30)
        check("server: exits cleanly on SIGTERM", status == 0, f"exit {status}")
