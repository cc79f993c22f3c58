"""Stage 6: copy the source model in, describe the build in the manifest, seal, sign and publish.

A build happens in a staging directory next to the destination; `publish` renames it into place
only after `fpgaas.kernels.artifact.write_manifest` sealed it, so a failed build leaves no half-written
artifact at the destination (its logs are kept next to it, see `keep_logs`).
"""

from __future__ import annotations

import platform as host_platform
import shutil
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from fpgaas.builder.convert import BACKEND, IO_TYPE
from fpgaas.builder.engine import EngineChoice
from fpgaas.builder.kernel import KERNEL_NAME, KernelSource
from fpgaas.builder.synthesize import VPP, XclbinResult
from fpgaas.builder.tools import version_line
from fpgaas.kernels.artifact import MANIFEST_NAME, Binaries, LayerTypes, Manifest, write_manifest
from fpgaas.kernels.errors import ArtifactError
from fpgaas.kernels.signing import sign_manifest
from fpgaas.kernels.xclbin import EMULATION_XCLBIN, write_emulation_xclbin


def staging_dir(out: Path) -> Path:
    """A fresh empty directory beside `out` (same file system, so the final rename is atomic)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "an artifact" if (out / MANIFEST_NAME).exists() else "files"
        raise ArtifactError(f"{out} already holds {what}; artifacts are immutable, choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> Path:
    """Move the sealed `staging` directory to `out` (an empty `out` is replaced)."""
    if out.is_dir():
        out.rmdir()  # only an empty directory reaches here; rmdir refuses anything else
    staging.rename(out)
    return out


def keep_logs(staging: Path, out: Path) -> Path:
    """After a failure: move staging/logs to `<out>.build-logs` beside `out`, drop the rest."""
    kept = out.parent / f"{out.name}.build-logs"
    shutil.rmtree(kept, ignore_errors=True)
    if (staging / "logs").is_dir():
        (staging / "logs").rename(kept)
    shutil.rmtree(staging, ignore_errors=True)
    return kept


def copy_source_model(model_path: Path, root: Path) -> Path:
    """Copy the uploaded model to `root`/model/ (kept as uploaded; never executed)."""
    target = root / "model" / model_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, target)
    return target


def layer_types(graph: Any) -> tuple[LayerTypes, ...]:
    """The C++ types hls4ml generated, per layer: role (result, weight, bias, accum, ...) -> type."""
    layers = []
    for layer in graph.get_layers():
        types = {
            role.removesuffix("_t"): str(t.precision.definition_cpp())
            for role, t in sorted(layer.types.items())
        }
        layers.append(LayerTypes(name=str(layer.name), class_name=str(layer.class_name), types=types))
    return tuple(layers)


def toolchain_versions() -> dict[str, str]:
    """Versions of everything that shaped the artifact (v++ is "absent" when not on PATH)."""
    import hls4ml

    try:
        fpgaas_version = metadata.version("fpgaas")
    except metadata.PackageNotFoundError:
        fpgaas_version = "unknown"
    return {
        "hls4ml": str(hls4ml.__version__),
        "g++": version_line("g++"),
        "v++": version_line(VPP),
        "python": host_platform.python_version(),
        "fpgaas": fpgaas_version,
    }


def seal(
    root: Path,
    *,
    name: str,
    version: str,
    graph: Any,
    kernel: KernelSource,
    source_model: Path,
    library: Path,
    xclbin: XclbinResult,
    engine: EngineChoice,
    part: str,
    platform: str,
    signing_key: Path,
) -> Manifest:
    """Write the emulation xclbin and manifest.json (hashing every file), make the tree read-only
    and sign the manifest with the ed25519 key in `signing_key` (manifest.sig)."""
    # The emulated PYNQ card loads this stand-in through pynq's own parser; a Vitis host's real
    # xclbin (binaries.xclbin) is what a card loads.
    write_emulation_xclbin(
        root / EMULATION_XCLBIN,
        kernel_name=KERNEL_NAME,
        n_inputs=kernel.input.width,
        n_outputs=kernel.output.width,
        emulation_library="../" + library.relative_to(root).as_posix(),
    )
    manifest = Manifest(
        name=name,
        version=version,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        kernel_name=KERNEL_NAME,
        project_name=str(graph.config.get_project_name()),
        inputs=(kernel.input,),
        outputs=(kernel.output,),
        layers=layer_types(graph),
        part=part,
        platform=platform,
        backend=BACKEND,
        io_type=IO_TYPE,
        source_model=source_model.relative_to(root).as_posix(),
        toolchain=toolchain_versions(),
        binaries=Binaries(
            emulation_library=library.relative_to(root).as_posix(),
            xclbin=xclbin.xclbin,
            xclbin_status=xclbin.status,
            xclbin_command=list(xclbin.commands),
            awsxclbin=xclbin.awsxclbin,
            agfi_id=xclbin.agfi_id,
        ),
        engine=engine.engine,
        engine_note=engine.note,
    )
    sealed = write_manifest(root, manifest)
    sign_manifest(root, signing_key)
    return sealed
