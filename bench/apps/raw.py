"""The ceiling: a bare ASGI callable that reads and parses the body, and enqueues nothing."""

from __future__ import annotations

import json
from typing import Any

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with ``{"ok": true, "user_id": ...}``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    data = json.loads(body)
    out = json.dumps({"ok": True, "user_id": data["user_id"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(out)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": out})
