"""Stage 1: read a model file's architecture without executing anything it contains.

The checks live in `fpgaas.kernels.model_file` (shared with the server, which validates uploads
with them before queueing): a Keras 2 / QKeras `.h5` is read with h5py, a Keras 3 `.keras` as a
zip plus JSON; no Keras object is instantiated here. Every object in the architecture must be of
an allow-listed class from an allow-listed module; `Lambda`/`TFOpLambda` layers, serialized
functions, custom objects and anything else are refused with `UnsafeModel` naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpgaas.kernels.model_file import FORMAT_H5, FORMAT_KERAS, inspect_model_file

__all__ = ["FORMAT_H5", "FORMAT_KERAS", "ScannedModel", "scan_model"]


@dataclass(frozen=True)
class ScannedModel:
    """A model file whose architecture passed the allow-list scan.

    `format` is "h5" (Keras 2 / QKeras) or "keras" (Keras 3); `architecture` the decoded model
    config; `layers` the (class name, layer name) pairs in file order. The file is only read.
    """

    path: Path
    architecture: dict[str, Any]
    layers: tuple[tuple[str, str], ...]
    format: str = FORMAT_H5


def scan_model(path: Path) -> ScannedModel:
    """Read `path`'s architecture and refuse anything that could run code.

    Raises `BadInput` for a missing, corrupt, truncated or unknown file and `UnsafeModel` naming
    the offending layer or archive member (see `fpgaas.kernels.model_file`).
    """
    summary = inspect_model_file(Path(path))
    return ScannedModel(
        path=summary.path, architecture=summary.architecture, layers=summary.layers, format=summary.format
    )
