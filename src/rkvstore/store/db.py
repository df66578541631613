"""Engine creation and migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection

_MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary, fixed: serialises migrations and bootstrap across processes on PostgreSQL.
_PG_LOCK_ID = 0x726B7673


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL + NORMAL: a commit survives a crash of rkvstore; only an OS crash or
    # power loss can lose the last commits, and Redis is then brought back to
    # the database's state. Each commit would otherwise wait for an fsync.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive flock on ``<db>.lock``: blocks other processes and threads alike.

    SQLite's own locking does not cover this: the driver runs DDL outside a
    transaction and starts none for a SELECT, so two first starts would race.
    """
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding a lock that serialises migrations and bootstrap across processes."""
    if engine.dialect.name == "sqlite":
        with _sqlite_file_lock(engine), engine.connect() as conn:
            yield conn
        return
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
            conn.commit()
        try:
            yield conn
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
                conn.commit()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent, safe across processes)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with migration_lock(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
