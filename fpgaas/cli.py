"""`fpgaas build`, `fpgaas serve`, `fpgaas worker` and `fpgaas db`.

The builder and the service are imported only by the subcommand that needs them, so a
server host never loads TensorFlow and a build host never loads the web stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fpgaas.client import Client
    from fpgaas.service.settings import Settings

# QKeras models need Keras 2 (tf_keras); this must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _build(args: argparse.Namespace) -> int:
    from fpgaas.builder import build
    from fpgaas.builder.pipeline import DEFAULT_PART, DEFAULT_PLATFORM
    from fpgaas.kernels.errors import FpgaasError

    try:
        artifact = build(
            Path(args.model),
            name=args.name,
            out=Path(args.out),
            version=args.version,
            part=args.part or DEFAULT_PART,
            platform=args.platform or DEFAULT_PLATFORM,
        )
    except FpgaasError as exc:
        print(f"fpgaas build: {exc}", file=sys.stderr)
        return 1
    binaries = artifact.manifest.binaries
    print(f"built {artifact.manifest.name} v{artifact.manifest.version} into {artifact.path}")
    print(f"  emulation library: {binaries.emulation_library}")
    print(f"  xclbin: {binaries.xclbin or 'not built'} ({binaries.xclbin_status})")
    if binaries.xclbin is None and binaries.xclbin_command:
        print("  on a Vitis host, from a writable copy of the artifact root, run:")
        for command in binaries.xclbin_command:
            print(f"    {command}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fpgaas.service.server import serve
    from fpgaas.service.settings import Settings

    overrides: dict[str, object] = {}
    if args.repository is not None:
        overrides["model_repository"] = Path(args.repository)
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.device is not None:
        overrides["device"] = args.device
    if args.embedded:
        overrides["management"] = True
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"fpgaas serve: invalid settings: {problems}", file=sys.stderr)
        return 2
    if not args.embedded:
        serve(settings)
        return 0
    return _serve_embedded(settings)


def _serve_embedded(settings: Settings) -> int:
    """The embedded default: a private PostgreSQL (unless FPGAAS_DATABASE_URL), one local worker
    on the same repository, then the server; the worker, and the PostgreSQL if this started it,
    are stopped when the server ends."""
    import subprocess

    from fpgaas.kernels.builds.postgres import EmbeddedPostgres
    from fpgaas.kernels.signing import ensure_keypair
    from fpgaas.service.server import serve

    cluster = None
    if settings.database_url is None:
        cluster = EmbeddedPostgres(settings.state_dir / "postgres")
        if cluster.running():
            cluster = None  # someone else's (`fpgaas db start`): left running
        else:
            cluster.start()
    if settings.trusted_keys is None:
        # The embedded default pair: the worker signs with it, this server trusts it.
        ensure_keypair(settings.state_dir / "keys")
    env = {
        **os.environ,
        "FPGAAS_MODEL_REPOSITORY": str(settings.model_repository),
        "FPGAAS_STATE_DIR": str(settings.state_dir),
    }
    worker = subprocess.Popen([sys.executable, "-m", "fpgaas", "worker"], env=env)
    try:
        serve(settings)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if cluster is not None:
            cluster.stop()  # queued and finished builds stay in its data directory
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from fpgaas.builder.worker import WorkerSettings, run_worker

    overrides: dict[str, object] = {}
    if args.repository is not None:
        overrides["model_repository"] = Path(args.repository)
    if args.concurrency is not None:
        overrides["worker_concurrency"] = args.concurrency
    try:
        settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        print(f"fpgaas worker: invalid settings: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run_worker(settings))
    return 0


def _db(args: argparse.Namespace) -> int:
    from fpgaas.kernels.builds.postgres import EmbeddedPostgres

    state_dir = Path(args.state_dir or os.environ.get("FPGAAS_STATE_DIR", ".fpgaas"))
    cluster = EmbeddedPostgres(state_dir / "postgres")
    if args.action == "start":
        print(cluster.start())
    elif args.action == "stop":
        cluster.stop()
    else:
        print(cluster.conninfo if cluster.running() else "not running")
    return 0


def _client(args: argparse.Namespace) -> Client:
    from fpgaas.client import Client

    token = args.token or os.environ.get("FPGAAS_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(args.url, headers=headers, timeout=args.timeout)


def _upload(args: argparse.Namespace) -> int:
    import json

    from fpgaas.client import BuildFailed, FpgaasClientError

    options = {
        "version": args.version,
        "part": args.part,
        "platform": args.platform,
        "max_batch": args.max_batch,
        "reuse_factor": args.reuse_factor,
        "strategy": args.strategy,
        "sha256": args.sha256,
        "precision": json.loads(args.precision) if args.precision else None,
    }
    with _client(args) as client:
        try:
            build = client.upload(args.model, name=args.name, **options)
            print(f"build {build.id}: {build.info.name} version {build.info.version} {build.info.state}")
            if args.wait:
                info = build.wait(progress=True)
                seconds = sum(info.stage_seconds.values())
                print(f"build {info.id} succeeded in {seconds:.1f} s of stages on {info.worker}")
        except BuildFailed as exc:
            print(f"fpgaas upload: {exc}", file=sys.stderr)
            return 1
        except (FpgaasClientError, ValueError) as exc:
            print(f"fpgaas upload: {exc}", file=sys.stderr)
            return 2
    return 0


def _builds(args: argparse.Namespace) -> int:
    from fpgaas.client import FpgaasClientError

    with _client(args) as client:
        try:
            builds = client.builds(args.name)
        except FpgaasClientError as exc:
            print(f"fpgaas builds: {exc}", file=sys.stderr)
            return 2
    print(f"{'ID':>5}  {'MODEL':<20} {'VERSION':<8} {'STATE':<10} {'STAGE':<22} {'WORKER':<16} ERROR")
    for b in builds:
        i = b.info
        print(
            f"{i.id:>5}  {i.name:<20} {i.version:<8} {i.state:<10} {(i.stage or '-'):<22} "
            f"{(i.worker or '-'):<16} {i.error or ''}"
        )
    return 0


def _add_client_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default=os.environ.get("FPGAAS_URL", "http://127.0.0.1:8000"), help="server (FPGAAS_URL)"
    )
    p.add_argument("--token", default=None, help="admin bearer token (default: FPGAAS_ADMIN_TOKEN)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpgaas", description="FPGA-as-a-Service for hls4ml models")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="convert a Keras/QKeras model into an fpgaas artifact")
    b.add_argument("model", help="Keras 2 HDF5 model file (.h5); it is never executed")
    b.add_argument("--name", required=True, help="model name served by fpgaas")
    b.add_argument("--out", required=True, help="artifact directory to create (must not exist)")
    b.add_argument("--version", default="1")
    b.add_argument("--part", default=None, help="FPGA part (default: Alveo U250)")
    b.add_argument("--platform", default=None, help="Vitis platform for v++")
    b.set_defaults(func=_build)

    s = sub.add_parser("serve", help="serve a model repository over HTTP")
    s.add_argument("--repository", default=None, help="model repository (FPGAAS_MODEL_REPOSITORY)")
    s.add_argument("--host", default=None, help="bind address (FPGAAS_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (PORT or FPGAAS_PORT, default 8000)")
    s.add_argument("--device", default=None, help="device kind: emulated or pynq (FPGAAS_DEVICE)")
    s.add_argument(
        "--embedded",
        action="store_true",
        help="with the management API, the embedded PostgreSQL (unless FPGAAS_DATABASE_URL) and one local worker",
    )
    s.set_defaults(func=_serve)

    w = sub.add_parser("worker", help="build uploaded models from the build queue")
    w.add_argument("--repository", default=None, help="artifact store (FPGAAS_MODEL_REPOSITORY)")
    w.add_argument("--concurrency", type=int, default=None, help="builds at once (FPGAAS_WORKER_CONCURRENCY)")
    w.set_defaults(func=_worker)

    d = sub.add_parser("db", help="the embedded PostgreSQL under the state dir")
    d.add_argument("action", choices=["start", "stop", "status"])
    d.add_argument("--state-dir", default=None, help="state directory (FPGAAS_STATE_DIR, default .fpgaas)")
    d.set_defaults(func=_db)

    u = sub.add_parser("upload", help="upload a model to a server and queue its build")
    u.add_argument("model", help="Keras 2 / QKeras .h5 or Keras 3 .keras file")
    u.add_argument("--name", required=True, help="model name")
    u.add_argument("--version", default=None, help="default: the next integer")
    u.add_argument("--part", default=None)
    u.add_argument("--platform", default=None)
    u.add_argument("--max-batch", type=int, default=None, help="rows per device call when served")
    u.add_argument("--reuse-factor", type=int, default=None)
    u.add_argument("--strategy", choices=["Latency", "Resource"], default=None)
    u.add_argument("--precision", default=None, help='per-layer JSON, e.g. \'{"dense_1": "fixed<18,8>"}\'')
    u.add_argument("--sha256", default=None, help="the server checks the upload against it")
    u.add_argument("--wait", action="store_true", help="follow the build to the end, with a progress bar")
    _add_client_arguments(u)
    u.set_defaults(func=_upload)

    bl = sub.add_parser("builds", help="list a server's recent builds")
    bl.add_argument("--name", default=None, help="only this model's")
    _add_client_arguments(bl)
    bl.set_defaults(func=_builds)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request of `fpgaas upload`
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
