"""Shared fixtures: free ports, SQLite and PostgreSQL databases, a live server."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.artifacts import (
    ARTIFACT_DIRS,
    SESSION_ENV,
    USED_SECRETS,
    remember_secret,
    scan_session,
    session_dir,
)

__all__ = ["ARTIFACT_DIRS", "USED_SECRETS", "remember_secret"]

PG_ADMIN_URL = os.environ.get(
    "RKVSTORE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Raw requests captured from the official SDKs (the workplace's
# shared/fixtures/sdk-captures/*.jsonl, copied in so that a lone clone tests them).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sdk-captures"


def free_port() -> int:
    """A free loopback port that no other worker of this run (pytest-xdist) is given.

    The kernel's pick is free now, but two workers may be told the same port
    before either binds it: the first to create ``ports/<port>`` in the session
    directory has it, for the rest of the run.
    """
    taken = session_dir() / "ports"
    taken.mkdir(exist_ok=True)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            (taken / str(port)).touch(exist_ok=False)
        except FileExistsError:
            continue
        return port
    raise RuntimeError("no free port that no other worker was given, in 100 tries")


# --------------------------------------------------------------------------- databases


def _pg_reachable() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


PG_AVAILABLE = _pg_reachable()
if os.environ.get("CI") and not PG_AVAILABLE:  # CI has PostgreSQL: never skip silently there
    raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"rkv_test_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store's tests run on both engines."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rkvstore.db'}"
        return
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rkvstore-data")
    ARTIFACT_DIRS.append(path)
    return path


# --------------------------------------------------------------------------- a live server

# The HTTP stacks a server can run (RKVSTORE_HTTP_PARSER, RKVSTORE_EVENT_LOOP): the
# default, and the pure-Python one. Tests of what the HTTP layer guarantees run on both.
HTTP_STACKS: dict[str, dict[str, str]] = {
    "httptools-uvloop": {"RKVSTORE_HTTP_PARSER": "httptools", "RKVSTORE_EVENT_LOOP": "uvloop"},
    "h11-asyncio": {"RKVSTORE_HTTP_PARSER": "h11", "RKVSTORE_EVENT_LOOP": "asyncio"},
}


@dataclass
class LiveServer:
    endpoint: str  # host:port
    access_key_id: str
    access_key_secret: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)
    ca: Path | None = None  # HTTPS, with a certificate of this CA

    @property
    def url(self) -> str:
        return f"{'http' if self.ca is None else 'https'}://{self.endpoint}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    access_key: tuple[str, str] | None = None,
    output: Path | None = None,
    nofile: int | None = None,
    args: Sequence[str] = (),
    ca: Path | None = None,
    may_exit: bool = False,
) -> LiveServer:
    """``output``: where the server's stdout and stderr go (default ``data_dir/server.out``);
    ``nofile``: the server's file-descriptor limit, soft and hard (default: this process's);
    ``args``: more options for ``rkvstore serve`` (e.g. ``--log-level DEBUG``);
    ``ca``: the server speaks HTTPS (TLS settings in ``extra_env`` or ``args``) with a
    certificate this CA signed; ``may_exit``: a server that exits before it answers (one
    made to crash at a point it may reach first) is returned, not an error."""
    output = output or data_dir / "server.out"
    port = free_port()
    key_id, key_secret = access_key or (
        "LTAItest" + secrets.token_hex(8),
        remember_secret("Sk" + secrets.token_urlsafe(24)),
    )
    env = {
        **os.environ,
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_ID": key_id,
        "RKVSTORE_BOOTSTRAP_ACCESS_KEY_SECRET": key_secret,
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "rkvstore.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), *args]
    if database_url:
        command += ["--database-url", database_url]
    with output.open("ab") as log:  # the child keeps its own copy
        limit = None if nofile is None else functools.partial(_limit_nofile, nofile)
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit
        )
    server = LiveServer(f"127.0.0.1:{port}", key_id, key_secret, data_dir, process, env, ca)
    verify: ssl.SSLContext | bool = True if ca is None else ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if may_exit:
                return server
            raise RuntimeError(f"rkvstore serve exited: {output.read_text()}")
        try:
            httpx.get(server.url + "/", timeout=1, verify=verify)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError("rkvstore serve did not start within 30 s")


def _limit_nofile(limit: int) -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module, on SQLite, with a known root key."""
    path = tmp_path_factory.mktemp("live")
    ARTIFACT_DIRS.append(path)
    server = start_server(path)
    try:
        yield server
    finally:
        server.stop()


def load_captures(name: str = "*.jsonl") -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in sorted(FIXTURES.glob(name)):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


# --------------------------------------------------------------------------- the run's end


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """The process that runs the session makes the directory its workers record into."""
    if not _is_xdist_worker(config) and SESSION_ENV not in os.environ:
        session_dir()  # sets the variable the workers, started after this, inherit
        config.stash[_MADE_SESSION_DIR] = True


_MADE_SESSION_DIR = pytest.StashKey[bool]()
_SCAN_PROBLEMS = pytest.StashKey[list[str]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Once every test (every worker) is done: nothing the run left behind holds a
    secret a test used, and no server of the run answered a request 500."""
    config = session.config
    if _is_xdist_worker(config):
        return
    # A scan with nothing to read proves nothing: a failure, after a whole and clean run.
    whole = session.exitstatus == pytest.ExitCode.OK
    whole &= config.args_source == pytest.Config.ArgsSource.TESTPATHS and not (
        config.option.keyword or config.option.markexpr or getattr(config.option, "lf", False)
    )
    problems = scan_session(session_dir(), whole_suite=whole)
    config.stash[_SCAN_PROBLEMS] = problems
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problems = terminalreporter.config.stash.get(_SCAN_PROBLEMS, [])
    if problems:
        terminalreporter.section("the run's artifacts (tests/artifacts.py)", red=True)
        for line in problems:
            terminalreporter.line(line, red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_MADE_SESSION_DIR, False):
        shutil.rmtree(session_dir(), ignore_errors=True)
        del os.environ[SESSION_ENV]
