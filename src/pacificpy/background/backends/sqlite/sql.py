"""Every SQL statement of the SQLite backend, in one place.

The schema is one file: the queue (``tasks``: one row per message waiting, delayed or
leased), and the task state (``outcomes``, ``dead_letters``, ``idem_keys``,
``deliveries``, ``workers``: the worker registry; ``flow_slots`` and ``flow_starts``:
concurrency leases and rate windows). Times are Unix seconds (``REAL``),
so every process on the machine agrees on them. A SQL state for another database
(PostgreSQL) would keep this shape and change the dialect: ``BEGIN IMMEDIATE`` and
``INSERT OR IGNORE`` are SQLite's; the rest is plain SQL.

A feature that needs rows of its own adds its table to :data:`SCHEMA` with
``CREATE TABLE IF NOT EXISTS`` (run at every open, so existing files get it too) and its
statements below; :data:`SCHEMA_VERSION` is bumped only for a change an older PacificPy
could not read.
"""

from __future__ import annotations

#: Bumped when the schema changes; a file written by a newer version is refused.
SCHEMA_VERSION = 1

#: Run once per file, in one transaction (``auto_vacuum`` must precede the first table).
SCHEMA = """
CREATE TABLE IF NOT EXISTS pacificpy_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pacificpy_tasks (
    task_id TEXT PRIMARY KEY,
    task_name TEXT NOT NULL,
    queue TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    data BLOB NOT NULL,
    run_at REAL NOT NULL,
    owner TEXT,
    lease_until REAL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pacificpy_tasks_waiting
    ON pacificpy_tasks (run_at) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS pacificpy_tasks_leased
    ON pacificpy_tasks (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS pacificpy_outcomes (
    task_id TEXT PRIMARY KEY,
    outcome BLOB NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pacificpy_outcomes_expires ON pacificpy_outcomes (expires);
CREATE TABLE IF NOT EXISTS pacificpy_dead_letters (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    failed_at REAL NOT NULL,
    letter BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pacificpy_dead_letters_failed
    ON pacificpy_dead_letters (failed_at, seq);
CREATE TABLE IF NOT EXISTS pacificpy_idem_keys (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pacificpy_idem_keys_expires ON pacificpy_idem_keys (expires);
CREATE TABLE IF NOT EXISTS pacificpy_workers (
    id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pacificpy_deliveries (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    count INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pacificpy_tombstones (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pacificpy_tombstones_expires ON pacificpy_tombstones (expires);
CREATE TABLE IF NOT EXISTS pacificpy_schedules (
    name TEXT PRIMARY KEY,
    slot REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pacificpy_flow_slots (
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (name, holder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pacificpy_flow_starts (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    at REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pacificpy_flow_starts_name ON pacificpy_flow_starts (name, at);
"""

#: Run at every open after :data:`SCHEMA` (an earlier file gets the tasks' priority
#: column first): the waiting rows with a priority, highest first. Rows of priority 0
#: (most) are not in it, so a task without a priority writes no extra index entry.
PRIORITY_INDEX = (
    "CREATE INDEX IF NOT EXISTS pacificpy_tasks_prioritized "
    "ON pacificpy_tasks (priority DESC, run_at) WHERE owner IS NULL AND priority > 0"
)
TASK_COLUMNS = "SELECT name FROM pragma_table_info('pacificpy_tasks')"
ADD_PRIORITY = "ALTER TABLE pacificpy_tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"

GET_VERSION = "SELECT value FROM pacificpy_meta WHERE name = 'schema_version'"
SET_VERSION = "INSERT OR IGNORE INTO pacificpy_meta (name, value) VALUES ('schema_version', ?)"

