"""One holder of a Redis URL's clients, with one fork strategy.

The sync client (redis-py, a thread-safe pool) belongs to the process that made it: a
forked child (a Celery prefork pool process, an ARQ worker started by the supervisor)
sees a different pid and makes its own, never sharing the parent's sockets. Async clients
are one per event loop (``redis.asyncio`` connections are bound to their loop), dropped
with their loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RedisClients", "lua"]


@functools.cache
def lua(name: str) -> str:
    """The text of ``name``.lua, a script shipped next to this module (read once)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


class RedisClients:
    """The sync client of this process and the async client of each event loop.

    Args:
        url: the Redis URL.
        factory: makes the sync client (default ``redis.Redis.from_url(url)``).
    """

    def __init__(self, url: str, factory: Callable[[], Any] | None = None) -> None:
        self.url = url
        self._factory = factory
        self._sync: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: dict[str, Any] = {}
        self._ascripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def sync(self) -> Any:  # redis-py's sync/async union types defeat mypy
        """This process's sync client (a forked child makes its own)."""
        client = self._sync
        pid = os.getpid()
        if client is None or self._pid != pid:
            with self._lock:
                if self._sync is None or self._pid != pid:
                    if self._factory is not None:
                        self._sync = self._factory()
                    else:
                        import redis

                        self._sync = redis.Redis.from_url(self.url)
                    self._pid = pid
                    self._scripts = {}
                client = self._sync
        return client

    def aio(self) -> Any:
        """The async client of the running event loop."""
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._aio.get(loop)
        if client is None:
            client = self._aio[loop] = aioredis.Redis.from_url(self.url)
        return client

    def script(self, name: str) -> Any:
        """``name``.lua registered with the sync client (redis-py loads it on first use,
        and again after a ``SCRIPT FLUSH`` or a restart)."""
        client = self.sync
        found = self._scripts.get(name)
        if found is None or found.registered_client is not client:
            found = self._scripts[name] = client.register_script(lua(name))
        return found

    def ascript(self, name: str) -> Any:
        """``name``.lua registered with the running loop's async client."""
        client = self.aio()
        scripts = self._ascripts.setdefault(asyncio.get_running_loop(), {})
        found = scripts.get(name)
        if found is None or found.registered_client is not client:
            found = scripts[name] = client.register_script(lua(name))
        return found

    async def aclose(self) -> None:
        """Close the running loop's async client."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = self._aio.pop(loop, None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close this process's sync client; async clients go with their loops."""
        with self._lock:
            client, self._sync = self._sync, None
            mine = self._pid == os.getpid()
        if client is not None and mine:
            client.close()
