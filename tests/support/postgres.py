"""The machine's PostgreSQL for tests: one database per test run.

Each :class:`PostgresDatabase` creates a database of its own (``pacificpy_test_<random>``)
and drops it at teardown, so runs never see each other's rows. Where PostgreSQL listens:
``PACIFICPY_TEST_POSTGRES`` (a URL of a database to connect to for the CREATE/DROP,
default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust auth).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = ["PostgresDatabase", "admin_url", "require_postgres"]


def admin_url() -> str:
    """The URL the tests create and drop their databases through."""
    return os.environ.get(
        "PACIFICPY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def require_postgres() -> None:
    """Skip (fail under ``CI``) unless psycopg is installed and PostgreSQL answers."""
    missing = None
    try:
        import psycopg
    except ImportError:
        missing = "psycopg is not installed (the postgres extra)"
    else:
        try:
            psycopg.connect(admin_url(), connect_timeout=5).close()
        except psycopg.Error as exc:
            missing = f"PostgreSQL does not answer at {admin_url()}: {exc}"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)


class PostgresDatabase:
    """A database of this run's own, created on enter and dropped (forcibly) on exit."""

    def __init__(self) -> None:
        self.name = f"pacificpy_test_{uuid.uuid4().hex[:12]}"
        parts = urlsplit(admin_url())
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(admin_url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def create(self) -> PostgresDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def schema_url(self) -> str:
        """A URL whose ``search_path`` is a new, empty schema of this database (a test's own
        tables, without the cost of a database per test)."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def __enter__(self) -> PostgresDatabase:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.drop()
