"""Bearer tokens: the one comparison every front (HTTP management routes, gRPC) uses.

Tokens are compared in constant time (`hmac.compare_digest`), so timing does not leak how much
of a guess was right. No configured token means open: `Settings` refuses to start management
without one on a non-loopback address, so that is only ever the case on loopback.
"""

from __future__ import annotations

import hmac

from fpgaas.kernels.builds.errors import Forbidden, Unauthorized
from fpgaas.service.settings import Settings


def admin_token_ok(settings: Settings, presented: str | None) -> bool:
    """Whether `presented` (the bearer token sent, None if none) may use the management routes."""
    return _token_ok(settings.admin_token.get_secret_value() if settings.admin_token else None, presented)


def check_admin(settings: Settings, presented: str | None) -> None:
    """The management rule, for every front: Unauthorized (401; gRPC UNAUTHENTICATED) when no
    bearer token was sent, Forbidden (403; gRPC PERMISSION_DENIED) when it is not the admin token."""
    if admin_token_ok(settings, presented):
        return
    if presented is None:
        raise Unauthorized("this needs Authorization: Bearer <FPGAAS_ADMIN_TOKEN>", field="Authorization")
    raise Forbidden("the bearer token is not the admin token", field="Authorization")


def inference_token_ok(settings: Settings, presented: str | None) -> bool:
    """Whether `presented` may use the inference routes (open when no inference token is set)."""
    expected = settings.inference_token.get_secret_value() if settings.inference_token else None
    return _token_ok(expected, presented)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, None when there is none."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _token_ok(expected: str | None, presented: str | None) -> bool:
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
