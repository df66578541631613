"""Running the API: one process (``serve``, ``demo``), or one worker of ``serve --workers N``."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rkvstore.config import Settings

log = logging.getLogger("rkvstore")
OnReady = Callable[[Any, Any], None]


class _Server:
    """uvicorn's server, but a SIGINT/SIGTERM stop ends the process with status 0.

    uvicorn re-raises a captured signal after its graceful shutdown, so the
    process would die of it (-15, or KeyboardInterrupt for SIGINT).
    """

    @staticmethod
    def build(config: Any) -> Any:
        import uvicorn

        from rkvstore.api.http_guard import deepen_listen_queue

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets=sockets)
                deepen_listen_queue(self.servers)

            def capture_signals(self) -> Any:
                captured = super().capture_signals()

                @contextlib.contextmanager
                def without_reraise() -> Iterator[None]:
                    with captured:
                        yield
                        self._captured_signals.clear()

                return without_reraise()

        return Server(config)


def _uvicorn_server(settings: Settings, app: Any) -> Any:
    import uvicorn

    from rkvstore.api.http_guard import (
        ACCEPTS_PER_TURN,
        ConnectionGuard,
        connection_cap,
        protocol_class,
    )

    guard = ConnectionGuard(
        connection_cap(settings.max_connections), settings.http_request_timeout_seconds
    )
    # No uvicorn access log: it would print query strings, and they hold passwords.
    return _Server.build(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http=protocol_class(guard, settings.http_parser),
            loop=settings.event_loop,
            ws="none",  # one RPC route: an Upgrade header is just a header
            # acs:SourceIp and acs:SecureTransport come from the connection, unless
            # the operator names a proxy whose forwarded headers are to be believed.
            proxy_headers=bool(settings.trusted_proxies.strip()),
            forwarded_allow_ips=settings.trusted_proxies.strip() or None,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=10,
            timeout_keep_alive=max(1, round(settings.http_keepalive_seconds)),
            backlog=ACCEPTS_PER_TURN,
            # h11 buffers a request line and headers up to this before it parses them
            # (16 KiB by default): a query up to the request bound, and just past it,
            # must reach the app whole however TCP splits it (413, not a 400).
            h11_max_incomplete_event_size=settings.max_request_bytes + 16 * 1024,
        )
    )


def run_server(settings: Settings, on_ready: OnReady | None = None) -> None:
    """One process serves until SIGINT/SIGTERM, supervising the local nodes itself;
    ``on_ready(deps, root_key)`` runs in a thread once listening. Logging is set up."""
    from rkvstore.app import create_app
    from rkvstore.bootstrap import build_deps, build_registry, ensure_root_tenant

    deps = build_deps(settings)
    root_key = ensure_root_tenant(deps)
    app = create_app(deps, build_registry())
    log.info(
        "serving region %s on http://%s:%d (database: %s)",
        settings.region,
        settings.host,
        settings.port,
        deps.engine.url.render_as_string(hide_password=True),
    )
    server = _uvicorn_server(settings, app)
    if on_ready is not None:

        def when_started() -> None:
            deadline = time.monotonic() + 120
            while not server.started and time.monotonic() < deadline and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                try:
                    on_ready(deps, root_key)
                except Exception:
                    log.exception("demo set-up failed")
                    server.should_exit = True

        threading.Thread(target=when_started, name="on-ready", daemon=True).start()
    server.run()


def run_worker(settings: Settings, listener: socket.socket, stopping: Any) -> None:
    """One of ``--workers N``, in a forked process: serves on the shared ``listener``;
    supervises the local nodes if it wins the election (supervision.py)."""
    from rkvstore.app import create_app
    from rkvstore.bootstrap import build_deps, build_registry
    from rkvstore.supervision import SupervisorElection

    deps = build_deps(settings)
    election = SupervisorElection(deps, stopping)
    app = create_app(deps, build_registry(), background=election)
    server = _uvicorn_server(settings, app)
    server.run(sockets=[listener])
