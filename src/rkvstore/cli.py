"""The command line: ``serve`` the API, ``call`` it."""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from rkvstore.config import API_VERSION, Settings
from rkvstore.secret import SECRET_PARAMETERS, Secret


def setup_logging(settings: Settings, level: str = "INFO") -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(settings.effective_log_file, encoding="utf-8"),
    ]
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)


def _settings(**options: Any) -> Settings:
    """CLI options that were given, over ``RKVSTORE_*`` variables, over defaults."""
    return Settings(**{k: v for k, v in options.items() if v is not None})


@click.group()
@click.version_option(package_name="rkvstore")
def main() -> None:
    """rkvstore: a self-hosted control plane for Redis accounts (R-kvstore OpenAPI)."""


def _server_options(func: Any) -> Any:
    options = [
        click.option("--host", help="Address to listen on [127.0.0.1; RKVSTORE_HOST]."),
        click.option("--port", type=int, help="Port to listen on [8080; RKVSTORE_PORT]."),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Where the database, keys, logs and Redis nodes live "
            "[./rkvstore-data; RKVSTORE_DATA_DIR].",
        ),
        click.option(
            "--database-url",
            help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
            "[SQLite in the data dir; RKVSTORE_DATABASE_URL].",
        ),
        click.option("--region", help="The deployment's region [cn-hangzhou; RKVSTORE_REGION]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _Server:
    """uvicorn's server, but a SIGINT/SIGTERM stop ends the process with status 0.

    uvicorn re-raises a captured signal after its graceful shutdown, so the
    process would die of it (-15, or KeyboardInterrupt for SIGINT).
    """

    @staticmethod
    def build(config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self) -> Any:
                captured = super().capture_signals()

                @contextlib.contextmanager
                def without_reraise() -> Iterator[None]:
                    with captured:
                        yield
                        self._captured_signals.clear()

                return without_reraise()

        return Server(config)


def _run_server(settings: Settings, log_level: str, on_ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM; ``on_ready(deps, root_key)`` runs in a thread once listening."""
    import threading
    import time

    import uvicorn

    from rkvstore.app import create_app
    from rkvstore.bootstrap import build_deps, build_registry, ensure_root_tenant

    setup_logging(settings, log_level)
    deps = build_deps(settings)
    root_key = ensure_root_tenant(deps)
    app = create_app(deps, build_registry())
    logging.getLogger("rkvstore").info(
        "serving region %s on http://%s:%d (database: %s)",
        settings.region,
        settings.host,
        settings.port,
        deps.engine.url.render_as_string(hide_password=True),
    )
    # No uvicorn access log: it would print query strings, and they hold passwords.
    server = _Server.build(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
    )
    if on_ready is not None:

        def when_started() -> None:
            deadline = time.monotonic() + 120
            while not server.started and time.monotonic() < deadline and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                try:
                    on_ready(deps, root_key)
                except Exception:
                    logging.getLogger("rkvstore").exception("demo set-up failed")
                    server.should_exit = True

        threading.Thread(target=when_started, name="on-ready", daemon=True).start()
    server.run()


@main.command()
@_server_options
@click.option("--log-level", default="INFO", show_default=True)
def serve(log_level: str, **options: Any) -> None:
    """Run the API server until SIGINT or SIGTERM."""
    os.umask(0o077)  # everything under the data dir is the operator's alone
    _run_server(_settings(**options), log_level)


@main.command()
@_server_options
@click.option("--log-level", default="WARNING", show_default=True)
def demo(log_level: str, **options: Any) -> None:
    """Serve, create a local instance with an account "demo", and print how to reset it."""
    from rkvstore.demo import set_up_demo

    os.umask(0o077)
    _run_server(_settings(**options), log_level, on_ready=set_up_demo)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("action")
@click.option(
    "--endpoint",
    envvar="RKVSTORE_ENDPOINT",
    default="http://127.0.0.1:8080",
    show_default=True,
)
@click.option("--access-key-id", envvar="ALIBABA_CLOUD_ACCESS_KEY_ID", required=True)
@click.option(
    "--access-key-secret",
    envvar="ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    required=True,
    help="Or ALIBABA_CLOUD_ACCESS_KEY_SECRET.",
)
@click.option("--api-version", default=API_VERSION, show_default=True)
@click.pass_context
def call(
    ctx: click.Context,
    action: str,
    endpoint: str,
    access_key_id: str,
    access_key_secret: str,
    api_version: str,
) -> None:
    """Call ACTION with --Param value pairs, signed with V3; print the JSON answer.

    A secret parameter given as "-" (e.g. --AccountPassword -) is read from a
    prompt, or from stdin when stdin is not a terminal.
    """
    from rkvstore.client import RpcClient

    params = _parse_call_params(ctx.args)
    with RpcClient(endpoint, access_key_id, Secret(access_key_secret), version=api_version) as c:
        response = c.request(action, params)
    try:
        body = json.loads(response.content)
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(response.text)
    if response.status_code >= 300:
        sys.exit(1)


def _parse_call_params(args: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--") or len(arg) < 3:
            raise click.UsageError(f"expected --Param value, got {arg!r}")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            try:
                value = next(it)
            except StopIteration:
                raise click.UsageError(f"--{name} needs a value") from None
        if name in SECRET_PARAMETERS and value == "-":
            value = _read_secret(name)
        params[name] = Secret(value) if name in SECRET_PARAMETERS else value
    return params


def _read_secret(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{name}: ")
    return sys.stdin.readline().rstrip("\r\n")


if __name__ == "__main__":  # pragma: no cover
    main()
