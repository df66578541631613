"""A PostgreSQL cluster of the test's own: initdb'd into a temp dir, on a free loopback port.

Not a test module. ``private_postgres()`` skips the test (with the reason) when
``initdb`` is not found; it runs ``initdb`` and ``postgres`` as the ``postgres``
OS user when the tests run as root (both refuse root), as the current user
otherwise. The postmaster runs in its own session; its children (backends,
checkpointer, WAL writer...) each make themselves a session of their own
(``setsid`` in ``InitPostmasterChild``), so one ``killpg`` does not reach them:
``freeze`` and ``thaw`` (SIGSTOP, SIGCONT) signal the postmaster and each of
its children. Trust auth, user ``postgres``, ``fsync=off``; nothing touches the
shared server on 5432.

    with private_postgres() as pg:
        url = pg.create_database("rkv")   # postgresql+psycopg://postgres@127.0.0.1:PORT/rkv
        pg.freeze(); ...; pg.thaw()
        pg.stop(); ...; pg.start()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
INITDB_TIMEOUT = 120.0


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _run_as() -> dict[str, Any]:
    """``Popen`` arguments that drop root to the ``postgres`` user; nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' OS user to run PostgreSQL as")
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class PrivatePostgres:
    def __init__(self, bindir: Path, root: Path, port: int, run_as: dict[str, Any]) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = port
        self._run_as = run_as
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def initdb(self) -> None:
        args = [str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust", "-U"]
        args += ["postgres", "--no-locale", "-E", "UTF8", "--no-sync"]
        with self.log.open("ab") as out:
            done = subprocess.run(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INITDB_TIMEOUT,
                cwd=self.root,
                check=False,
                **self._run_as,
            )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{self.log_text()}")

    def start(self) -> None:
        """Start the postmaster (own session) and wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        args += ["-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
                **self._run_as,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_text()}")
            try:
                with self.connect(timeout=1):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT} s")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: fast shutdown (clients are disconnected); waits for the postmaster to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.thaw()  # a frozen postmaster cannot shut down
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the postmaster and its children (the last resort of a cleanup)."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_all(signal.SIGCONT)
        self._signal_all(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)

    # ------------------------------------------------------------------ faults

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every child: connections open, nothing answers."""
        assert self.process is not None and self.process.poll() is None
        # The postmaster first: a stopped postmaster forks no new child.
        os.killpg(self.process.pid, signal.SIGSTOP)
        self._wait_state(self.process.pid, "T")  # stopped
        for child in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
        for child in self._children():
            self._wait_state(child, "TZ")  # stopped, or exited and not yet reaped

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: int) -> None:
        assert self.process is not None
        for pid in [*self._children(), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _children(self) -> list[int]:
        assert self.process is not None
        return [pid for pid, ppid, _ in _processes() if ppid == self.process.pid]

    @staticmethod
    def _wait_state(pid: int, states: str) -> None:
        """Until ``pid`` is in one of ``states`` (or gone): signals are delivered asynchronously."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            current = _state(pid)
            if current is None or current in states:
                return
            time.sleep(0.01)
        raise RuntimeError(f"process {pid} not in a state of {states!r} within {STOP_TIMEOUT} s")

    # ------------------------------------------------------------------ use

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", timeout: int = 5) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=database,
            connect_timeout=timeout,
            autocommit=True,
        )

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` from ``/proc/<pid>/stat``; None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[1])


def _state(pid: int) -> str | None:
    stat = _stat(pid)
    return None if stat is None else stat[0]


def _processes() -> list[tuple[int, int, str]]:
    """``(pid, ppid, state)`` of every process on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found.append((int(entry.name), stat[1], stat[0]))
    return found


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """An initdb'd, started cluster; stopped (thawed first) and deleted afterwards."""
    bindir = _bindir()
    if bindir is None or not (bindir / "postgres").exists():
        pytest.skip("PostgreSQL's initdb is not found (PATH, /usr/lib/postgresql/*/bin)")
    run_as = _run_as()
    # Not under pytest's tmp dir: its parents are private to root, and the
    # postgres user must reach the data dir.
    root = Path(tempfile.mkdtemp(prefix="rkv-pg-"))
    try:
        (root / "sockets").mkdir()
        if run_as:
            for path in (root, root / "sockets"):
                shutil.chown(path, user="postgres", group="postgres")
        pg = PrivatePostgres(bindir, root, free_port(), run_as)
        pg.initdb()
        pg.start()
        try:
            yield pg
        finally:
            try:
                pg.stop()
            finally:
                pg.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)
