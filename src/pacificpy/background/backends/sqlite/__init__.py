"""The SQLite backend: durable, at-least-once tasks in one file (SPEC §10.2).

``sql`` holds every statement, ``db`` the connections, ``queue`` the transport (rows of
waiting and leased messages), ``state`` the :class:`TaskState` (outcomes, dead letters,
idempotency keys, delivery counts), ``backend`` the backend with its in-process workers.
"""

from __future__ import annotations

from pacificpy.background.backends.sqlite.backend import SQLiteBackgroundBackend
from pacificpy.background.backends.sqlite.db import DatabaseError
from pacificpy.background.backends.sqlite.state import SQLiteTaskState

__all__ = ["DatabaseError", "SQLiteBackgroundBackend", "SQLiteTaskState"]
