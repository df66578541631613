"""What operators probe: ``/healthz`` and ``/readyz`` on the API port, ``/metrics`` beside it.

Health answers are unauthenticated and say nothing of any tenant: a status
and, for ``/readyz``, one word per check. They are not access-logged (a
prober would fill the log) nor counted as API requests.

``/metrics`` is served on a listener of its own (``RKVSTORE_METRICS_PORT``),
by a small threaded HTTP server of ``prometheus_client`` on a socket this
process (or, with ``--workers N``, the parent) bound: it never shares a
port, a thread or a connection limit with the API.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from rkvstore import metrics
from rkvstore.metrics import ScrapeGauge
from rkvstore.services.context import Deps
from rkvstore.store import line_state
from rkvstore.store.db import database_revision

log = logging.getLogger("rkvstore.probes")
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
# A scrape connection that sends nothing is closed after this.
SCRAPE_TIMEOUT_SECONDS = 10.0


# --------------------------------------------------------------------------- health


def reconciler_bound(deps: Deps) -> float:
    """How long the reconciler's loop may go without a look before it counts as stalled:
    a look waits at most an interval, and a statement at most the database's bound."""
    s = deps.settings
    return max(30.0, 10 * s.reconcile_interval_seconds + 4 * s.db_timeout_seconds)


def readiness(deps: Deps, head: str) -> tuple[bool, dict[str, str]]:
    """Whether this process can serve, and why not: the database answers one bounded
    read, it is at the code's migration, and the reconciler (where this process runs
    it) looked recently."""
    checks: dict[str, str] = {}
    try:
        with deps.single.connect() as conn:
            revision = database_revision(conn)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if revision == head else "pending"
    except SQLAlchemyError:
        checks["database"] = "unavailable"
        checks["migrations"] = "unknown"
    since = deps.reconciler.seconds_since_look()
    if since is None:
        checks["reconciler"] = "elsewhere"  # a worker that does not supervise
    else:
        checks["reconciler"] = "ok" if since <= reconciler_bound(deps) else "stalled"
    ready = all(value in ("ok", "elsewhere") for value in checks.values())
    return ready, checks


def health_response(path: str, deps: Deps, head: str) -> Response:
    """On a worker thread: the answer to ``/healthz`` or ``/readyz``."""
    if path == "/healthz":
        return _json(200, {"status": "ok"})
    ready, checks = readiness(deps, head)
    return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", **checks})


def _json(status: int, body: dict[str, str]) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


# --------------------------------------------------------------------------- metrics


def _unreachable_nodes(conn: Connection, _now: float) -> float:
    return line_state.count_unreachable_nodes(conn)


KERNEL_GAUGES = (
    ScrapeGauge(
        "rkvstore_unreachable_nodes",
        "Nodes the reconciler's last pass over their instance could not reach.",
        _unreachable_nodes,
    ),
)


class _DatabaseGauges:
    """Gauges read from the database (shared by every process) when scraped."""

    def __init__(self, deps: Deps, gauges: Sequence[ScrapeGauge]) -> None:
        self.deps, self.gauges = deps, gauges

    def collect(self) -> Iterator[Metric]:
        values: list[float] = []
        try:
            with self.deps.single.connect() as conn:
                now = time.time()
                values = [g.count(conn, now) for g in self.gauges]
        except SQLAlchemyError as exc:
            log.warning("metrics: the database is unavailable (%s)", type(exc).__name__)
        yield GaugeMetricFamily(
            "rkvstore_database_up",
            "1 if this scrape could read the database (the gauges below need it).",
            value=1 if values else 0,
        )
        for gauge, value in zip(self.gauges, values, strict=False):
            yield GaugeMetricFamily(gauge.name, gauge.help, value=value)


class _Counted:
    """This process's own counters (one process serves)."""

    def collect(self) -> Iterator[Metric]:
        yield from metrics.OWN.collect()


def scrape_registry(deps: Deps, gauges: Sequence[ScrapeGauge]) -> CollectorRegistry:
    """What a scrape answers: the counters (summed over the workers' files in
    multiprocess mode), and the gauges read from the database."""
    registry = CollectorRegistry()
    if metrics.multiprocess():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Counted())
    registry.register(_DatabaseGauges(deps, [*KERNEL_GAUGES, *gauges]))
    return registry


class _Handler(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (a scraper every few seconds would fill the log)."""


class _OnSocket(socketserver.ThreadingMixIn, WSGIServer):
    """A threaded WSGI server on a socket bound already (shared by the workers)."""

    daemon_threads = True

    def __init__(self, sock: socket.socket) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__((host, port), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = host, port
        self.setup_environ()


def _only_metrics_path(app: Any) -> Any:
    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not Found: metrics are at /metrics\n"]
        return app(environ, start_response)

    return serve


class MetricsServer:
    """``GET /metrics`` on ``sock`` from a thread; ``stop`` ends it (the socket is closed)."""

    def __init__(self, sock: socket.socket, deps: Deps, gauges: Sequence[ScrapeGauge]) -> None:
        self._server = _OnSocket(sock)
        self._server.set_app(_only_metrics_path(make_wsgi_app(scrape_registry(deps, gauges))))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