# -- the queue (transport) -------------------------------------------------------------------
PUBLISH = (
    "INSERT INTO pacificpy_tasks (task_id, task_name, queue, attempt, data, run_at, priority) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: Priorities above 0, highest first: ``priority IN`` this list walks the prioritized
#: index one priority at a time, each a seek to its due rows (no sort).
_PRIORITIES = ", ".join(str(p) for p in range(9, 0, -1))
#: The ready rows with a priority (of some queues), highest first, then oldest due.
PRIORITIZED_IN = (
    "SELECT task_id FROM pacificpy_tasks INDEXED BY pacificpy_tasks_prioritized "
    "WHERE owner IS NULL AND priority > 0 "
    f"AND priority IN ({_PRIORITIES}) AND queue IN ({{queues}}) AND run_at <= ? "
    "ORDER BY priority DESC, run_at LIMIT ?"
)
PRIORITIZED_ANY = (
    "SELECT task_id FROM pacificpy_tasks INDEXED BY pacificpy_tasks_prioritized "
    "WHERE owner IS NULL AND priority > 0 "
    f"AND priority IN ({_PRIORITIES}) AND run_at <= ? ORDER BY priority DESC, run_at LIMIT ?"
)
#: The ready rows of some queues without a priority, oldest due first (taken after the
#: prioritized ones); ``{queues}`` is ``?, ?, ...``.
READY_IN = (
    "SELECT task_id FROM pacificpy_tasks WHERE owner IS NULL AND queue IN ({queues}) "
    "AND run_at <= ? AND priority = 0 ORDER BY run_at LIMIT ?"
)
READY_ANY = (
    "SELECT task_id FROM pacificpy_tasks WHERE owner IS NULL AND run_at <= ? "
    "AND priority = 0 ORDER BY run_at LIMIT ?"
)
ANY_DUE = "SELECT 1 FROM pacificpy_tasks WHERE owner IS NULL AND run_at <= ? LIMIT 1"
ANY_DUE_IN = (
    "SELECT 1 FROM pacificpy_tasks WHERE owner IS NULL AND queue IN ({queues}) "
    "AND run_at <= ? LIMIT 1"
)
#: Lease the rows just selected (inside the same ``BEGIN IMMEDIATE``).
LEASE = (
    "UPDATE pacificpy_tasks SET owner = ?, lease_until = ?, deliveries = deliveries + 1 "
    "WHERE task_id IN ({ids}) "
    "RETURNING task_id, task_name, queue, attempt, data, deliveries, priority"
)
ACK = "DELETE FROM pacificpy_tasks WHERE task_id = ? AND owner = ?"
#: A retry: the same row becomes the next attempt, waiting again, no slot held.
RESCHEDULE = (
    "UPDATE pacificpy_tasks SET attempt = ?, data = ?, run_at = ?, owner = NULL, "
    "lease_until = NULL, deliveries = 0 WHERE task_id = ? AND owner = ?"
)
RENEW = "UPDATE pacificpy_tasks SET lease_until = ? WHERE owner = ?"
#: Give back rows leased but never started (shutdown), without counting a delivery.
UNLEASE_UNSTARTED = (
    "UPDATE pacificpy_tasks SET owner = NULL, lease_until = NULL, "
    "deliveries = max(deliveries - 1, 0) WHERE task_id = ? AND owner = ?"
)
UNLEASE_ALL = "UPDATE pacificpy_tasks SET owner = NULL, lease_until = NULL WHERE owner = ?"
#: Leases whose holder stopped renewing them: the rows wait again (their delivery counted).
EXPIRE_LEASES = (
    "UPDATE pacificpy_tasks SET owner = NULL, lease_until = NULL "
    "WHERE owner IS NOT NULL AND lease_until < ?"
)
QUEUE_LENGTH = "SELECT count(*) FROM pacificpy_tasks WHERE queue = ? AND owner IS NULL"
#: When the next waiting row (of some queues) is due.
NEXT_DUE = "SELECT min(run_at) FROM pacificpy_tasks WHERE owner IS NULL"
NEXT_DUE_IN = (
    "SELECT run_at FROM pacificpy_tasks WHERE owner IS NULL AND queue IN ({queues}) "
    "ORDER BY run_at LIMIT 1"
)
#: Changes when another connection commits: a cheap "has anything happened?".
DATA_VERSION = "PRAGMA data_version"
ROW_OF_TASK = "SELECT owner FROM pacificpy_tasks WHERE task_id = ?"
PENDING = "SELECT count(*) FROM pacificpy_tasks"
#: When the oldest row of a queue that is due and no process holds became due.
OLDEST_DUE = (
    "SELECT run_at FROM pacificpy_tasks WHERE owner IS NULL AND run_at <= ? AND queue = ? "
    "ORDER BY run_at LIMIT 1"
)
RUN_AT_OF_TASK = "SELECT run_at FROM pacificpy_tasks WHERE task_id = ?"

# -- outcomes --------------------------------------------------------------------------------
GET_OUTCOME = "SELECT outcome FROM pacificpy_outcomes WHERE task_id = ? AND expires > ?"
STORE_OUTCOME = (
    "INSERT OR REPLACE INTO pacificpy_outcomes (task_id, outcome, expires) VALUES (?, ?, ?)"
)
CLEAR_OUTCOME = "DELETE FROM pacificpy_outcomes WHERE task_id = ?"

# -- dead letters ----------------------------------------------------------------------------
ADD_LETTER = (
    "INSERT OR REPLACE INTO pacificpy_dead_letters (id, failed_at, letter) VALUES (?, ?, ?)"
)
COUNT_LETTERS = "SELECT count(*) FROM pacificpy_dead_letters"
#: Drop the oldest letters past the cap.
TRIM_LETTERS = (
    "DELETE FROM pacificpy_dead_letters WHERE seq IN (SELECT seq FROM pacificpy_dead_letters "
    "ORDER BY failed_at, seq LIMIT ?)"
)
LIST_LETTERS = "SELECT letter FROM pacificpy_dead_letters ORDER BY failed_at DESC, seq DESC LIMIT ?"
GET_LETTER = "SELECT letter FROM pacificpy_dead_letters WHERE id = ?"
POP_LETTER = "DELETE FROM pacificpy_dead_letters WHERE id = ? RETURNING letter"
CLEAR_LETTERS = "DELETE FROM pacificpy_dead_letters"

# -- idempotency keys ------------------------------------------------------------------------
#: Take the key unless a live holder has it (an expired holder is replaced).
CLAIM_KEY = (
    "INSERT INTO pacificpy_idem_keys (name, key, task_id, expires) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name, key) DO UPDATE SET task_id = excluded.task_id, "
    "expires = excluded.expires WHERE pacificpy_idem_keys.expires <= ?"
)
RELEASE_KEY = "DELETE FROM pacificpy_idem_keys WHERE name = ? AND key = ?"

# -- delivery counts -------------------------------------------------------------------------
COUNT_DELIVERY = (
    "INSERT INTO pacificpy_deliveries (task_id, attempt, count, expires) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (task_id, attempt) DO UPDATE SET count = count + 1, "
    "expires = excluded.expires RETURNING count"
)
FORGET_DELIVERIES = "DELETE FROM pacificpy_deliveries WHERE task_id = ? AND attempt = ?"

# -- tombstones (cancelled tasks) ------------------------------------------------------------
BURY = (
    "INSERT INTO pacificpy_tombstones (task_id, expires) VALUES (?, ?) "
    "ON CONFLICT (task_id) DO UPDATE SET expires = excluded.expires"
)
IS_BURIED = "SELECT 1 FROM pacificpy_tombstones WHERE task_id = ? AND expires > ?"
#: Tombstones laid after ``seq``, for the watcher of running tasks.
BURIED_SINCE = (
    "SELECT seq, task_id FROM pacificpy_tombstones WHERE seq > ? AND expires > ? ORDER BY seq"
)
LAST_TOMBSTONE = "SELECT coalesce(max(seq), 0) FROM pacificpy_tombstones"
# -- the worker registry ---------------------------------------------------------------------
PUT_WORKER = "INSERT OR REPLACE INTO pacificpy_workers (id, record, expires) VALUES (?, ?, ?)"
REMOVE_WORKER = "DELETE FROM pacificpy_workers WHERE id = ?"
LIST_WORKERS = "SELECT record FROM pacificpy_workers WHERE expires > ?"
PING = "SELECT 1"

# -- retention (deleted in batches, so no statement holds the write lock for long) -----------
EXPIRE = (
    "DELETE FROM pacificpy_outcomes WHERE task_id IN (SELECT task_id FROM "
    "pacificpy_outcomes WHERE expires <= ? LIMIT ?)",
    "DELETE FROM pacificpy_idem_keys WHERE (name, key) IN (SELECT name, key FROM "
    "pacificpy_idem_keys WHERE expires <= ? LIMIT ?)",
    "DELETE FROM pacificpy_deliveries WHERE (task_id, attempt) IN (SELECT "
    "task_id, attempt FROM pacificpy_deliveries WHERE expires <= ? LIMIT ?)",
    "DELETE FROM pacificpy_tombstones WHERE seq IN (SELECT seq FROM "
    "pacificpy_tombstones WHERE expires <= ? LIMIT ?)",
    "DELETE FROM pacificpy_workers WHERE id IN (SELECT id FROM pacificpy_workers "
    "WHERE expires <= ? LIMIT ?)",
    "DELETE FROM pacificpy_flow_slots WHERE (name, holder) IN (SELECT name, holder FROM "
    "pacificpy_flow_slots WHERE expires <= ? LIMIT ?)",
    "DELETE FROM pacificpy_flow_starts WHERE seq IN (SELECT seq FROM pacificpy_flow_starts "
    "WHERE expires <= ? LIMIT ?)",
)
INCREMENTAL_VACUUM = "PRAGMA incremental_vacuum({pages})"
FREELIST = "PRAGMA freelist_count"

# -- schedule slots (periodic tasks) ----------------------------------------------------------
LAST_SCHEDULE_SLOT = "SELECT slot FROM pacificpy_schedules WHERE name = ?"
#: The first slot of a schedule: changes a row only when none is recorded.
FIRST_SCHEDULE_SLOT = (
    "INSERT INTO pacificpy_schedules (name, slot) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
)
#: Compare-and-set: changes the row only when it still holds the slot the caller read.
ADVANCE_SCHEDULE_SLOT = (
    "UPDATE pacificpy_schedules SET slot = ? WHERE name = ? AND slot = ? AND slot < ?"
)

# -- flow control (concurrency leases, rate windows), each admit in one BEGIN IMMEDIATE ------
DROP_EXPIRED_SLOTS = "DELETE FROM pacificpy_flow_slots WHERE name = ? AND expires <= ?"
COUNT_SLOTS = "SELECT count(*) FROM pacificpy_flow_slots WHERE name = ?"
TAKE_SLOT = "INSERT OR REPLACE INTO pacificpy_flow_slots (name, holder, expires) VALUES (?, ?, ?)"
#: Extend a lease that has not expired (an expired one stays gone).
RENEW_SLOT = (
    "UPDATE pacificpy_flow_slots SET expires = ? WHERE name = ? AND holder = ? AND expires > ?"
)
RELEASE_SLOT = "DELETE FROM pacificpy_flow_slots WHERE name = ? AND holder = ?"
#: Starts that left the window (``at <= now - per``).
DROP_OLD_STARTS = "DELETE FROM pacificpy_flow_starts WHERE name = ? AND at <= ?"
WINDOW = "SELECT count(*), min(at) FROM pacificpy_flow_starts WHERE name = ?"
RECORD_START = "INSERT INTO pacificpy_flow_starts (name, at, expires) VALUES (?, ?, ?)"
