"""Bearer-token checks shared by the web layer's routes (metrics, dashboard).

A token travels only in ``Authorization: Bearer <token>``: never in a query string, which
lands in access logs, browser history and proxies.
"""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request

from pacificpy.errors import ConfigurationError

__all__ = ["checked_token", "presented_token", "require_token"]


def checked_token(token: str | None, *, where: str) -> str | None:
    """``token`` if it can guard a route (None stays None: no token).

    Args:
        token: the configured token.
        where: the call that took it, for the message (``"include_metrics"``).

    Raises:
        ConfigurationError: ``token`` is not a string, is empty or blank, or has leading or
            trailing whitespace (no ``Authorization`` header could ever carry it).
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise ConfigurationError(f"{where}(token=...) must be a string, not {type(token).__name__}")
    if not token.strip():
        raise ConfigurationError(
            f"{where}(token=...) is empty or blank, which would let anyone in; pass a long "
            "random string, or token=None for no token"
        )
    if token != token.strip():
        raise ConfigurationError(
            f"{where}(token=...) has leading or trailing whitespace, which no Authorization "
            "header can carry; strip it"
        )
    return token


def presented_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``: None without the header, ``""`` for
    another scheme or an empty value (which never matches)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return ""


def require_token(request: Request, token: str | None) -> None:
    """Let the request through only with the right bearer token (no-op when ``token`` is None).

    Raises:
        HTTPException: 401 without an ``Authorization`` header, 403 with a wrong or empty
            token.
    """
    if token is None:
        return
    given = presented_token(request)
    if given is None:
        raise HTTPException(
            401,
            "This route needs a token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Compared as bytes in constant time (header values arrive decoded as Latin-1, so this
    # gives back the bytes sent); an empty token never matches, whatever is configured.
    if not given or not hmac.compare_digest(given.encode("latin-1", "replace"), token.encode()):
        raise HTTPException(403, "Wrong token")
