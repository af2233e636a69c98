"""Bearer-token checks shared by the metrics and dashboard routes."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request

__all__ = ["presented_token", "require_token"]


def presented_token(request: Request, *, allow_query: bool = False) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (or ``?token=`` if allowed)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""
    if allow_query:
        return request.query_params.get("token")
    return None


def require_token(request: Request, token: str | None, *, allow_query: bool = False) -> None:
    """Let the request through only with the right token (no-op when ``token`` is None).

    Raises:
        HTTPException: 401 without a token, 403 with a wrong one.
    """
    if token is None:
        return
    given = presented_token(request, allow_query=allow_query)
    if given is None:
        raise HTTPException(
            401,
            "This route needs a token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(403, "Wrong token")
