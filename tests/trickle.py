"""A misbehaving Redis of the test's own: a TCP proxy that can trickle the node's replies.

Not a test module. ``TrickleProxy`` listens on a free loopback port and
forwards every connection to a real redis-server on ``127.0.0.1:target_port``:

- ``"pass"``: both ways at once;
- ``"trickle"``: what the client sends still goes straight through, but the
  node's replies come back one byte every ``interval`` seconds, so that every
  single read the client makes gets something well before a per-read socket
  timeout, and the whole reply takes for ever.

The mode is switched at run time (``set_mode``); bytes held back while
trickling go out at once on the switch to ``"pass"``. With ``trickle_after``
set, a connection trickles only once its client has sent those bytes (a
node that answers reads in time and a given command too late). ``stop()`` (or leaving
the ``with`` block) closes the listening socket and every connection's two
sockets and joins every thread, each join bounded.

One thread per connection (a selector over both sockets, woken at least every
``POLL`` seconds), so stopping never waits on a blocked call.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from types import TracebackType
from typing import Final, Literal

Mode = Literal["pass", "trickle"]

HOST: Final = "127.0.0.1"
POLL: Final = 0.05  # seconds between looks at the stop flag and the trickle clock
SOCKET_TIMEOUT: Final = 5.0  # a send that cannot go out within this gives the connection up
JOIN_TIMEOUT: Final = 5.0


class _Link:
    """One client connection and its upstream connection to the node."""

    def __init__(self, proxy: TrickleProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.pending = bytearray()  # the node's bytes not yet given to the client
        self.next_byte_at = 0.0
        self.upstream_eof = False
        self.armed = False  # its client sent the proxy's trickle_after bytes
        self.thread = threading.Thread(target=self._run, name="trickle-link", daemon=True)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _run(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.client, selectors.EVENT_READ, "client")
                selector.register(self.upstream, selectors.EVENT_READ, "upstream")
                while not self.proxy.stopping.is_set():
                    if not self._step(selector):
                        return
        except OSError:
            return  # a socket failed (reset, timed out, closed by stop): the link is done
        finally:
            self.close()
            self.proxy._forget(self)

    def _step(self, selector: selectors.BaseSelector) -> bool:
        """One round: read what is there, send what the mode allows. False: the link is over."""
        for key, _ in selector.select(timeout=self._wait()):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            data = sock.recv(65536)
            if key.data == "client":
                if not data:
                    return False  # the client went away: so does its node connection
                trigger = self.proxy.trickle_after
                if trigger is not None and trigger in data:
                    self.armed = True
                self.upstream.sendall(data)
            elif data:
                if not self.pending:
                    self.next_byte_at = time.monotonic() + self.proxy.interval
                self.pending += data
            else:
                self.upstream_eof = True
                selector.unregister(self.upstream)
        self._deliver()
        return not (self.upstream_eof and not self.pending)

    def _trickling(self) -> bool:
        proxy = self.proxy
        return proxy.mode == "trickle" and (proxy.trickle_after is None or self.armed)

    def _wait(self) -> float:
        if self.pending and self._trickling():
            return max(0.0, min(POLL, self.next_byte_at - time.monotonic()))
        return 0.0 if self.pending else POLL

    def _deliver(self) -> None:
        if not self.pending:
            return
        if not self._trickling():
            self.client.sendall(self.pending)
            self.pending.clear()
            return
        now = time.monotonic()
        if now >= self.next_byte_at:
            self.client.sendall(self.pending[:1])
            del self.pending[:1]
            self.proxy.trickled += 1
            self.next_byte_at = now + self.proxy.interval


class TrickleProxy:
    """A loopback TCP proxy in front of ``127.0.0.1:target_port``; see the module doc."""

    def __init__(
        self,
        target_port: int,
        *,
        interval: float = 1.5,
        mode: Mode = "pass",
        trickle_after: bytes | None = None,
    ) -> None:
        self.target_port = target_port
        self.interval = interval
        self.mode: Mode = mode
        self.trickle_after = trickle_after
        self.stopping = threading.Event()
        self.accepted = 0  # connections accepted so far
        self.trickled = 0  # bytes sent one at a time so far
        self._links: set[_Link] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="trickle-accept", daemon=True)
        self._acceptor.start()

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def set_mode(self, mode: Mode) -> None:
        assert mode in ("pass", "trickle"), mode
        self.mode = mode

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed by stop()
            try:
                upstream = socket.create_connection(
                    (HOST, self.target_port), timeout=SOCKET_TIMEOUT
                )
            except OSError:
                client.close()
                continue
            client.settimeout(SOCKET_TIMEOUT)
            link = _Link(self, client, upstream)
            with self._lock:
                if self.stopping.is_set():
                    link.close()
                    return
                self._links.add(link)
                self._threads.append(link.thread)
                self.accepted += 1
            link.thread.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def stop(self) -> None:
        """Close every socket and join every thread (each join bounded); idempotent."""
        self.stopping.set()
        self._acceptor.join(JOIN_TIMEOUT)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftover = list(self._links)
        for link in leftover:  # only if a thread did not end in time
            link.close()
        alive = [t for t in [self._acceptor, *threads] if t.is_alive()]
        assert not alive, f"{len(alive)} proxy thread(s) still running after stop()"

    def __enter__(self) -> TrickleProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
