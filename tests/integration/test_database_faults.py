"""Database faults on a live ``rkvstore serve``: answered 503 within the bound, then recovered.

Every test starts its own server and its own database, then breaks the
database under it:

1. PostgreSQL of the test's own (``tests/pg_private.py``, not the shared one on
   5432): (a) the nonce table locked by another session; (b) every process of
   it SIGSTOPped — connections stay open and nothing answers; (c) stopped
   (fast shutdown), then started again on the same port and data dir.
2. SQLite write-locked by another process (``BEGIN EXCLUSIVE``).
3. SQLite on a full filesystem (a 16 MB tmpfs filled to ENOSPC; root only).

During the fault every request answers 503 ``ServiceUnavailable`` (code and
message) within a bound derived from ``RKVSTORE_DB_TIMEOUT_SECONDS`` (an upper
bound only); when the fault ends the same server answers 200 again, without a
restart. The server's output holds no traceback, no 500, and one "the
database is unavailable" warning per 503, not a flood. Every wait is bounded;
everything a test starts is stopped in a ``finally``. Timings are printed (run
with ``-rP``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from rkvstore.store.db import WATCHDOG_GRACE_SECONDS
from tests.api.instances import new_password
from tests.conftest import ARTIFACT_DIRS, LiveServer, remember_secret, start_server
from tests.pg_private import private_postgres

pytestmark = pytest.mark.slow

SERVICE_UNAVAILABLE = (
    503,
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
)
SLACK = 5.0  # seconds on top of a bound: a loaded machine, Python, HTTP
HTTP_TIMEOUT = 30.0  # a request that gets no answer at all fails here, not never
RECOVERY_TIMEOUT = 20.0  # from the end of a fault to a 200
POLL = 0.2
FAST_RECONCILE = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "1",
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": "1",
}
UNAVAILABLE_LINE = re.compile(r" WARNING rkvstore\.api request (\S+): the database is unavailable ")


# --------------------------------------------------------------------------- calling the server


@dataclass
class Answer:
    action: str
    status: int
    code: str | None
    message: str | None
    request_id: str
    seconds: float


@dataclass
class Caller:
    """A signed client that keeps every answer (the log is checked against them)."""

    server: LiveServer
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = RpcClient(
            self.server.endpoint,
            self.server.access_key_id,
            Secret(self.server.access_key_secret),
            timeout=HTTP_TIMEOUT,
        )

    def close(self) -> None:
        self.client.close()

    def ask(self, action: str, params: dict[str, Any] | None = None) -> Answer:
        started = time.monotonic()
        try:
            response = self.client.request(action, params)
        except httpx.TimeoutException as exc:
            raise AssertionError(f"{action}: no answer within {HTTP_TIMEOUT} s") from exc
        seconds = time.monotonic() - started
        body = response.json()
        answer = Answer(
            action,
            response.status_code,
            body.get("Code"),
            body.get("Message"),
            str(body.get("RequestId", "")),
            seconds,
        )
        self.answers.append(answer)
        return answer

    @property
    def unavailable(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 503]


@contextlib.contextmanager
def calling(server: LiveServer) -> Iterator[Caller]:
    caller = Caller(server)
    try:
        yield caller
    finally:
        caller.close()


def assert_ok(answer: Answer) -> None:
    assert answer.status == 200, answer


def assert_unavailable(answer: Answer, bound: float) -> None:
    """503 ServiceUnavailable, code and message, within ``bound`` seconds (no lower bound)."""
    assert (answer.status, answer.code, answer.message) == SERVICE_UNAVAILABLE, answer
    assert answer.request_id, answer
    assert answer.seconds <= bound, f"{answer.action} took {answer.seconds:.1f} s > {bound} s"


def wait_back(caller: Caller, what: str, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Poll DescribeRegions until 200; meanwhile only 503 ServiceUnavailable. Seconds taken."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        answer = caller.ask("DescribeRegions")
        if answer.status == 200:
            took = time.monotonic() - started
            print(f"{what}: 200 again after {took:.2f} s")
            return took
        assert_unavailable(answer, HTTP_TIMEOUT)
        time.sleep(POLL)
    raise AssertionError(f"{what}: still no 200 {timeout} s after the fault ended")


def stop_server(server: LiveServer) -> None:
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        server.stop(signal.SIGKILL)


def check_output(output: Path, caller: Caller) -> None:
    """No traceback, no 500; one 'database is unavailable' warning per 503, not a flood."""
    text = output.read_text(errors="replace")
    assert "Traceback" not in text, text[-6000:]
    assert "status=500" not in text, text[-6000:]
    logged = UNAVAILABLE_LINE.findall(text)
    failed = [a.request_id for a in caller.unavailable]
    assert failed, "no request met the fault: the test proved nothing"
    missing = set(failed) - set(logged)
    assert not missing, f"503 answers without their warning: {sorted(missing)}\n{text[-6000:]}"
    assert len(logged) <= 2 * len(failed), f"{len(logged)} warnings for {len(failed)} 503s"
    print(f"{len(failed)} answers 503, {len(logged)} 'database is unavailable' warnings")


# --------------------------------------------------------------------------- 1. PostgreSQL

PG_DB_TIMEOUT = 2.0
# A lock held by another session: lock_timeout (and statement_timeout) answer.
LOCKED_BOUND = PG_DB_TIMEOUT + SLACK
# A frozen server: the watchdog closes the connection at the timeout plus its grace.
FROZEN_BOUND = PG_DB_TIMEOUT + WATCHDOG_GRACE_SECONDS + SLACK
# A stopped server refuses connections: answered before any timeout runs out.
STOPPED_BOUND = PG_DB_TIMEOUT


def test_postgres_locked_frozen_stopped_answers_503_and_comes_back(data_dir: Path) -> None:
    env = {**FAST_RECONCILE, "RKVSTORE_DB_TIMEOUT_SECONDS": str(PG_DB_TIMEOUT)}
    output = data_dir / "server.out"
    with private_postgres() as pg:
        url = pg.create_database("rkvstore")
        server = start_server(data_dir, database_url=url, extra_env=env)
        try:
            with calling(server) as caller:
                assert_ok(caller.ask("DescribeRegions"))
                assert_ok(caller.ask("DescribeInstances"))

                # (a) a table every signed request writes, locked by another session
                with pg.connect("rkvstore") as holder:
                    holder.autocommit = False
                    holder.execute("LOCK TABLE nonces IN ACCESS EXCLUSIVE MODE")
                    for action in ("DescribeRegions", "DescribeInstances"):
                        answer = caller.ask(action)
                        print(f"locked: {action} {answer.status} in {answer.seconds:.2f} s")
                        assert_unavailable(answer, LOCKED_BOUND)
                    holder.rollback()
                wait_back(caller, "unlocked")

                # (b) every PostgreSQL process stopped: nothing answers, nothing closes
                pg.freeze()
                try:
                    for action in ("DescribeRegions", "DescribeInstances", "DescribeRegions"):
                        answer = caller.ask(action)
                        print(f"frozen: {action} {answer.status} in {answer.seconds:.2f} s")
                        assert_unavailable(answer, FROZEN_BOUND)
                finally:
                    pg.thaw()
                wait_back(caller, "thawed")
                assert_ok(caller.ask("DescribeInstances"))

                # (c) PostgreSQL shut down, then started again on the same port and data
                pg.stop()
                for action in ("DescribeRegions", "DescribeInstances", "DescribeRegions"):
                    answer = caller.ask(action)
                    print(f"stopped: {action} {answer.status} in {answer.seconds:.2f} s")
                    assert_unavailable(answer, STOPPED_BOUND)
                pg.start()
                wait_back(caller, "restarted")
                assert_ok(caller.ask("DescribeInstances"))
        finally:
            stop_server(server)
    check_output(output, caller)


# --------------------------------------------------------------------------- 2. SQLite locked

SQLITE_DB_TIMEOUT = 1.0
BUSY_BOUND = SQLITE_DB_TIMEOUT + SLACK
LOCKER_TIMEOUT = 10.0  # the lock holder's own busy timeout, and how long we wait for it

# Holds the write lock until its stdin closes; says "locked" once it has it.
LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.read()
    conn.rollback()
    """
)


