"""Every SQL statement of the PostgreSQL task state, in one place.

The tables are the SQLite backend's task-state tables (``pacificpy_outcomes``,
``pacificpy_dead_letters``, ``pacificpy_idem_keys``, ``pacificpy_deliveries``), with the
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

# -- retention (in batches, so no statement holds many row locks for long) --------------------
EXPIRE = (
    "DELETE FROM pacificpy_outcomes WHERE task_id IN (SELECT task_id FROM "
    "pacificpy_outcomes WHERE expires <= %s LIMIT %s)",
    "DELETE FROM pacificpy_idem_keys WHERE (name, key) IN (SELECT name, key FROM "
    "pacificpy_idem_keys WHERE expires <= %s LIMIT %s)",
    "DELETE FROM pacificpy_deliveries WHERE (task_id, attempt) IN (SELECT "
    "task_id, attempt FROM pacificpy_deliveries WHERE expires <= %s LIMIT %s)",
)
