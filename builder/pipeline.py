"""The build pipeline: load -> convert -> kernel -> compile -> synthesize -> package.

The engine stage picks the CPU implementation that serves without a card (see builder.engine).
`build` runs the stages in a staging directory beside `out` and renames it to `out` only once the
manifest sealed it. Not thread-safe for the same `out`; separate outputs may build concurrently.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from fpgaas.builder import package
from fpgaas.builder.compile import compile_emulation
from fpgaas.builder.convert import DEFAULT_PART, ConvertOptions, convert
from fpgaas.builder.engine import choose_engine
from fpgaas.builder.kernel import write_kernel
from fpgaas.builder.load import scan_model
from fpgaas.builder.settings import BuilderSettings
from fpgaas.builder.synthesize import DEFAULT_PLATFORM, resolve_platform, synthesize
from fpgaas.kernels.artifact import Artifact
from fpgaas.kernels.errors import BadInput, BuildError
from fpgaas.kernels.signing import TrustedKeys, load_private_key, verify_artifact
from fpgaas.kernels.twin import KernelLibrary

_LOG = logging.getLogger("fpgaas.builder")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

LogFn = Callable[[str], None]


def build(
    model_path: Path,
    *,
    name: str,
    out: Path,
    version: str = "1",
    part: str = DEFAULT_PART,
    platform: str = DEFAULT_PLATFORM,
    log: LogFn | None = None,
    signing_key: Path | None = None,
    reuse_factor: int = 1,
    strategy: str = "Latency",
    precision: Mapping[str, str] | None = None,
) -> Artifact:
    """Build the artifact for the Keras 2 / QKeras `.h5` at `model_path` into the new directory `out`.

    `reuse_factor`, `strategy` and `precision` (per-layer overrides, see `ConvertOptions`) go to
    hls4ml. `log` receives one line per stage (default: the "fpgaas.builder" logger). The manifest is signed
    with the ed25519 private key file `signing_key` (default: `BuilderSettings().signing_key()`,
    i.e. FPGAAS_SIGNING_KEY_FILE or the embedded default pair). Raises `BadInput` for
    an unreadable model or bad name, `UnsafeModel` for a model that would run code, `ToolMissing`
    without g++, `BuildError` (naming the log, kept in `<out>.build-logs/`) when a tool fails, and
    `ArtifactError` when `out` already holds files.
    """
    say = log or _LOG.info
    for field, value in (("name", name), ("version", version)):
        if not _NAME_RE.match(value):
            raise BadInput(
                f"{field} {value!r} must be 1-64 characters of letters, digits, '.', '_' or '-'", field=field
            )
    # Absolute paths: hls4ml's compile() changes the working directory of the whole process.
    model_path, out = Path(model_path).absolute(), Path(out).absolute()
    key = Path(signing_key if signing_key is not None else BuilderSettings().signing_key()).absolute()
    signer = load_private_key(key)  # a missing or wrong key fails now, not after an hour of v++
    platform = resolve_platform(platform)  # "aws-f1" -> the F1 platform; F2 refused before any work
    afi_target = BuilderSettings().afi_target()
    if not model_path.is_file():
        raise BadInput(f"model file {model_path} does not exist", field="model")
    root = package.staging_dir(out)
    logs = root / "logs"
    logs.mkdir()
    try:
        with _stage(say, "load"):
            source = package.copy_source_model(model_path, root)
            scanned = scan_model(source)
        with _stage(say, "convert (hls4ml)"):
            graph = convert(
                scanned,
                root / "hls",
                ConvertOptions(
                    part=part,
                    reuse_factor=reuse_factor,
                    strategy=strategy,
                    layer_precision=dict(precision or {}),
                ),
                log=logs / "hls4ml.log",
            )
        with _stage(say, "kernel top"):
            kernel = write_kernel(graph, root / "hls")
        project = str(graph.config.get_project_name())
        with _stage(say, "compile (g++)"):
            library = compile_emulation(root, kernel.source, project, log=logs / "gxx.log")
        with _stage(say, "choose the CPU engine"):
            twin = KernelLibrary(library, kernel.input.width, kernel.output.width)
            engine = choose_engine(root / "hls", project, twin)
            say(f"engine: {engine.engine} ({engine.note})")
        with _stage(say, "synthesize (v++)"):
            xclbin = synthesize(
                root, name=name, platform=platform, project=project, logs=logs, afi_target=afi_target
            )
        if xclbin.xclbin is None:
            say(f"no xclbin: {xclbin.status}; on a Vitis host run, from a copy of the artifact:")
            for line in xclbin.commands:
                say(f"  {line}")
        with _stage(say, "package"):
            package.seal(
                root,
                name=name,
                version=version,
                graph=graph,
                kernel=kernel,
                source_model=source,
                library=library,
                xclbin=xclbin,
                engine=engine,
                part=part,
                platform=platform,
                signing_key=key,
            )
            package.publish(root, out)
    except BuildError as exc:
        kept = package.keep_logs(root, out)
        if exc.log is None or type(exc) is not BuildError:
            raise
        # The log named by the stage lived in the staging directory; point at where it now is.
        moved = kept / Path(exc.log).relative_to(logs)
        raise BuildError(exc.message.removesuffix(f" (log: {exc.log})"), log=str(moved)) from exc
    except BaseException:
        package.keep_logs(root, out)
        raise
    say(f"artifact {name} v{version} written to {out}")
    return verify_artifact(out, TrustedKeys.of(signer.public_key()))


@contextmanager
def _stage(say: LogFn, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    say(f"{stage} ...")
    yield
    say(f"{stage} done in {time.perf_counter() - start:.1f} s")
