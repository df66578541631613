"""Every exchange with a Redis node is bounded as a whole, not per read.

A socket timeout bounds each ``recv``; a node that trickles its reply one
byte at a time never trips it. Here every connection's socket is wrapped so
that each read and write waits at most until a deadline: the end of the
current exchange (``exchange(seconds)``, set by whoever starts one: a change,
a discovery, a pass), and in any case the socket timeout counted from when
the command batch was sent. Past the deadline a read still takes what has
already arrived, so a slow node does not hide what the others answered.

Every Redis client rkvstore makes comes from ``client()``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from rkvstore.engine.node_tls import NodeTls

# A read or write past the deadline still takes what is already there, each
# waiting this long at most, and a socket reads on past its deadline for
# _LATE_GRACE at most in all: a node that keeps sending a byte every
# millisecond cannot keep the read going.
_PAST_DEADLINE = 0.001
_LATE_GRACE = 0.05

_local = threading.local()


@contextmanager
def exchange(seconds: float, *, fresh: bool = False) -> Iterator[float]:
    """Everything this thread sends to or reads from nodes in the block ends within ``seconds``.

    Nested exchanges keep the earlier of the two deadlines, unless ``fresh``
    (a roll-back after a failure, which must not inherit a spent deadline).
    Yields the deadline (``time.monotonic()`` seconds).
    """
    previous: float | None = getattr(_local, "deadline", None)
    deadline = time.monotonic() + seconds
    if previous is not None and not fresh:
        deadline = min(deadline, previous)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = previous


def exchange_deadline() -> float | None:
    return getattr(_local, "deadline", None)


class DeadlineSocket:
    """A socket whose reads and writes end by ``deadline`` (and the thread's exchange)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout: float | None = sock.gettimeout()
        self.deadline: float | None = None
        self._late_since: float | None = None

    def settimeout(self, value: float | None) -> None:
        self._timeout = value  # applied, capped by the deadlines, at the next read or write

    def gettimeout(self) -> float | None:
        return self._timeout

    def _arm(self) -> None:
        timeout = self._timeout
        deadline = self.deadline
        outer = exchange_deadline()
        if outer is not None and (deadline is None or outer < deadline):
            deadline = outer
        if deadline is not None and timeout != 0:  # a non-blocking read stays non-blocking
            now = time.monotonic()
            if now >= deadline:
                if self._late_since is None or self._late_since < deadline:
                    self._late_since = now
                elif now - self._late_since > _LATE_GRACE:
                    raise TimeoutError("past the exchange's deadline")
            remaining = max(deadline - now, _PAST_DEADLINE)
            if timeout is None or remaining < timeout:
                timeout = remaining
        self._sock.settimeout(timeout)

    def recv(self, size: int, flags: int = 0) -> bytes:
        self._arm()
        return self._sock.recv(size, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._arm()
        self._sock.sendall(data, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        self._arm()
        return self._sock.send(data, flags)

    def __getattr__(self, name: str) -> Any:  # fileno, close, shutdown, getpeername, …
        return getattr(self._sock, name)


class BoundedConnection(Connection):
    """redis-py's TCP connection, on a ``DeadlineSocket``.

    Each command batch must be answered in full within the socket timeout
    from when it was sent; connecting takes at most what is left of the
    thread's exchange.
    """

    def _connect(self) -> DeadlineSocket:
        outer = exchange_deadline()
        saved = self.socket_connect_timeout
        if outer is not None:
            remaining = max(outer - time.monotonic(), _PAST_DEADLINE)
            self.socket_connect_timeout = remaining if saved is None else min(saved, remaining)
        try:
            sock = self._secure(super()._connect())
        finally:
            self.socket_connect_timeout = saved
        return DeadlineSocket(sock)

    def _secure(self, sock: socket.socket) -> socket.socket:
        return sock  # plain TCP

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect_check_health(check_health=False)
        sock = self._sock
        if isinstance(sock, DeadlineSocket):
            sock.deadline = time.monotonic() + (self.socket_timeout or 5.0)
        super().send_packed_command(command, check_health)


class BoundedTLSConnection(BoundedConnection):
    """``BoundedConnection`` over TLS, with the context of the node's ``NodeTls``.

    The handshake runs on the connected socket within its timeouts; the deadline
    socket then wraps the TLS one, so every read and write is bounded as before.
    """

    def __init__(self, *, tls: NodeTls, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls = tls

    def _secure(self, sock: socket.socket) -> socket.socket:
        try:
            return self.tls.context().wrap_socket(
                sock, server_hostname=self.tls.server_name or self.host
            )
        except (OSError, ValueError):
            sock.close()
            raise


def client(
    host: str,
    port: int,
    *,
    timeout: float,
    username: str | None = None,
    password: str | None = None,
    decode_responses: bool = False,
    protocol: int | None = None,
    tls: NodeTls | None = None,
) -> redis.Redis:
    """A client whose every exchange is bounded; no retries (a failed node is reported).
    ``tls``: every connection speaks TLS with these settings."""
    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "username": username,
        "password": password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": decode_responses,
        "connection_class": BoundedConnection,
    }
    if protocol is not None:
        kwargs["protocol"] = protocol
    if tls is not None:
        kwargs["connection_class"] = BoundedTLSConnection
        kwargs["tls"] = tls
    return redis.Redis.from_pool(redis.ConnectionPool(**kwargs))
