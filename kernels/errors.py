"""The one exception tree of fpgaas.

    FpgaasError                 500  base of everything fpgaas raises on purpose
    ├── BadInput                400  a request or file a user sent is malformed
    │   ├── PayloadTooLarge     413  the body is over the configured size
    │   └── UnsupportedMediaType 415 a Content-Type or Content-Encoding fpgaas does not read
    ├── ModelNotFound           404  no model (or version) of that name is loaded
    ├── ArtifactError           500  an artifact cannot be read or is inconsistent
    │   ├── ArtifactUntrusted        not signed by a trusted key, or files differ from the signed manifest
    │   │   └── ArtifactIntegrityError   a file's sha256 differs from the manifest (or is missing/extra)
    │   └── UnsupportedLayer         the fixed-point engine cannot run a layer (fpgaas.kernels.engine.errors)
    ├── UnsafeModel             400  a model file would need code execution to load
    ├── BuildError              500  a builder stage failed (names the log)
    │   └── ToolMissing         500  an external tool (v++, g++, vitis_hls) is not on PATH
    ├── DeviceError             503  a device failed a call; the caller may retry
    │   └── DeviceTimeout       503  a kernel did not finish in time
    ├── Overloaded              503  the queue is full; comes with a retry delay
    └── NotReady                503  the server or model is not ready to serve

Each class carries the HTTP status it maps to, so the service translates it in one place.
"""

from __future__ import annotations


class FpgaasError(Exception):
    """Base of all deliberate fpgaas errors."""

    status_code: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadInput(FpgaasError):
    status_code = 400
    code = "bad_input"


class PayloadTooLarge(BadInput):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(BadInput):
    status_code = 415
    code = "unsupported_media_type"


class ModelNotFound(FpgaasError):
    status_code = 404
    code = "model_not_found"


class ArtifactError(FpgaasError):
    code = "artifact_error"


class ArtifactUntrusted(ArtifactError):
    """An artifact fpgaas will not open: `reason` is one of `UNTRUSTED_REASONS`."""

    code = "artifact_untrusted"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Why an artifact is untrusted (ArtifactUntrusted.reason).
UNTRUSTED_REASONS = (
    "no_trusted_keys",  # the server trusts no key at all
    "unsigned",  # no manifest.sig
    "malformed_signature",  # manifest.sig is not the signature format
    "unknown_key",  # signed by a key the server does not trust
    "bad_signature",  # the signature does not match manifest.json
    "hash_mismatch",  # a file differs from its sha256 in the signed manifest
    "missing_file",  # a file the manifest lists is absent
    "extra_file",  # a file the manifest does not list is present
)


class ArtifactIntegrityError(ArtifactUntrusted):
    code = "artifact_integrity"

    def __init__(self, message: str, *, reason: str = "hash_mismatch") -> None:
        super().__init__(message, reason=reason)


class UnsafeModel(FpgaasError):
    status_code = 400
    code = "unsafe_model"


class BuildError(FpgaasError):
    code = "build_failed"

    def __init__(self, message: str, *, log: str | None = None) -> None:
        super().__init__(message if log is None else f"{message} (log: {log})")
        self.log = log


class ToolMissing(BuildError):
    code = "tool_missing"

    def __init__(self, tool: str, purpose: str) -> None:
        super().__init__(f"{tool} is not on PATH: it is needed to {purpose}")
        self.tool = tool


class DeviceError(FpgaasError):
    status_code = 503
    code = "device_error"


class DeviceTimeout(DeviceError):
    code = "device_timeout"


class Overloaded(FpgaasError):
    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(FpgaasError):
    status_code = 503
    code = "not_ready"
