"""Bounds of the engine's own (issue 8): whole exchanges, fair passes, flat memory, quiet leases.

- ``engine.bounded``: a node that trickles its reply, or answers every command
  slowly, is given up on when the exchange's deadline passes, not when a
  single read has waited a socket timeout.
- ``FairPool``: one tenant's stuck jobs hold at most its share of workers.
- ``RedisEngine``: what it remembers about rendered ACL lines does not grow
  with every password ever set.
- ``TaskSlots``: the lease renewer says ERROR only when a slot was really lost.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from rkvstore.engine import bounded
from rkvstore.engine.acl import UserChange
from rkvstore.engine.redis_engine import NodeAddress, RedisEngine, desired_user
from rkvstore.secret import Secret
from rkvstore.services.fair import FairPool
from rkvstore.services.tasks import TaskSlots
from rkvstore.store.db import make_engine, migrate
from tests.conftest import free_port, remember_secret
from tests.integration.test_resilience import (
    SYSTEM_REDIS,
    auth_ok,
    start_own_redis,
    stop_own_redis,
    wait_for,
)

SLACK = 1.5  # seconds a bounded call may take beyond its bound on a loaded machine


# --------------------------------------------------------------------------- misbehaving servers


@contextmanager
def misbehaving_server(reply_byte_every: float, answer_after: float = 0.0) -> Iterator[int]:
    """A TCP server on loopback that answers every RESP command with ``+PONG``:
    after ``answer_after`` seconds, then one byte every ``reply_byte_every`` seconds."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    workers: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            for _ in range(1000):  # bounded: a test lasts seconds
                if stop.is_set():
                    return
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for _command in range(max(1, data.count(b"*"))):
                    if stop.wait(answer_after):
                        return
                    for byte in b"+PONG\r\n":
                        try:
                            conn.sendall(bytes([byte]))
                        except OSError:
                            return
                        if reply_byte_every and stop.wait(reply_byte_every):
                            return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=serve, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield port
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for worker in workers:
            worker.join(5)


def test_a_trickled_reply_is_given_up_on_at_the_socket_timeout_counted_once() -> None:
    # 7 bytes, one every 0.6 s: each read is quick, the whole reply takes 4.2 s.
    with misbehaving_server(reply_byte_every=0.6) as port:
        client = bounded.client("127.0.0.1", port, timeout=1.0, protocol=2)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.execute_command("PING")
        elapsed = time.monotonic() - started
        client.close()
    assert elapsed < 1.0 + SLACK, elapsed


def test_an_exchange_bounds_several_commands_as_a_whole() -> None:
    # Each command is answered after 0.4 s, well within the 2 s socket timeout.
    with misbehaving_server(reply_byte_every=0.0, answer_after=0.4) as port:
        client = bounded.client("127.0.0.1", port, timeout=2.0, protocol=2)
        try:
            assert client.execute_command("PING")
            answered = 0
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError), bounded.exchange(1.0):
                for _ in range(10):
                    client.execute_command("PING")
                    answered += 1
            elapsed = time.monotonic() - started
        finally:
            client.close()
    assert answered in (1, 2), answered
    assert elapsed < 1.0 + SLACK, elapsed


def test_exchanges_nest_to_the_earlier_deadline() -> None:
    with bounded.exchange(10.0) as outer, bounded.exchange(0.5) as inner:
        assert inner < outer
        with bounded.exchange(20.0) as innermost:
            assert innermost == inner
    assert bounded.exchange_deadline() is None


# --------------------------------------------------------------------------- fair passes


def test_one_key_holds_at_most_its_share_and_others_run_meanwhile() -> None:
    pool = FairPool(workers=4, per_key=2, name="test-fair")
    release = threading.Event()
    running: dict[str, int] = {"stuck": 0, "other": 0}
    most = {"stuck": 0}
    done = threading.Event()
    lock = threading.Lock()

    def stuck() -> None:
        with lock:
            running["stuck"] += 1
            most["stuck"] = max(most["stuck"], running["stuck"])
        release.wait(10)
        with lock:
            running["stuck"] -= 1

    try:
        for _ in range(10):
            assert pool.submit("stuck", stuck)
        assert pool.submit("other", done.set)
        assert done.wait(5), "another key's job waited behind the stuck ones"
        assert pool.running("stuck") == 2
    finally:
        release.set()
        pool.shutdown()
    assert most["stuck"] == 2


# --------------------------------------------------------------------------- flat memory


def test_what_the_engine_remembers_does_not_grow_with_passwords(tmp_path: Path) -> None:
    if not SYSTEM_REDIS.exists():
        pytest.skip(f"no {SYSTEM_REDIS}")
    admin = remember_secret("Adm!" + secrets.token_hex(14))
    node = start_own_redis(
        tmp_path / "node", free_port(), hashlib.sha256(admin.encode()).hexdigest(), None
    )
    engine = RedisEngine(node_timeout=2.0)
    try:
        wait_for("own redis up", lambda: auth_ok(node.port, "admin", admin), 15)
        nodes = [engine.node(NodeAddress("127.0.0.1", node.port), Secret(admin), user="admin")]
        sizes = []
        for i in range(200):
            digest = hashlib.sha256(f"pw-{i}".encode()).hexdigest()
            user = desired_user("churn", digest, "RoleReadWrite", "7.0")
            engine.apply(nodes, [UserChange("churn", user)])
            sizes.append(len(engine._rendered))
        assert set(sizes) == {1}, sizes[:5]
    finally:
        engine.close()
        stop_own_redis(node)


# --------------------------------------------------------------------------- quiet leases


def test_releases_racing_the_renewer_log_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'slots.db'}")
    migrate(engine)
    slots = TaskSlots(engine, lease_seconds=0.06, wait_seconds=5)  # renews every 20 ms
    caplog.set_level(logging.WARNING, logger="rkvstore.tasks")
    try:
        deadline = time.monotonic() + 2.0
        cycles = 0
        while time.monotonic() < deadline:
            with slots.hold(f"r-{cycles % 3}", "ResetAccountPassword"):
                time.sleep(0.003)  # a task's work; the renewer ticks in between
            cycles += 1
    finally:
        engine.dispose()
    assert cycles > 50
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
