"""Errors of the fixed-point engine (part of the tree in `fpgaas.kernels.errors`)."""

from __future__ import annotations

from fpgaas.kernels.errors import ArtifactError


class UnsupportedLayer(ArtifactError):
    """The hls4ml project uses a layer, type or construct the engine cannot reproduce bit-exactly.

    Raised at engine construction only; the caller serves the model with the compiled kernel
    library instead.
    """

    code = "unsupported_layer"
