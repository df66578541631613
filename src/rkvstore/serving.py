"""Running the API: one process (``serve``, ``demo``), or one worker of ``serve --workers N``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rkvstore.config import Settings

log = logging.getLogger("rkvstore")
OnReady = Callable[[Any, Any], None]
# How long a closing TLS connection waits for the client's own close_notify.
TLS_SHUTDOWN_SECONDS = 1.0


class TlsSetupError(Exception):
    """The TLS settings cannot be used: the start stops with this message."""


def _no_password() -> str:
    raise TlsSetupError("is encrypted: give the private key unencrypted (file mode 0600)")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from ``RKVSTORE_TLS_CERTFILE``/``_KEYFILE``; None: plain HTTP.

    Messages name the files, never what the key file holds."""
    cert, key = settings.tls_certfile, settings.tls_keyfile
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("CERTFILE", "KEYFILE") if key is None else ("KEYFILE", "CERTFILE")
        raise TlsSetupError(
            f"RKVSTORE_TLS_{given} is set but RKVSTORE_TLS_{missing} is not: TLS needs "
            "both the certificate and its private key (--tls-certfile and --tls-keyfile)"
        )
    for what, path in (("certificate", cert), ("private key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise TlsSetupError(f"cannot read the TLS {what} file {path}: {exc.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 at least
    try:
        # A callable: an encrypted key fails instead of OpenSSL asking on the terminal.
        context.load_cert_chain(cert, key, password=_no_password)
    except TlsSetupError as exc:
        raise TlsSetupError(f"the TLS private key file {key} {exc}") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsSetupError(
                f"the TLS private key file {key} does not belong to the certificate in {cert}"
            ) from None
        try:  # which of the two it is: the certificates alone
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
        except ssl.SSLError:
            raise TlsSetupError(
                f"the TLS certificate file {cert} holds no PEM certificate"
            ) from None
        raise TlsSetupError(f"the TLS private key file {key} holds no PEM private key") from None
    return context


class _Server:
    """uvicorn's server, but a SIGINT/SIGTERM stop ends the process with status 0.

    uvicorn re-raises a captured signal after its graceful shutdown, so the
    process would die of it (-15, or KeyboardInterrupt for SIGINT).
    """

    @staticmethod
    def build(config: Any, handshake_timeout: float) -> Any:
        import uvicorn

        from rkvstore.api.http_guard import deepen_listen_queue

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                if self.config.ssl is None:
                    await super().startup(sockets=sockets)
                else:
                    await self._startup_bounding_handshakes(sockets)
                deepen_listen_queue(self.servers)

            async def _startup_bounding_handshakes(self, sockets: Any) -> None:
                # A TLS connection reaches the guarded protocol only once its
                # handshake is done: until then the handshake timeout bounds it
                # (asyncio's default is 60 s), here the request timeout. A closing
                # connection waits for the client's close_notify (30 s by default),
                # holding its socket and a graceful stop: briefly.
                loop: Any = asyncio.get_running_loop()
                loop.create_server = functools.partial(
                    loop.create_server,
                    ssl_handshake_timeout=handshake_timeout,
                    ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS,
                )
                try:
                    await super().startup(sockets=sockets)
                finally:
                    del loop.create_server

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
    config = uvicorn.Config(
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
    config.load()
    # Our own context (uvicorn's would ask for an encrypted key's password on the
    # terminal); uvicorn serves with it and gives requests the scheme https.
    config.ssl = tls_context(settings)
    return _Server.build(config, settings.http_request_timeout_seconds)


def listening_url(settings: Settings) -> str:
    scheme = "http" if settings.tls_certfile is None else "https"
    return f"{scheme}://{settings.host}:{settings.port}"


def metrics_address(settings: Settings) -> tuple[str, int] | None:
    """Where ``/metrics`` listens; None: nowhere (no ``RKVSTORE_METRICS_PORT``)."""
    if settings.metrics_port is None:
        return None
    return settings.metrics_host or settings.host, settings.metrics_port


@contextlib.contextmanager
def serving_metrics(deps: Any, sock: socket.socket | None) -> Iterator[None]:
    """``GET /metrics`` on ``sock`` (bound already) while the body runs."""
    if sock is None:
        yield
        return
    from rkvstore.api.probes import MetricsServer
    from rkvstore.products import scrape_gauges

    server = MetricsServer(sock, deps, scrape_gauges())
    server.start()
    try:
        yield
    finally:
        server.stop()


def run_server(
    settings: Settings,
    on_ready: OnReady | None = None,
    metrics_listener: socket.socket | None = None,
) -> None:
    """One process serves until SIGINT/SIGTERM, supervising the local nodes itself;
    ``on_ready(deps, root_key)`` runs in a thread once listening; ``/metrics`` on
    ``metrics_listener`` if given. Logging is set up."""
    from rkvstore.app import create_app
    from rkvstore.bootstrap import build_deps, build_registry, ensure_root_tenant

    deps = build_deps(settings)
    root_key = ensure_root_tenant(deps)
    app = create_app(deps, build_registry())
    log.info(
        "serving region %s on %s (database: %s)",
        settings.region,
        listening_url(settings),
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
    with serving_metrics(deps, metrics_listener):
        server.run()


def run_worker(
    settings: Settings,
    listener: socket.socket,
    stopping: Any,
    metrics_listener: socket.socket | None = None,
) -> None:
    """One of ``--workers N``, in a forked process: serves on the shared ``listener``
    (and ``/metrics`` on the shared ``metrics_listener``: any worker answers a scrape
    with every worker's counts); supervises the local nodes if it wins the election
    (supervision.py)."""
    from rkvstore.app import create_app
    from rkvstore.bootstrap import build_deps, build_registry
    from rkvstore.supervision import SupervisorElection

    deps = build_deps(settings)
    election = SupervisorElection(deps, stopping)
    app = create_app(deps, build_registry(), background=election)
    server = _uvicorn_server(settings, app)
    with serving_metrics(deps, metrics_listener):
        server.run(sockets=[listener])
