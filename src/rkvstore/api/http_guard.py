"""HTTP connections bounded: time to a complete request, a cap on open connections.

uvicorn closes a keep-alive connection that stays idle after a response, but
not one that never sends a complete request: a client that connects and
says nothing, or sends half a request, holds a socket (and a file
descriptor) for as long as it likes. The guarded protocols close a
connection whose request is not complete ``request_timeout`` seconds after
its first byte (or after the connection opened), and keep at most
``max_connections`` open: a new connection beyond the cap closes the oldest
one that has no request being answered, and only when every connection is
busy is the new one answered 503 ``ServiceUnavailable`` and closed.

A request line or header that is not HTTP gets the API's JSON error (400
``InvalidHttpRequest``) instead of uvicorn's plain text, and one access-log
line.

Two parsers give the same guarantees: httptools (C, the default: it costs
less CPU per request than h11, README "HTTP stack") and h11 (pure Python).
Per process: with ``--workers N`` each worker has its own guard, so the cap
holds per worker.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # uvicorn[standard]

from rkvstore import errors
from rkvstore.api import render
from rkvstore.api.dispatch import log_access, new_trace
from rkvstore.errors import ApiError

log = logging.getLogger("rkvstore.http")
# In a request's ASGI state: the server closed it, its body incomplete in time.
REQUEST_TIMED_OUT = "rkvstore_request_timed_out"
# asyncio accepts up to ``backlog`` connections per turn of the loop, before the
# guard sees any of them: few per turn, so that a burst cannot run past the cap
# by more than this; the kernel's own queue stays deep (LISTEN_BACKLOG).
ACCEPTS_PER_TURN = 64
LISTEN_BACKLOG = 2048
# File descriptors kept beside the client connections: Redis and database
# connections, log files, the listening socket.
FD_RESERVE = 256
# The longest URL httptools.parse_url takes (its offsets are 16-bit).
URL_PARSE_LIMIT = 0xFFFF


class ConnectionGuard:
    def __init__(self, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._open: OrderedDict[_Guarded, None] = OrderedDict()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._last_warning = 0.0

    def admit(self, connection: _Guarded) -> bool:
        if len(self._open) >= self.max_connections:
            # The oldest that never sent a whole request first; an idle keep-alive
            # connection (a client that may reuse it) only if there is none.
            victim = next((c for c in self._open if c.incomplete), None) or next(
                (c for c in self._open if not c.busy), None
            )
            if victim is None:
                self.refused += 1
                self._warn("every connection is busy; refusing new ones")
                return False
            self.evicted += 1
            self._warn("connection cap reached; closing the oldest idle connections")
            self.leave(victim)
            victim.close_quietly()
        self._open[connection] = None
        return True

    def leave(self, connection: _Guarded) -> None:
        self._open.pop(connection, None)

    def __len__(self) -> int:
        return len(self._open)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 10:  # once in a while, not once per connection
            self._last_warning = now
            log.warning(
                "%s (cap %d; evicted %d, refused %d so far)",
                message,
                self.max_connections,
                self.evicted,
                self.refused,
            )


def _raw_error(status_phrase: bytes, err: ApiError) -> bytes:
    trace = new_trace()
    trace.code = err.code
    response = render.error(trace.request_id, err)
    log_access(trace, response.status_code)
    head = [b"HTTP/1.1 %d %s" % (response.status_code, status_phrase)]
    for name, value in response.raw_headers:
        if name.lower() != b"connection":
            head.append(name + b": " + value)
    head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)


class _Guarded:
    """What both guarded protocols share; the parser-specific parts are in the subclasses.

    Both uvicorn protocols keep the request being answered in ``cycle`` (with
    ``more_body``, ``response_complete``, ``disconnected``, ``message_event``)
    and the connection in ``transport``; this relies on nothing else of theirs.
    """

    guard: ConnectionGuard  # set on the subclass ``protocol_class`` makes
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _request_timer: asyncio.TimerHandle | None

    def _admit(self, transport: asyncio.Transport) -> None:
        """After the protocol's own ``connection_made``: in, or 503 and closed."""
        if not self.guard.admit(self):
            transport.write(
                _raw_error(b"Service Unavailable", ApiError(errors.SERVICE_UNAVAILABLE))
            )
            transport.close()
            return
        self._arm_request_timer()

    @property
    def busy(self) -> bool:
        """A complete request is being answered: not to be closed for another."""
        cycle = self.cycle
        return cycle is not None and not cycle.more_body and not cycle.response_complete

    @property
    def incomplete(self) -> bool:
        """No request yet, or one whose head or body is still arriving."""
        cycle = self.cycle
        return cycle is None or cycle.more_body or self._request_timer is not None

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_request_timer(self) -> None:
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(
            self.guard.request_timeout, self._request_timed_out
        )

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.busy or self.transport.is_closing():
            return
        self.guard.timed_out += 1
        self.guard.leave(self)
        self.close_quietly(timed_out=True)

    def close_quietly(self, *, timed_out: bool = False) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if timed_out:  # the app's access-log line says who gave up
                cycle.scope["state"][REQUEST_TIMED_OUT] = True
            cycle.disconnected = True  # a body still arriving is abandoned
            cycle.message_event.set()
        self.transport.close()

    def _not_http(self, may_answer: bool) -> None:
        """Not HTTP: the API's JSON error instead of uvicorn's plain text."""
        if may_answer:
            self.transport.write(_raw_error(b"Bad Request", ApiError(errors.INVALID_HTTP_REQUEST)))
        self.transport.close()


