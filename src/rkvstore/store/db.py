"""Engine creation and migrations for SQLite (default) and PostgreSQL.

Every exchange with the database is bounded (``timeout`` seconds, the
setting ``RKVSTORE_DB_TIMEOUT_SECONDS``):

- SQLite: a lock held by another connection or process is waited for that
  long (``busy_timeout``), then the statement fails.
- PostgreSQL: connecting (``connect_timeout``, counted by the client), each
  statement and each lock wait (``statement_timeout``, ``lock_timeout``,
  counted by the server), waiting for a pooled connection (``pool_timeout``);
  and, for a server that answers nothing at all (a frozen process, a dead
  host), a watchdog that shuts a connection's socket down when it has been
  waiting on one statement (or on the commit after it) for longer than the
  bound plus ``WATCHDOG_GRACE_SECONDS``.
  Instead of a ping per checkout, a pooled connection that has something to
  read while idle (the server closed it, or is going away) is replaced.

``database_unavailable`` tells such failures (and a full disk, a locked
SQLite file, a database that went away) from programming errors; the API
answers them with 503 ``ServiceUnavailable``.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import itertools
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import Connection

log = logging.getLogger("rkvstore.store")

_MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary, fixed: serialises migrations and bootstrap across processes on PostgreSQL.
_PG_LOCK_ID = 0x726B7673
DEFAULT_TIMEOUT_SECONDS = 5.0
# The server's own statement and lock timeouts answer first when the server
# is alive; the watchdog is for one that is not.
WATCHDOG_GRACE_SECONDS = 1.0


def make_engine(url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False})
        busy_ms = int(timeout * 1000)

        def pragmas(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, busy_ms)

        event.listen(engine, "connect", pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    ms = int(timeout * 1000)
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_timeout=timeout,
        connect_args={
            "connect_timeout": max(1, math.ceil(timeout)),
            "options": (
                f"-c statement_timeout={ms} -c lock_timeout={ms}"
                # A transaction left open by a stalled process frees its locks.
                f" -c idle_in_transaction_session_timeout={max(4 * ms, 10_000)}"
            ),
        },
    )
    if engine.dialect.name == "postgresql":
        _watch(engine, timeout + WATCHDOG_GRACE_SECONDS)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL + NORMAL: a commit survives a crash of rkvstore; only an OS crash or
    # power loss can lose the last commits, and Redis is then brought back to
    # the database's state. Each commit would otherwise wait for an fsync.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# --------------------------------------------------------------------------- failures


def database_unavailable(error: BaseException) -> bool:
    """A failure of the database, not of the statement: unreachable, too slow, locked, full."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        exc.OperationalError | exc.InterfaceError | exc.TimeoutError | exc.DisconnectionError,
    )


def describe_database_error(error: BaseException) -> str:
    """One line, from the driver's own message: no SQL, no parameters."""
    inner = getattr(error, "orig", None) or error
    lines = str(inner).strip().splitlines()
    first = lines[0][:200] if lines else ""
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


# --------------------------------------------------------------------------- PostgreSQL watchdog


class _Watchdog:
    """Shuts down the socket of a connection held past its deadline (one thread for all)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._heap: list[tuple[float, int, _Watch]] = []
        self._counter = itertools.count()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, record: Any, fd: int) -> None:
        try:
            sock = socket.socket(fileno=os.dup(fd))  # ours: a reused fd number is never hit
        except OSError:
            return
        watch = _Watch(sock, time.monotonic() + self.limit)
        record.info["rkvstore_watch"] = watch
        with self._lock:
            heapq.heappush(self._heap, (watch.deadline, next(self._counter), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()
            self._lock.notify()

    def rearm(self, info: dict[str, Any]) -> None:
        """A statement starts: it has the whole bound (plus grace) of its own."""
        watch = info.get("rkvstore_watch")
        if watch is not None:
            watch.deadline = time.monotonic() + self.limit

    def disarm(self, record: Any) -> None:
        watch = record.info.pop("rkvstore_watch", None) if record is not None else None
        if watch is not None:
            with self._lock:
                watch.done = True
            watch.sock.detach_close()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, _, watch = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if watch.done or watch.unbounded:
                    continue
                if watch.deadline > deadline:  # re-armed by a later statement
                    heapq.heappush(self._heap, (watch.deadline, next(self._counter), watch))
                    continue
                watch.fired = True
            log.warning("a database connection was held more than %.1f s; closing it", self.limit)
            with contextlib.suppress(OSError):
                watch.sock.shutdown(socket.SHUT_RDWR)


class _Watch:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = _OwnedSocket(sock)
        self.deadline = deadline
        self.done = False
        self.fired = False
        self.unbounded = False


class _OwnedSocket:
    """A dup of the connection's socket, closed exactly once."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._closed = False

    def shutdown(self, how: int) -> None:
        with self._lock:
            if not self._closed:
                self._sock.shutdown(how)

    def detach_close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._sock.close()


def _socket_fd(dbapi_connection: Any) -> int | None:
    try:
        fd = int(dbapi_connection.pgconn.socket)
    except Exception:  # the connection is already broken
        return None
    return fd if fd >= 0 else None


def _has_input(fd: int) -> bool:
    """Something to read on an idle connection: the server closed it or is going away."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _watch(engine: Engine, limit: float) -> None:
    watchdog = _Watchdog(limit)

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        fd = _socket_fd(dbapi_connection)
        if fd is None or _has_input(fd):  # this one only: the others may be in use
            raise exc.DisconnectionError("the server closed the connection")
        watchdog.arm(record, fd)

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn: Any, *_args: Any) -> None:
        watchdog.rearm(conn.connection.info)

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        watchdog.disarm(record)

    @event.listens_for(engine.pool, "invalidate")
    def _invalidate(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        watchdog.disarm(record)

    @event.listens_for(engine.pool, "close")
    def _close(_dbapi_connection: Any, record: Any) -> None:
        watchdog.disarm(record)

    @event.listens_for(engine.pool, "detach")
    def _detach(_dbapi_connection: Any, record: Any) -> None:
        watchdog.disarm(record)


@contextmanager
def unbounded(conn: Connection) -> Iterator[Connection]:
    """This connection may be held for long (migrations waiting for another process's)."""
    watch = conn.connection.info.get("rkvstore_watch")
    if watch is not None:
        watch.unbounded = True
    yield conn


# --------------------------------------------------------------------------- migrations


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
    with engine.connect() as conn, unbounded(conn):
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET statement_timeout = 0"))
            conn.execute(text("SET lock_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
            conn.commit()
        try:
            yield conn
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
                conn.execute(text("RESET statement_timeout"))
                conn.execute(text("RESET lock_timeout"))
                conn.commit()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent, safe across processes)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with migration_lock(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def head_revision() -> str:
    """The newest migration this code knows (read from the scripts, once, at start)."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    return str(head)


def database_revision(conn: Connection) -> str | None:
    """The migration the database is at (one primary-key read)."""
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)
