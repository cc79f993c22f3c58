"""Errors of the build API, in the one tree rooted at `fpgaas.kernels.errors.FpgaasError`."""

from __future__ import annotations

from fpgaas.kernels.errors import FpgaasError


class Conflict(FpgaasError):
    """The (name, version) exists already or is being built."""

    status_code = 409
    code = "conflict"


class BuildNotFound(FpgaasError):
    status_code = 404
    code = "build_not_found"


class Unauthorized(FpgaasError):
    """No bearer token was sent."""

    status_code = 401
    code = "unauthorized"


class Forbidden(FpgaasError):
    """A bearer token was sent but it is not the configured one."""

    status_code = 403
    code = "forbidden"