class GuardedH11Protocol(_Guarded, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._request_timer = None
        super().connection_made(transport)
        self._admit(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.leave(self)
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._request_timer is None and self._between_requests():
            self._arm_request_timer()  # a new request begins: it has this long to arrive
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.busy:
            self._cancel_request_timer()

    def on_response_complete(self) -> None:
        self._cancel_request_timer()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        self._not_http(self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE))


class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):
    """httptools calls ``on_message_complete`` from inside ``data_received``: once
    that returns with the request whole, its timer stops (a pipelined request
    queued behind the one being answered arrived whole, so it needs none)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._request_timer = None
        super().connection_made(transport)
        self._admit(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.leave(self)
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._request_timer is None and self._between_requests():
            self._arm_request_timer()
        super().data_received(data)
        if self.busy:
            self._cancel_request_timer()

    def on_response_complete(self) -> None:
        self._cancel_request_timer()
        super().on_response_complete()

    def on_headers_complete(self) -> None:
        # httptools.parse_url keeps offsets in 16 bits and refuses a longer URL: a query
        # over 64 KiB must reach the app, which answers it 413 RequestEntityTooLarge.
        path, _, query = self.url.partition(b"?")
        if len(self.url) < URL_PARSE_LIMIT or len(path) >= URL_PARSE_LIMIT:
            super().on_headers_complete()
            return
        self.url = path
        super().on_headers_complete()  # the scope is read by the app only once this returns
        self.scope["query_string"] = query.partition(b"#")[0]

    def send_400_response(self, msg: str) -> None:
        # Never in the middle of a response already begun (a pipelined request's).
        cycle = self.cycle
        self._not_http(cycle is None or not cycle.response_started or cycle.response_complete)


PARSERS = ("httptools", "h11")


def protocol_class(guard: ConnectionGuard, parser: str = "httptools") -> type[asyncio.Protocol]:
    """The guarded protocol of ``parser`` (one of ``PARSERS``), bound to ``guard``."""
    if parser == "httptools":
        return type("RkvstoreHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})
    return type("RkvstoreH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def connection_cap(wanted: int) -> int:
    """``wanted``, lowered to what the file-descriptor limit allows (raised first if it can)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    cap = max(16, min(wanted, soft - FD_RESERVE))
    if cap < wanted:
        log.warning("at most %d client connections: the file-descriptor limit is %d", cap, soft)
    return cap


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """``accept()`` out of file descriptors is said once in a while, without a traceback."""
    default = loop.get_exception_handler()
    last = [0.0]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # accept() out of descriptors, and the retries asyncio schedules for it
        # (which fail on a closed listener once the server stops).
        message = str(context.get("message", ""))
        if "accept" in message or "_start_serving" in message:
            now = time.monotonic()
            if now - last[0] >= 10:
                last[0] = now
                log.warning("accepting connections failed: %s", context.get("exception"))
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def deepen_listen_queue(servers: Any) -> None:
    """The kernel's queue of pending connections at ``LISTEN_BACKLOG`` (uvicorn set it to
    ``ACCEPTS_PER_TURN``, which is also what asyncio takes per turn)."""
    for server in servers:
        for listener in server.sockets:
            sock = socket.socket(fileno=listener.fileno())
            try:
                sock.listen(LISTEN_BACKLOG)
            finally:
                sock.detach()
