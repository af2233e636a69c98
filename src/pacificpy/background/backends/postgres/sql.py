"""Every SQL statement of the PostgreSQL task state, in one place.

The tables are the SQLite backend's task-state tables (``pacificpy_outcomes``,
``pacificpy_dead_letters``, ``pacificpy_idem_keys``, ``pacificpy_deliveries``,
``pacificpy_tombstones``, ``pacificpy_schedules``, ``pacificpy_workers``) plus the leases
and starts of flow control (``pacificpy_flow_slots``, ``pacificpy_flow_starts``), with the
same columns and meaning, in PostgreSQL's dialect: ``%s`` placeholders, ``ON CONFLICT``
upserts, ``BYTEA`` and ``DOUBLE PRECISION``. Times are Unix seconds. The names are not
schema-qualified: they live in the connection's ``search_path`` (``public`` unless the
URL says otherwise, e.g. ``?options=-csearch_path%3Dtasks``).
"""

from __future__ import annotations

#: A lock id of PacificPy's own (``pg_advisory_xact_lock``): two processes creating the
#: tables at once would race on PostgreSQL's catalog.
SCHEMA_LOCK = 0x70616369666963

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pacificpy_outcomes (
        task_id TEXT PRIMARY KEY,
        outcome BYTEA NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS pacificpy_outcomes_expires ON pacificpy_outcomes (expires)",
    """CREATE TABLE IF NOT EXISTS pacificpy_dead_letters (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        failed_at DOUBLE PRECISION NOT NULL,
        letter BYTEA NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS pacificpy_dead_letters_failed
        ON pacificpy_dead_letters (failed_at, seq)""",
    """CREATE TABLE IF NOT EXISTS pacificpy_idem_keys (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        task_id TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (name, key)
    )""",
    "CREATE INDEX IF NOT EXISTS pacificpy_idem_keys_expires ON pacificpy_idem_keys (expires)",
    """CREATE TABLE IF NOT EXISTS pacificpy_deliveries (
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        count INTEGER NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (task_id, attempt)
    )""",
    """CREATE INDEX IF NOT EXISTS pacificpy_deliveries_expires
        ON pacificpy_deliveries (expires)""",
    """CREATE TABLE IF NOT EXISTS pacificpy_tombstones (
        task_id TEXT PRIMARY KEY,
        expires DOUBLE PRECISION NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS pacificpy_tombstones_expires
        ON pacificpy_tombstones (expires)""",
    """CREATE TABLE IF NOT EXISTS pacificpy_schedules (
        name TEXT PRIMARY KEY,
        slot DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS pacificpy_workers (
        id TEXT PRIMARY KEY,
        record BYTEA NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS pacificpy_workers_expires ON pacificpy_workers (expires)",
    """CREATE TABLE IF NOT EXISTS pacificpy_flow_slots (
        name TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (name, holder)
    )""",
    """CREATE TABLE IF NOT EXISTS pacificpy_flow_starts (
        seq BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS pacificpy_flow_starts_name ON pacificpy_flow_starts (name, at)",
)
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(%s)"

# -- outcomes --------------------------------------------------------------------------------
GET_OUTCOME = "SELECT outcome FROM pacificpy_outcomes WHERE task_id = %s AND expires > %s"
STORE_OUTCOME = (
    "INSERT INTO pacificpy_outcomes (task_id, outcome, expires) VALUES (%s, %s, %s) "
    "ON CONFLICT (task_id) DO UPDATE SET outcome = EXCLUDED.outcome, expires = EXCLUDED.expires"
)
CLEAR_OUTCOME = "DELETE FROM pacificpy_outcomes WHERE task_id = %s"

# -- dead letters ----------------------------------------------------------------------------
ADD_LETTER = (
    "INSERT INTO pacificpy_dead_letters (id, failed_at, letter) VALUES (%s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET failed_at = EXCLUDED.failed_at, letter = EXCLUDED.letter"
)
COUNT_LETTERS = "SELECT count(*) FROM pacificpy_dead_letters"
#: Drop the oldest letters past the cap (the argument: how many to keep).
TRIM_LETTERS = (
    "DELETE FROM pacificpy_dead_letters WHERE seq IN (SELECT seq FROM pacificpy_dead_letters "
    "ORDER BY failed_at DESC, seq DESC OFFSET %s)"
)
LIST_LETTERS = (
    "SELECT letter FROM pacificpy_dead_letters ORDER BY failed_at DESC, seq DESC LIMIT %s"
)
GET_LETTER = "SELECT letter FROM pacificpy_dead_letters WHERE id = %s"
POP_LETTER = "DELETE FROM pacificpy_dead_letters WHERE id = %s RETURNING letter"
CLEAR_LETTERS = "DELETE FROM pacificpy_dead_letters"

# -- idempotency keys ------------------------------------------------------------------------
#: Take the key unless a live holder has it (an expired holder is replaced).
CLAIM_KEY = (
    "INSERT INTO pacificpy_idem_keys (name, key, task_id, expires) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (name, key) DO UPDATE SET task_id = EXCLUDED.task_id, "
    "expires = EXCLUDED.expires WHERE pacificpy_idem_keys.expires <= %s"
)
RELEASE_KEY = "DELETE FROM pacificpy_idem_keys WHERE name = %s AND key = %s"

# -- delivery counts -------------------------------------------------------------------------
COUNT_DELIVERY = (
    "INSERT INTO pacificpy_deliveries (task_id, attempt, count, expires) VALUES (%s, %s, 1, %s) "
    "ON CONFLICT (task_id, attempt) DO UPDATE SET count = pacificpy_deliveries.count + 1, "
    "expires = EXCLUDED.expires RETURNING count"
)
FORGET_DELIVERIES = "DELETE FROM pacificpy_deliveries WHERE task_id = %s AND attempt = %s"

# -- tombstones (cancelled tasks) ------------------------------------------------------------
#: The channel a cancel is announced on (payload: ``"<task id> <expiry>"``), at its commit.
CANCEL_CHANNEL = "pacificpy_cancels"
#: The cancelled outcome, stored unless a live outcome is there (the task finished).
CANCEL_OUTCOME = (
    "INSERT INTO pacificpy_outcomes (task_id, outcome, expires) VALUES (%s, %s, %s) "
    "ON CONFLICT (task_id) DO UPDATE SET outcome = EXCLUDED.outcome, "
    "expires = EXCLUDED.expires WHERE pacificpy_outcomes.expires <= %s"
)
BURY = (
    "INSERT INTO pacificpy_tombstones (task_id, expires) VALUES (%s, %s) "
    "ON CONFLICT (task_id) DO UPDATE SET expires = EXCLUDED.expires"
)
ANNOUNCE = "SELECT pg_notify(%s, %s)"
IS_BURIED = "SELECT 1 FROM pacificpy_tombstones WHERE task_id = %s AND expires > %s"
LIVE_TOMBSTONES = "SELECT task_id, expires FROM pacificpy_tombstones WHERE expires > %s"
LISTEN = f"LISTEN {CANCEL_CHANNEL}"

# -- schedule slots (periodic tasks) ----------------------------------------------------------
LAST_SCHEDULE_SLOT = "SELECT slot FROM pacificpy_schedules WHERE name = %s"
#: The first slot of a schedule: changes a row only when none is recorded.
FIRST_SCHEDULE_SLOT = (
    "INSERT INTO pacificpy_schedules (name, slot) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
)
#: Compare-and-set: changes the row only when it still holds the slot the caller read.
ADVANCE_SCHEDULE_SLOT = (
    "UPDATE pacificpy_schedules SET slot = %s WHERE name = %s AND slot = %s AND slot < %s"
)

# -- the worker registry ---------------------------------------------------------------------
PUT_WORKER = (
    "INSERT INTO pacificpy_workers (id, record, expires) VALUES (%s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, expires = EXCLUDED.expires"
)
REMOVE_WORKER = "DELETE FROM pacificpy_workers WHERE id = %s"
LIST_WORKERS = "SELECT record FROM pacificpy_workers WHERE expires > %s"

# -- flow control (one transaction per admission, under a lock of the task name) -------------
#: The advisory-lock class of flow control (the second key is the task name's hash).
FLOW_LOCK = 0x70667063
#: Serialise admissions of one task name, and read the server's clock (every process
#: agrees on it, as Redis's ``TIME`` in flow_admit.lua).
LOCK_FLOW = (
    "SELECT pg_advisory_xact_lock(%s, hashtext(%s)), extract(epoch FROM clock_timestamp())::float8"
)
DROP_EXPIRED_SLOTS = "DELETE FROM pacificpy_flow_slots WHERE name = %s AND expires <= %s"
COUNT_SLOTS = "SELECT count(*) FROM pacificpy_flow_slots WHERE name = %s"
DROP_OLD_STARTS = "DELETE FROM pacificpy_flow_starts WHERE name = %s AND at <= %s"
WINDOW = "SELECT count(*), min(at) FROM pacificpy_flow_starts WHERE name = %s"
ADD_START = "INSERT INTO pacificpy_flow_starts (name, at, expires) VALUES (%s, %s, %s)"
TAKE_SLOT = (
    "INSERT INTO pacificpy_flow_slots (name, holder, expires) VALUES (%s, %s, %s) "
    "ON CONFLICT (name, holder) DO UPDATE SET expires = EXCLUDED.expires"
)
#: Extend the leases still held (arrays of names and holders, one element per lease).
RENEW_SLOTS = (
    "UPDATE pacificpy_flow_slots AS s SET expires = extract(epoch FROM clock_timestamp()) + %s "
    "FROM unnest(%s::text[], %s::text[]) AS h(name, holder) "
    "WHERE s.name = h.name AND s.holder = h.holder "
    "AND s.expires > extract(epoch FROM clock_timestamp())"
)
RELEASE_SLOT = "DELETE FROM pacificpy_flow_slots WHERE name = %s AND holder = %s"

# -- retention (in batches, so no statement holds many row locks for long) --------------------
EXPIRE = (
    "DELETE FROM pacificpy_outcomes WHERE task_id IN (SELECT task_id FROM "
    "pacificpy_outcomes WHERE expires <= %s LIMIT %s)",
    "DELETE FROM pacificpy_idem_keys WHERE (name, key) IN (SELECT name, key FROM "
    "pacificpy_idem_keys WHERE expires <= %s LIMIT %s)",
    "DELETE FROM pacificpy_deliveries WHERE (task_id, attempt) IN (SELECT "
    "task_id, attempt FROM pacificpy_deliveries WHERE expires <= %s LIMIT %s)",
    "DELETE FROM pacificpy_tombstones WHERE task_id IN (SELECT task_id FROM "
    "pacificpy_tombstones WHERE expires <= %s LIMIT %s)",
    "DELETE FROM pacificpy_workers WHERE id IN (SELECT id FROM pacificpy_workers "
    "WHERE expires <= %s LIMIT %s)",
    # Flow rows carry the server's times: a minute's margin for this machine's clock.
    "DELETE FROM pacificpy_flow_slots WHERE (name, holder) IN (SELECT name, holder FROM "
    "pacificpy_flow_slots WHERE expires <= %s - 60 LIMIT %s)",
    "DELETE FROM pacificpy_flow_starts WHERE seq IN (SELECT seq FROM "
    "pacificpy_flow_starts WHERE expires <= %s - 60 LIMIT %s)",
)