@contextlib.contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another process holds SQLite's write lock on ``database`` for the block's duration."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database), str(LOCKER_TIMEOUT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert locker.stdin is not None and locker.stdout is not None
    try:
        ready, _, _ = select.select([locker.stdout], [], [], LOCKER_TIMEOUT + SLACK)
        line = locker.stdout.readline() if ready else b""
        assert line.strip() == b"locked", f"the locker did not lock: {line!r}"
        yield
        locker.stdin.close()  # releases the lock: the locker rolls back and exits
        assert locker.wait(timeout=LOCKER_TIMEOUT) == 0
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait(timeout=LOCKER_TIMEOUT)
        locker.stdout.close()
        if not locker.stdin.closed:
            locker.stdin.close()


def test_sqlite_locked_by_another_process_answers_503_and_comes_back(data_dir: Path) -> None:
    env = {**FAST_RECONCILE, "RKVSTORE_DB_TIMEOUT_SECONDS": str(SQLITE_DB_TIMEOUT)}
    server = start_server(data_dir, extra_env=env)
    try:
        with calling(server) as caller:
            assert_ok(caller.ask("DescribeRegions"))
            with write_locked(data_dir / "rkvstore.db"):
                for action in ("DescribeRegions", "DescribeInstances", "DescribeRegions"):
                    answer = caller.ask(action)
                    print(f"locked: {action} {answer.status} in {answer.seconds:.2f} s")
                    assert_unavailable(answer, BUSY_BOUND)
            wait_back(caller, "unlocked")
            assert_ok(caller.ask("DescribeInstances"))
    finally:
        stop_server(server)
    check_output(data_dir / "server.out", caller)


