"""PacificPy's task state in PostgreSQL (psycopg 3): for teams whose broker is RabbitMQ and
who run PostgreSQL but no Redis. ``pip install -e '.[postgres]'``."""

from pacificpy.background.backends.postgres.state import PostgresTaskState

__all__ = ["PostgresTaskState"]
