"""`fpgaas build` and `fpgaas serve`.

The builder and the service are imported only by the subcommand that needs them, so a
server host never loads TensorFlow and a build host never loads the web stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

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
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"fpgaas serve: invalid settings: {problems}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


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
    s.set_defaults(func=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