# --------------------------------------------------------------------------- 3. a full disk

FS_SIZE = 16 << 20
FULL_ATTEMPTS = 50  # requests on the full disk until one must have met it
MOUNT_TIMEOUT = 30.0


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem answers ENOSPC; the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 512):
            block = bytes(size)
            for _ in range(FS_SIZE // size + 1):  # never more than the whole filesystem
                try:
                    written += out.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            else:
                raise AssertionError(f"wrote {written} bytes and the disk is not full")
    return written


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint.mkdir()
    options = f"size={FS_SIZE},mode=0700"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "rkvstore-full", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=MOUNT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield mountpoint
    finally:
        unmounted = subprocess.run(["umount", str(mountpoint)], timeout=MOUNT_TIMEOUT, check=False)
        if unmounted.returncode != 0:  # something still holds it: detach it at least
            subprocess.run(["umount", "-l", str(mountpoint)], timeout=MOUNT_TIMEOUT, check=False)


def test_full_disk_answers_503_and_comes_back(tmp_path: Path) -> None:
    env = {**FAST_RECONCILE, "RKVSTORE_DB_TIMEOUT_SECONDS": "2"}
    output = tmp_path / "server.out"  # not on the full disk
    ARTIFACT_DIRS.append(tmp_path)
    with small_tmpfs(tmp_path / "small") as mountpoint:
        data_dir = mountpoint / "data"
        filler = mountpoint / "filler"
        server = start_server(data_dir, output=output, extra_env=env)
        try:
            with calling(server) as caller:
                assert_ok(caller.ask("DescribeRegions"))
                written = fill(filler)
                print(f"filled the disk with {written >> 20} MB")
                for attempt in range(1, FULL_ATTEMPTS + 1):
                    answer = caller.ask("DescribeRegions" if attempt % 2 else "DescribeInstances")
                    if answer.status != 200:
                        print(f"full: {answer.action} {answer.status} after {attempt} requests")
                        assert_unavailable(answer, 2.0 + SLACK)
                        break
                else:
                    raise AssertionError(f"{FULL_ATTEMPTS} requests on a full disk: all 200")
                for action in ("DescribeRegions", "DescribeInstances"):
                    answer = caller.ask(action)
                    print(f"full: {action} {answer.status} in {answer.seconds:.2f} s")
                    assert_unavailable(answer, 2.0 + SLACK)
                filler.unlink()
                wait_back(caller, "space freed")
                assert_ok(caller.ask("DescribeInstances"))
        finally:
            stop_server(server)
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            # what rkvstore left on the disk, for the session's secret scan
            shutil.copytree(data_dir, tmp_path / "data-copy", dirs_exist_ok=True)
    check_output(output, caller)


LOCK_HELD = 4.0  # seconds: past the build (~1 s) and past the 1 s busy timeout


@pytest.mark.slow
def test_an_instance_built_while_the_database_is_locked_becomes_normal(data_dir: Path) -> None:
    """The build records its outcome once the database answers: never left Creating."""
    env = {**FAST_RECONCILE, "RKVSTORE_DB_TIMEOUT_SECONDS": "1"}
    server = start_server(data_dir, extra_env=env)
    try:
        with calling(server) as caller:
            body = caller.client.call(
                "CreateInstance",
                {"NodeType": "STAND_ALONE", "Password": Secret(remember_secret(new_password()))},
            )
            instance_id = body["InstanceId"]
            with write_locked(data_dir / "rkvstore.db"):  # the build meets a locked file
                time.sleep(LOCK_HELD)
            deadline = time.monotonic() + RECOVERY_TIMEOUT
            status = None
            while time.monotonic() < deadline:
                answer = caller.client.call(
                    "DescribeInstanceAttribute", {"InstanceId": instance_id}
                )
                status = answer["Instances"]["DBInstanceAttribute"][0]["InstanceStatus"]
                if status == "Normal":
                    break
                time.sleep(0.2)
            assert status == "Normal", f"{instance_id} still {status} {RECOVERY_TIMEOUT} s after"
            caller.client.call("DeleteInstance", {"InstanceId": instance_id})
    finally:
        stop_server(server)
    text = (data_dir / "server.out").read_text()
    assert "Traceback" not in text, text[-6000:]
