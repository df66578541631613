"""/readyz follows the database: not ready while it cannot be reached (or is behind the
code's migrations), ready again when it comes back; /healthz stays 200 throughout.

The server runs on PostgreSQL in a fresh database, reached through a TCP proxy
of the test's own: stopping the proxy (its listener closed, every connection
cut) makes the database unreachable without touching the shared server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.conftest import PG_AVAILABLE, free_port, fresh_pg_database, start_server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PG_HOST, PG_PORT = "127.0.0.1", 5432
WAIT_SECONDS = 30.0  # for a state change to show: several database timeouts at most


class TcpProxy:
    """Forwards 127.0.0.1:port to PostgreSQL; ``stop`` cuts everything, ``start`` listens again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            cut, self._open = self._open, []
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection((PG_HOST, PG_PORT), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def wait_ready(url: str, expected: int) -> dict[str, str]:
    """/readyz until it answers ``expected`` (bounded); its body."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = httpx.get(f"{url}/readyz", timeout=WAIT_SECONDS)
        if response.status_code == expected:
            body: dict[str, str] = response.json()
            return body
        assert time.monotonic() < deadline, (response.status_code, response.text)
        time.sleep(0.2)


def database_up(metrics_url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=30).text):
        if family.name == "rkvstore_database_up":
            return float(family.samples[0].value)
    raise AssertionError("no rkvstore_database_up")


@pytest.fixture
def proxied_database() -> Iterator[tuple[str, str, TcpProxy]]:
    """(the URL the server uses, through the proxy; the direct URL; the proxy)."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with fresh_pg_database() as direct:
        proxy = TcpProxy(free_port())
        proxy.start()
        try:
            yield direct.replace(f":{PG_PORT}/", f":{proxy.port}/"), direct, proxy
        finally:
            proxy.stop()


def test_readyz_follows_the_database(
    data_dir: Path, proxied_database: tuple[str, str, TcpProxy]
) -> None:
    url, direct, proxy = proxied_database
    metrics_port = free_port()
    server = start_server(
        data_dir,
        database_url=url,
        extra_env={"RKVSTORE_DB_TIMEOUT_SECONDS": "2"},
        args=["--metrics-port", str(metrics_port)],
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        ready = {"database": "ok", "migrations": "ok", "reconciler": "ok"}
        assert wait_ready(server.url, 200) == {"status": "ready", **ready}
        assert database_up(metrics_url) == 1

        proxy.stop()
        down = wait_ready(server.url, 503)
        assert down == {
            "status": "not ready",
            "database": "unavailable",
            "migrations": "unknown",
            "reconciler": "ok",
        }
        assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}
        assert database_up(metrics_url) == 0

        proxy.start()
        assert wait_ready(server.url, 200) == {"status": "ready", **ready}
        assert database_up(metrics_url) == 1

        # A database at another revision than the code's: not ready until it is back.
        engine = create_engine(direct)
        try:
            with engine.begin() as conn:
                head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
                conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
            behind = wait_ready(server.url, 503)
            assert behind == {**behind, "database": "ok", "migrations": "pending"}
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
            wait_ready(server.url, 200)
        finally:
            engine.dispose()
    finally:
        server.stop()
