"""Cluster instances on real processes: every node, all or nothing, and kept so (issue 5).

One 3-shard cluster with a replica per shard (6 redis-server processes) is
created once for the module and shared by the tests, in file order: describe
it, reset through the official SDK, fail a shard over by hand, break single
nodes (ACL file deleted, a stray ``ACL SETUSER``, SIGSTOP), kill -9 ``rkvstore
serve`` at each crash point, and rotate the management password. The module's
server runs with a 1 s reconcile interval, a 1 s node deadline and a 3 s task
lease; it keeps the nodes running when it stops (SIGTERM), so that a server
restarted on the same data dir adopts them. RegisterInstance gets a cluster of
the test's own (/usr/bin/redis-server).

The management password is read the way bench/reset.py does (data dir, master
key, instances table): what the operator of the machine can do, and the only
way to run CLUSTER FAILOVER or break a node's ACL by hand (the instance's Super
accounts may not). Every password a test knows goes through
``remember_secret``, so the secret scan checks that none reaches a file.

Two tests pin down what issue 5 asks beyond the brief's list, and fail where
rkvstore falls short: a failed reset must put back every node that answered
before it answers (not leave them to the reconciler), and AccountStatus must be
``Unavailable`` while a dead task's change leaves the nodes out of line.

Timings (restart, repair, ServiceUnavailable, convergence) are printed: run
with ``-rP`` or ``-s`` to see them. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from redis.cluster import RedisCluster
from sqlalchemy import update

from rkvstore.client import RpcClient, RpcError
from rkvstore.config import Settings
from rkvstore.crypto import load_secret_box
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.faults import VARIABLE as CRASH_VARIABLE
from rkvstore.secret import Secret
from rkvstore.store import repo
from rkvstore.store.db import make_engine
from rkvstore.store.tables import tasks
from tests.api.instances import assert_wrongpass, wait_normal
from tests.api.instances import create_instance as create_and_wait
from tests.api.sdk_clients import new_sdk_client
from tests.conftest import ARTIFACT_DIRS, LiveServer, remember_secret, start_server
from tests.integration.test_resilience import (
    SERVICE_UNAVAILABLE_MESSAGE,
    SYSTEM_REDIS,
    LocalNodeFiles,
    OwnRedis,
    account_status,
    api,
    auth_ok,
    connect,
    kill_strays,
    log_text,
    new_password,
    pid_alive,
    processes_on_port,
    reset,
    start_own_redis,
    stop_own_redis,
    stop_server,
    wait_for,
)

INTERVAL = 1.0  # reconcile interval, seconds
LEASE = 3.0  # task lease, seconds
SHARDS = 3
MODULE_ENV = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": str(INTERVAL),
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": str(INTERVAL),  # drift nobody flagged, too
    "RKVSTORE_NODE_TIMEOUT_SECONDS": "1",
    "RKVSTORE_TASK_LEASE_SECONDS": str(LEASE),
    # SIGTERM leaves the nodes running: the next server on the data dir adopts them.
    "RKVSTORE_STOP_NODES_ON_EXIT": "false",
}
CREATE_TIMEOUT = 90.0
REPAIR_SLACK = 1.0  # polling and a pass's own duration on top of "3 intervals"
CRASH_POINTS = ["task-acquired", "fanout-first-node", "nodes-changed", "db-committed"]
CLUSTER_BUS = 10000
CLI = [sys.executable, "-m", "rkvstore.cli"]

TIMINGS: dict[str, float] = {}


def timed(label: str, seconds: float) -> None:
    TIMINGS[label] = seconds
    print(f"{label}: {seconds:.2f} s")


# --------------------------------------------------------------------------- reading nodes


def text_of(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def cluster_info(port: int, user: str, password: str) -> dict[str, str]:
    with connect(port, user, password) as conn:
        reply = conn.execute_command("CLUSTER", "INFO")
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return dict(line.split(":", 1) for line in text_of(reply).split() if ":" in line)


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[str, ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def cluster_nodes(port: int, user: str, password: str) -> list[NodeLine]:
    with connect(port, user, password) as conn:
        reply = conn.execute_command("CLUSTER", "NODES")
    lines = []
    for line in text_of(reply).strip().splitlines():
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        lines.append(
            NodeLine(
                node_id=fields[0],
                port=int(address.rpartition(":")[2] or 0),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(fields[8:]),
            )
        )
    return lines


def role(port: int, user: str, password: str) -> tuple[str, int | None]:
    """``("master", None)`` or ``("slave", <master port>)`` from ROLE."""
    with connect(port, user, password) as conn:
        reply = conn.execute_command("ROLE")
    kind = text_of(reply[0])
    return (kind, int(reply[2]) if kind == "slave" else None)


def link_status(port: int, user: str, password: str) -> str:
    with connect(port, user, password) as conn:
        return str(conn.info("replication").get("master_link_status", ""))


def replication_pairs(ports: list[int], user: str, password: str) -> list[tuple[int, int]]:
    """(master port, replica port) for every replica among ``ports``, as ROLE says now."""
    pairs = []
    for port in ports:
        kind, master = role(port, user, password)
        if kind == "slave":
            assert master is not None
            pairs.append((master, port))
    return sorted(pairs)


def node_files(server: LiveServer, instance_id: str) -> list[LocalNodeFiles]:
    """The instance's node dirs, ``<id>-0`` first."""
    root = server.data_dir / "nodes" / instance_id
    dirs = [d for d in root.iterdir() if (d / "redis.conf").is_file()]
    dirs.sort(key=lambda d: int(d.name.rsplit("-", 1)[1]))
    return [LocalNodeFiles(d.name, d) for d in dirs]


def write_replicated(master: int, replica: int, user: str, password: str, value: str) -> None:
    """SET a key the master serves (skipping MOVED ones), then read it on the replica."""
    with connect(master, user, password) as conn:
        for i in range(200):
            key = f"repl:{value}:{i}"
            try:
                conn.set(key, value)
                break
            except redis.exceptions.MovedError:  # another shard's slot
                continue
        else:
            raise AssertionError(f"no key of master {master} among 200")
    with connect(replica, user, password) as conn:
        with contextlib.suppress(redis.ResponseError):  # READONLY: cluster mode only
            conn.execute_command("READONLY")
        wait_for(f"{key} replicated to {replica}", lambda: conn.get(key) == value, 15)


def assert_only(ports: list[int], user: str, good: str, bad: str) -> None:
    """On every node ``good`` logs ``user`` in and ``bad`` is refused with WRONGPASS."""
    for port in ports:
        assert auth_ok(port, user, good), f"{user} refused on {port}"
        assert_wrongpass(port, user, bad)


# --------------------------------------------------------------------------- the operator's view


def management_password(server: LiveServer, instance_id: str) -> str:
    """As bench/reset.py reads it: the data dir's master key opens the instances table's copy."""
    settings = Settings(data_dir=server.data_dir, database_url=None, master_key=None)
    box = load_secret_box(settings.data_dir, None)
    engine = make_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            instance = repo.get_instance_any_tenant(conn, instance_id)
    finally:
        engine.dispose()
    assert instance is not None, instance_id
    return remember_secret(box.open(instance.mgmt_password_encrypted).reveal())


def stored_hash(server: LiveServer, instance_id: str, account: str) -> str:
    """The account's password SHA-256 as the database holds it."""
    engine = make_engine(f"sqlite:///{server.data_dir / 'rkvstore.db'}")
    try:
        with engine.connect() as conn:
            row = repo.get_account(conn, instance_id, account)
    finally:
        engine.dispose()
    assert row is not None, account
    return row.password_sha256


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sdk(server: LiveServer) -> NewClient:
    return new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)


def sdk_reset(server: LiveServer, instance_id: str, account: str, password: str) -> None:
    request = kv_models.ResetAccountPasswordRequest(
        instance_id=instance_id, account_name=account, account_password=password
    )
    sdk(server).reset_account_password(request)


def reset_when_free(client: RpcClient, instance_id: str, account: str, password: str) -> float:
    """ResetAccountPassword, retried while the slot is taken (bounded: lease + 5 s); its delay."""
    started = time.monotonic()

    def attempt() -> bool:
        try:
            reset(client, instance_id, account, password)
        except RpcError as exc:
            if exc.code != "TaskExists":
                raise
            return False
        return True

    wait_for("a reset once the slot is free", attempt, LEASE + 5, step=0.25)
    return time.monotonic() - started


# --------------------------------------------------------------------------- the shared cluster


@dataclass
class Shared:
    """The module's server (replaced when a test restarts it) and its cluster instance."""

    server: LiveServer
    instance_id: str = ""
    passwords: dict[str, str] = field(default_factory=dict)  # account -> current password

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def nodes(self) -> list[LocalNodeFiles]:
        return node_files(self.server, self.instance_id)

    def ports(self) -> list[int]:
        return [n.port for n in self.nodes()]

    def mgmt(self) -> str:
        return management_password(self.server, self.instance_id)

    @property
    def default_pw(self) -> str:
        return self.passwords["default"]

    def restart(self, extra: dict[str, str] | None = None) -> LiveServer:
        """Stop the server (SIGTERM, nodes stay up; a dead one is reaped), start another."""
        stop_server(self.server)
        self.server = start_server(
            self.data_dir,
            extra_env={**MODULE_ENV, **(extra or {})},
            access_key=(self.server.access_key_id, self.server.access_key_secret),
        )
        return self.server

    def assert_accounts_everywhere(self) -> None:
        for port in self.ports():
            for account, password in self.passwords.items():
                assert auth_ok(port, account, password), f"{account} refused on {port}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    data_dir = tmp_path_factory.mktemp("cluster-data")
    ARTIFACT_DIRS.append(data_dir)
    state = Shared(start_server(data_dir, extra_env=MODULE_ENV))
    try:
        yield state
    finally:
        stop_server(state.server, delete_instances=True)
        kill_strays(data_dir)
        if TIMINGS:
            print("\n".join(f"{k}: {v:.2f} s" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def cluster(shared: Shared) -> Shared:
    """The 6-node cluster instance, Normal, with a custom account ``app``."""
    default_pw = new_password()
    started = time.monotonic()
    with api(shared.server) as client:
        body = client.call(
            "CreateInstance",
            {"NodeType": "MASTER_SLAVE", "ShardCount": SHARDS, "Password": Secret(default_pw)},
        )
        shared.instance_id = str(body["InstanceId"])
        wait_normal(client, shared.instance_id, CREATE_TIMEOUT)
        timed("CreateInstance ShardCount=3 MASTER_SLAVE until Normal", time.monotonic() - started)
        app_pw = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": shared.instance_id, "AccountName": "app", "AccountPassword": app_pw},
        )
    shared.passwords = {"default": default_pw, shared.instance_id: default_pw, "app": app_pw}
    return shared


# --------------------------------------------------------------------------- 1. describe, health


def test_cluster_instance_is_described_and_healthy(cluster: Shared) -> None:
    iid = cluster.instance_id
    with api(cluster.server) as client:
        listed = client.call("DescribeInstances", {"InstanceIds": iid})
        item = listed["Instances"]["KVStoreInstance"][0]
        attribute = client.call("DescribeInstanceAttribute", {"InstanceId": iid})
        detail = attribute["Instances"]["DBInstanceAttribute"][0]
        by_architecture = client.call("DescribeInstances", {"ArchitectureType": "cluster"})
    for shown in (item, detail):
        assert shown["InstanceStatus"] == "Normal"
        assert shown["ArchitectureType"] == "cluster"
        assert shown["ShardCount"] == SHARDS
        assert shown["NodeCount"] == 2 * SHARDS
        assert shown["NodeType"] == "MASTER_SLAVE"
    assert [i["InstanceId"] for i in by_architecture["Instances"]["KVStoreInstance"]] == [iid]
    # The official SDK reads the same.
    sdk_item = (
        sdk(cluster.server)
        .describe_instances(kv_models.DescribeInstancesRequest(instance_ids=iid))
        .body.to_map()["Instances"]["KVStoreInstance"][0]
    )
    assert (sdk_item["ArchitectureType"], sdk_item["ShardCount"]) == ("cluster", SHARDS)

    nodes = cluster.nodes()
    ports = [n.port for n in nodes]
    assert len(ports) == 2 * SHARDS and len(set(ports)) == len(ports)
    assert item["Port"] == ports[0]
    for port in ports:
        assert processes_on_port(port), f"no redis-server on {port}"
        info = cluster_info(port, "default", cluster.default_pw)
        assert info["cluster_state"] == "ok", (port, info)
        assert info["cluster_known_nodes"] == str(2 * SHARDS)
        assert info["cluster_slots_assigned"] == "16384"
    seen = cluster_nodes(ports[0], "default", cluster.default_pw)
    assert sorted(n.port for n in seen) == sorted(ports)
    masters = [n for n in seen if n.is_master]
    assert len(masters) == SHARDS and all(m.slots for m in masters)
    replicas = [n for n in seen if not n.is_master]
    assert sorted(r.master_id or "" for r in replicas) == sorted(m.node_id for m in masters)
    for master, replica in replication_pairs(ports, "default", cluster.default_pw):
        assert link_status(replica, "default", cluster.default_pw) == "up", (master, replica)

    # A cluster client, as the custom account, across slots (and so across shards).
    rc = RedisCluster(
        host="127.0.0.1",
        port=ports[0],
        username="app",
        password=cluster.passwords["app"],
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    try:
        for i in range(60):
            assert rc.set(f"key:{i}", f"value:{i}")
        assert all(rc.get(f"key:{i}") == f"value:{i}" for i in range(60))
    finally:
        rc.close()
    for master in masters:
        with connect(master.port, "app", cluster.passwords["app"]) as conn:
            assert conn.dbsize() > 0, f"master {master.port} got none of the keys"


# --------------------------------------------------------------------------- 2. reset, SDK


def test_sdk_reset_reaches_all_six_nodes(cluster: Shared) -> None:
    old, new = cluster.passwords["app"], new_password()
    started = time.monotonic()
    sdk_reset(cluster.server, cluster.instance_id, "app", new)
    timed("SDK ResetAccountPassword on 6 nodes", time.monotonic() - started)
    cluster.passwords["app"] = new
    ports = cluster.ports()
    assert len(ports) == 2 * SHARDS
    assert_only(ports, "app", new, old)
    cluster.assert_accounts_everywhere()
    with api(cluster.server) as client:
        assert account_status(client, cluster.instance_id, "app") == "Available"


# --------------------------------------------------------------------------- 3. manual failover


def test_reset_after_a_manual_failover_reaches_the_promoted_node(cluster: Shared) -> None:
    ports = cluster.ports()
    old_master, replica = replication_pairs(ports, "default", cluster.default_pw)[0]
    # The instance's Super account may look at the cluster but not change it (privileges.py).
    with (
        connect(replica, "default", cluster.default_pw) as conn,
        pytest.raises(redis.exceptions.NoPermissionError),
    ):
        conn.execute_command("CLUSTER", "FAILOVER")
    mgmt = cluster.mgmt()
    started = time.monotonic()
    with connect(replica, MANAGEMENT_USER, mgmt) as conn:
        assert conn.execute_command("CLUSTER", "FAILOVER") in (b"OK", "OK", True)

    def swapped() -> bool:
        return (
            role(replica, "default", cluster.default_pw) == ("master", None)
            and role(old_master, "default", cluster.default_pw) == ("slave", replica)
            and link_status(old_master, "default", cluster.default_pw) == "up"
            and all(
                cluster_info(p, "default", cluster.default_pw)["cluster_state"] == "ok"
                for p in ports
            )
        )

    wait_for("roles swapped, the old master in sync", swapped, 30, step=0.2)
    timed("manual failover until roles swapped and link up", time.monotonic() - started)

    old, new = cluster.passwords["app"], new_password()
    sdk_reset(cluster.server, cluster.instance_id, "app", new)
    cluster.passwords["app"] = new
    assert_only(ports, "app", new, old)
    cluster.assert_accounts_everywhere()
    # Replication across the swapped shard still works for the account.
    write_replicated(replica, old_master, "app", new, "after-failover")


# --------------------------------------------------------------------------- 4. drift repair


def test_node_restarted_without_its_acl_file_is_repaired(cluster: Shared) -> None:
    ports = cluster.ports()
    _master, victim_port = replication_pairs(ports, "default", cluster.default_pw)[-1]
    victim = next(n for n in cluster.nodes() if n.port == victim_port)
    mgmt = cluster.mgmt()
    old_pid = victim.running_pid()
    log_mark = len(log_text(cluster.server))
    (victim.directory / "users.acl").unlink()
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()

    def serving() -> int | None:
        pid = victim.pid()
        if pid is None or pid == old_pid or not pid_alive(pid):
            return None
        return pid if auth_ok(victim_port, MANAGEMENT_USER, mgmt) else None

    new_pid = wait_for(f"node on {victim_port} restarted", serving, 20)
    back = time.monotonic()
    timed("SIGKILLed node (ACL file deleted) serving again", back - killed)
    assert processes_on_port(victim_port) == [new_pid]

    def repaired() -> bool:
        return all(auth_ok(victim_port, a, pw) for a, pw in cluster.passwords.items())

    # Within 3 reconcile intervals of the node being back (plus polling slack).
    wait_for("every account back on the restarted node", repaired, 3 * INTERVAL + REPAIR_SLACK)
    timed("restarted node repaired after it served again", time.monotonic() - back)
    logged = log_text(cluster.server)[log_mark:]
    assert f"repaired drift on node 127.0.0.1:{victim_port}: users" in logged
    assert "user app " in (victim.directory / "users.acl").read_text()  # persisted (ACL SAVE)
    cluster.assert_accounts_everywhere()
    # The replica resynchronises with its master on its own schedule after a restart.
    wait_for(
        "replication link up again",
        lambda: link_status(victim_port, "default", cluster.default_pw) == "up",
        10,
    )
    with api(cluster.server) as client:
        wait_for(
            "app Available",
            lambda: account_status(client, cluster.instance_id, "app") == "Available",
            5,
        )


def test_stray_acl_setuser_by_hand_is_repaired(cluster: Shared) -> None:
    ports = cluster.ports()
    target = replication_pairs(ports, "default", cluster.default_pw)[0][0]  # a master
    stray = remember_secret("Stray!" + secrets.token_hex(10))
    log_mark = len(log_text(cluster.server))
    with connect(target, MANAGEMENT_USER, cluster.mgmt()) as conn:
        assert conn.execute_command("ACL", "SETUSER", "app", f">{stray}") in (b"OK", "OK", True)
    changed = time.monotonic()

    def repaired() -> bool:
        return auth_ok(target, "app", cluster.passwords["app"]) and not auth_ok(
            target, "app", stray
        )

    wait_for("stray password removed", repaired, 3 * INTERVAL + REPAIR_SLACK)
    timed("stray ACL SETUSER repaired", time.monotonic() - changed)
    time.sleep(INTERVAL * 1.5)  # and it stays so
    assert_only(ports, "app", cluster.passwords["app"], stray)
    assert (
        f"repaired drift on node 127.0.0.1:{target}: users app"
        in (log_text(cluster.server)[log_mark:])
    )
    cluster.assert_accounts_everywhere()


# --------------------------------------------------------------------------- 5. SIGSTOP


@dataclass
class StoppedReset:
    """What a reset met with one node SIGSTOPped, and what came of it."""

    hung_port: int
    status: int
    body: dict[str, Any]
    took: float  # until the answer
    account_status: str  # right after the answer
    accepting_new: list[int]  # healthy nodes that took the new password, right after the answer
    log: str  # rkvstore.log from just before the reset until convergence


def reset_with_a_stopped_node(cluster: Shared, hung: LocalNodeFiles, new: str) -> StoppedReset:
    """SIGSTOP ``hung``, reset ``app`` to ``new``, SIGCONT; wait until every node converged."""
    ports = cluster.ports()
    old, iid, pid = cluster.passwords["app"], cluster.instance_id, hung.running_pid()
    with api(cluster.server) as client:
        log_mark = len(log_text(cluster.server))
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = client.request(
                "ResetAccountPassword",
                {"InstanceId": iid, "AccountName": "app", "AccountPassword": new},
            )
            took = time.monotonic() - started
            accepting = [p for p in ports if p != hung.port and auth_ok(p, "app", new)]
            status_then = account_status(client, iid, "app")
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        time.sleep(0.3)  # a command left queued on the stopped node runs now

        def converged() -> bool:
            return (
                all(auth_ok(p, "app", old) and not auth_ok(p, "app", new) for p in ports)
                and account_status(client, iid, "app") == "Available"
            )

        wait_for("every node back on the database's password", converged, 20, step=0.2)
        timed("SIGCONT until every node converged", time.monotonic() - resumed)
        time.sleep(2 * INTERVAL)  # and it stays so
        assert_only(ports, "app", old, new)
        assert processes_on_port(hung.port) == [pid], "the stopped node was replaced"
        assert stored_hash(cluster.server, iid, "app") == sha256(old)
    cluster.assert_accounts_everywhere()
    return StoppedReset(
        hung.port,
        response.status_code,
        response.json(),
        took,
        status_then,
        accepting,
        log_text(cluster.server)[log_mark:],
    )


def second_in_line(cluster: Shared) -> LocalNodeFiles:
    """``<id>-3``: rkvstore changes nodes in (shard, role, id) order, and it comes second."""
    node = cluster.nodes()[SHARDS]
    assert node.node_id.endswith(f"-{SHARDS}")
    return node


def test_sigstopped_node_gives_service_unavailable_then_converges(cluster: Shared) -> None:
    new = new_password()
    seen = reset_with_a_stopped_node(cluster, second_in_line(cluster), new)
    timed("reset with a SIGSTOPped node: ServiceUnavailable after", seen.took)
    assert seen.status == 503, seen.body
    assert seen.body["Code"] == "ServiceUnavailable"
    assert seen.body["Message"] == SERVICE_UNAVAILABLE_MESSAGE
    assert seen.took < 10
    assert seen.account_status == "Unavailable"
    repaired = f"repaired drift on node 127.0.0.1:{seen.hung_port}: users app" in seen.log
    print(f"late command on the resumed node repaired by the reconciler: {repaired}")


def test_a_failed_reset_puts_back_every_node_that_answered_before_it_answers(
    cluster: Shared,
) -> None:
    """All or nothing: the ServiceUnavailable answer is the truth on every node that answered.

    One node hangs; the others answer at once. They must be put back by the reset
    itself, not left with the new password for the reconciler to find later.
    """
    new = new_password()
    seen = reset_with_a_stopped_node(cluster, second_in_line(cluster), new)
    assert seen.status == 503, seen.body
    failed_line = next(line for line in seen.log.splitlines() if "rolled back:" in line)
    named = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+): ", failed_line)}
    healed_later = sorted(
        int(port)
        for port in re.findall(r"repaired drift on node 127\.0\.0\.1:(\d+): users app", seen.log)
        if int(port) != seen.hung_port
    )
    print(f"reset failure names {sorted(named)}; hung {seen.hung_port}")
    print(f"healthy nodes accepting the new password after the 503: {seen.accepting_new}")
    print(f"healthy nodes the reconciler had to repair afterwards: {healed_later}")
    assert named == {seen.hung_port}, (
        f"the reset gave up on nodes that answered in time ({sorted(named - {seen.hung_port})}): "
        "FanOut.run_each reads replies one node after another against one deadline, so the "
        "nodes read after the stopped one find it spent"
    )
    assert healed_later == [], "healthy nodes kept the new password after the answer"
    assert seen.accepting_new == []


# --------------------------------------------------------------------------- 6. kill -9 of serve


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_serve_killed_mid_reset_recovers_every_node(cluster: Shared, point: str) -> None:
    iid = cluster.instance_id
    ports = cluster.ports()
    pids = {n.port: n.running_pid() for n in cluster.nodes()}
    old, new = cluster.passwords["app"], new_password()

    # The dying task's lease is long: recovery must not wait it out (issue 8), the
    # next process on this host sees its holder is gone and frees the slot at start.
    crashing = cluster.restart({CRASH_VARIABLE: point, "RKVSTORE_TASK_LEASE_SECONDS": "120"})
    assert crashing.env[CRASH_VARIABLE] == point
    with api(crashing) as client, pytest.raises(httpx.TransportError):
        reset(client, iid, "app", new)
    crashed = time.monotonic()
    assert crashing.process.wait(timeout=10) == -signal.SIGKILL
    assert {p: processes_on_port(p) for p in ports} == {p: [pid] for p, pid in pids.items()}

    log_mark = len(log_text(crashing))
    server = cluster.restart()  # without the crash variable
    assert CRASH_VARIABLE not in server.env
    stored = stored_hash(server, iid, "app")
    assert stored in (sha256(old), sha256(new))
    held, other = (old, new) if stored == sha256(old) else (new, old)
    if point == "task-acquired":
        assert held == old
    if point == "db-committed":
        assert held == new
    print(f"{point}: the database holds the {'old' if held == old else 'new'} password")

    def agree() -> bool:
        return all(auth_ok(p, "app", held) and not auth_ok(p, "app", other) for p in ports)

    wait_for("every node agrees with the database", agree, 10 * INTERVAL, step=0.2)
    timed(f"{point}: crash until every node agrees with the database", time.monotonic() - crashed)
    # Passes have run since: still in line.
    time.sleep(2 * INTERVAL)
    assert_only(ports, "app", held, other)
    cluster.passwords["app"] = held
    cluster.assert_accounts_everywhere()
    if point == "db-committed":
        # The record freed the slot in its own transaction: nothing was left to free.
        assert "freed at start" not in log_text(server)[log_mark:]
    else:
        assert "its holder is gone; freed at start" in log_text(server)[log_mark:]
    with api(server) as client:
        wait_for(
            "app Available",
            lambda: account_status(client, iid, "app") == "Available",
            5 * INTERVAL,
        )
        # No slot stays taken: a new reset goes through at once, and reaches every node.
        newer = new_password()
        waited = reset_when_free(client, iid, "app", newer)
        timed(f"{point}: next reset succeeded after", waited)
        assert waited < 10 * INTERVAL, "the next reset waited for the dead task's lease"
    cluster.passwords["app"] = newer
    assert_only(ports, "app", newer, held)
    assert stored_hash(server, iid, "app") == sha256(newer)
    # The nodes ran on through both restarts: adopted, not restarted.
    assert {p: processes_on_port(p) for p in ports} == {p: [pid] for p, pid in pids.items()}


def test_account_status_is_unavailable_while_a_dead_tasks_change_is_out_of_line(
    cluster: Shared,
) -> None:
    """Issue 5, "Reconciler": AccountStatus is Unavailable while a node is out of line.

    kill -9 at ``nodes-changed`` leaves every node with the new password and the
    database with the old one. A holder on this host is known dead at once;
    one on another host (the row is made to say so here) only when its lease
    runs out. Until then nothing may bring the nodes back, but
    DescribeAccounts must not call the account Available meanwhile.
    """
    iid = cluster.instance_id
    ports = cluster.ports()
    old, new = cluster.passwords["app"], new_password()
    lease = 8.0
    crashing = cluster.restart(
        {CRASH_VARIABLE: "nodes-changed", "RKVSTORE_TASK_LEASE_SECONDS": str(lease)}
    )
    with api(crashing) as client, pytest.raises(httpx.TransportError):
        reset(client, iid, "app", new)
    crashed = time.monotonic()
    assert crashing.process.wait(timeout=10) == -signal.SIGKILL
    engine = make_engine(f"sqlite:///{cluster.data_dir / 'rkvstore.db'}")
    try:
        with engine.begin() as conn:
            moved = conn.execute(
                update(tasks)
                .where(tasks.c.instance_id == iid)
                .values(holder="elsewhere:1:2:0123456789ab:1")
            ).rowcount
    finally:
        engine.dispose()
    assert moved == 1, "the killed reset left no task row"
    server = cluster.restart()
    assert stored_hash(server, iid, "app") == sha256(old)

    def out_of_line() -> bool:
        return any(auth_ok(p, "app", new) for p in ports)

    with api(server) as client:
        before = out_of_line()
        status = account_status(client, iid, "app")
        after = out_of_line()
        window = time.monotonic() - crashed
        print(f"{window:.2f} s after the crash: nodes out of line {before}/{after}, {status}")
        # Recover first (the module goes on), then judge what was shown.
        wait_for(
            "every node back on the database's password",
            lambda: all(auth_ok(p, "app", old) and not auth_ok(p, "app", new) for p in ports),
            lease + 10 * INTERVAL,
            step=0.2,
        )
        wait_for(
            "app Available",
            lambda: account_status(client, iid, "app") == "Available",
            5 * INTERVAL,
        )
    cluster.passwords["app"] = old
    cluster.assert_accounts_everywhere()
    if not (before and after):
        pytest.skip(f"the restart took {window:.1f} s: the lease ran out before a look")
    assert status == "Unavailable", (
        "DescribeAccounts says Available while every node holds a password the database does "
        "not (a dead task's change, before its lease ran out)"
    )


# --------------------------------------------------------------------------- 7. RegisterInstance


@dataclass
class OwnCluster:
    root: Path
    admin_password: str
    nodes: list[OwnRedis] = field(default_factory=list)
    taken: set[int] = field(default_factory=set)  # ports (and bus ports) handed out

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def admin(self, port: int) -> redis.Redis:
        return connect(port, "admin", self.admin_password)

    def users(self, port: int) -> list[str]:
        with self.admin(port) as conn:
            return sorted(conn.acl_users())


def cluster_port(taken: set[int]) -> int:
    """A loopback port whose cluster bus port (+10000) is free too, both below 32768."""
    for _ in range(500):
        port = 12000 + secrets.randbelow(10000)
        if {port, port + CLUSTER_BUS} & taken:
            continue
        free = True
        for p in (port, port + CLUSTER_BUS):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", p))
                except OSError:
                    free = False
        if free:
            taken.update({port, port + CLUSTER_BUS})
            return port
    raise AssertionError("no free port pair for a cluster node")


def start_own_node(root: Path, port: int, admin_hash: str, password: str) -> OwnRedis:
    cluster = [
        "cluster-enabled yes",
        'cluster-config-file "nodes.conf"',
        "cluster-node-timeout 5000",
        "masteruser admin",  # masterauth is set at runtime: no file holds the password
    ]
    node = start_own_redis(root / f"node-{port}", port, admin_hash, None, extra=cluster)
    wait_for(f"own node on {port}", lambda: auth_ok(port, "admin", password), 15)
    with connect(port, "admin", password) as conn:
        conn.config_set("masterauth", password)
    return node


@contextlib.contextmanager
def own_cluster(root: Path, masters: int = 3) -> Iterator[OwnCluster]:
    """Our own Redis Cluster (3 masters, slots split evenly), with an admin user only."""
    if not SYSTEM_REDIS.exists():
        pytest.skip(f"no {SYSTEM_REDIS}")
    password = remember_secret("Adm!" + secrets.token_hex(14))
    digest = sha256(password)
    own = OwnCluster(root, password)
    try:
        for _ in range(masters):
            own.nodes.append(start_own_node(root, cluster_port(own.taken), digest, password))
        first = own.ports[0]
        for port in own.ports[1:]:
            with own.admin(port) as conn:
                conn.execute_command("CLUSTER", "MEET", "127.0.0.1", first)
        bounds = [round(i * 16384 / masters) for i in range(masters + 1)]
        for i, port in enumerate(own.ports):
            with own.admin(port) as conn:
                conn.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)

        def healthy() -> bool:
            return all(
                cluster_info(p, "admin", password)["cluster_state"] == "ok"
                and cluster_info(p, "admin", password)["cluster_known_nodes"] == str(masters)
                for p in own.ports
            )

        wait_for("own cluster ok", healthy, 30, step=0.2)
        yield own
    finally:
        for node in reversed(own.nodes):
            stop_own_redis(node)


@pytest.fixture
def own_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("own-cluster")
    ARTIFACT_DIRS.append(path)  # nothing there may hold a password either
    return path


@contextlib.contextmanager
def quiet_server(data_dir: Path) -> Iterator[LiveServer]:
    """A server whose reconciler stays out of the way (60 s), so that only a change finds nodes."""
    server = start_server(
        data_dir,
        extra_env={
            "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "60",
            "RKVSTORE_NODE_TIMEOUT_SECONDS": "1",
        },
    )
    try:
        yield server
    finally:
        stop_server(server, delete_instances=True)
        kill_strays(data_dir)


def test_register_cluster_and_reach_a_replica_added_later(data_dir: Path, own_root: Path) -> None:
    with own_cluster(own_root) as own, quiet_server(data_dir) as server, api(server) as client:
        seed = own.ports[1]  # any one node
        body = client.call(
            "RegisterInstance",
            {
                "Endpoint": f"127.0.0.1:{seed}",
                "AdminUserName": "admin",
                "AdminPassword": Secret(own.admin_password),
            },
        )
        iid = str(body["InstanceId"])
        try:
            assert body["NodeCount"] == 3
            detail = client.call("DescribeInstanceAttribute", {"InstanceId": iid})
            item = detail["Instances"]["DBInstanceAttribute"][0]
            assert item["InstanceStatus"] == "Normal"
            assert item["ArchitectureType"] == "cluster"
            assert (item["ShardCount"], item["NodeCount"]) == (3, 3)
            assert item["Port"] in own.ports
            assert all(MANAGEMENT_USER in own.users(p) for p in own.ports)

            first = new_password()
            client.call(
                "CreateAccount",
                {"InstanceId": iid, "AccountName": "app", "AccountPassword": first},
            )
            for port in own.ports:
                assert auth_ok(port, "app", first), port
            second = new_password()
            reset(client, iid, "app", second)
            assert_only(own.ports, "app", second, first)

            # A fourth node joins as a replica of the second master.
            added = start_own_node(
                own.root, cluster_port(own.taken), sha256(own.admin_password), own.admin_password
            )
            own.nodes.append(added)
            with own.admin(own.ports[1]) as conn:
                master_id = text_of(conn.execute_command("CLUSTER", "MYID"))
            with own.admin(added.port) as conn:
                conn.execute_command("CLUSTER", "MEET", "127.0.0.1", own.ports[0])

            def knows_master() -> bool:
                seen = cluster_nodes(added.port, "admin", own.admin_password)
                return any(n.node_id == master_id for n in seen)

            wait_for("the new node knows the master", knows_master, 15, step=0.2)
            with own.admin(added.port) as conn:
                conn.execute_command("CLUSTER", "REPLICATE", master_id)

            def replica_everywhere() -> bool:
                return link_status(added.port, "admin", own.admin_password) == "up" and all(
                    any(
                        n.port == added.port and n.master_id == master_id
                        for n in cluster_nodes(p, "admin", own.admin_password)
                    )
                    for p in own.ports[:3]
                )

            wait_for("the new replica in sync and known", replica_everywhere, 20, step=0.2)
            # Neither the cluster nor rkvstore (no change since) put the account there.
            assert not auth_ok(added.port, "app", second)
            assert MANAGEMENT_USER not in own.users(added.port)

            third = new_password()
            reset(client, iid, "app", third)
            assert_only(own.ports, "app", third, second)  # the new node included
            assert MANAGEMENT_USER in own.users(added.port)
            detail = client.call("DescribeInstanceAttribute", {"InstanceId": iid})
            assert detail["Instances"]["DBInstanceAttribute"][0]["NodeCount"] == 4
            with connect(added.port, "app", third) as conn:
                conn.execute_command("READONLY")
                assert conn.ping()
            # (Status: the discovery marked the instance for a reconciler pass, which this
            # server's 60 s interval keeps away; so AccountStatus is not looked at here.)
        finally:
            with contextlib.suppress(RpcError):
                client.call("DeleteInstance", {"InstanceId": iid})
        for port in own.ports:
            assert MANAGEMENT_USER not in own.users(port), port
            assert auth_ok(port, "admin", own.admin_password)


# --------------------------------------------------------------------------- 8. rotation


def check_rotation(
    server: LiveServer,
    instance_id: str,
    ports: list[int],
    passwords: dict[str, str],
    old_mgmt: str,
    label: str,
) -> None:
    """After a rotation: new management password only, replication intact, resets work."""
    new_mgmt = management_password(server, instance_id)
    assert new_mgmt != old_mgmt
    for port in ports:
        assert auth_ok(port, MANAGEMENT_USER, new_mgmt), port
        assert_wrongpass(port, MANAGEMENT_USER, old_mgmt)
    default_pw = passwords["default"]
    pairs = replication_pairs(ports, "default", default_pw)
    assert pairs, "no replica"
    for master, replica in pairs:
        assert link_status(replica, "default", default_pw) == "up"
        write_replicated(master, replica, "default", default_pw, f"{label}-rotated")

    # A replica killed -9 comes back and syncs again: with the new masterauth.
    master, replica = pairs[0]
    node = next(n for n in node_files(server, instance_id) if n.port == replica)
    old_pid = node.running_pid()
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()

    def back_in_sync() -> bool:
        pid = node.pid()
        return (
            pid is not None
            and pid != old_pid
            and pid_alive(pid)
            and link_status(replica, "default", default_pw) == "up"
        )

    wait_for(f"{label}: killed replica back and in sync", back_in_sync, 30, step=0.2)
    timed(
        f"{label}: replica killed after rotation until master_link_status:up",
        time.monotonic() - killed,
    )
    write_replicated(master, replica, "default", default_pw, f"{label}-after-kill")
    assert_wrongpass(replica, MANAGEMENT_USER, old_mgmt)
    assert auth_ok(replica, MANAGEMENT_USER, new_mgmt)

    with api(server) as client:
        old, new = passwords["app"], new_password()
        reset(client, instance_id, "app", new)
        passwords["app"] = new
        assert_only(ports, "app", new, old)
        assert account_status(client, instance_id, "app") == "Available"
    for port in ports:
        for account, password in passwords.items():
            assert auth_ok(port, account, password), (account, port)


def test_rotate_management_password_on_a_standard_instance_with_the_cli(shared: Shared) -> None:
    server = shared.server
    default_pw = new_password()
    with api(server) as client:
        iid, _port = create_and_wait(client, "MASTER_SLAVE", password=default_pw)
        try:
            app_pw = new_password()
            client.call(
                "CreateAccount",
                {"InstanceId": iid, "AccountName": "app", "AccountPassword": app_pw},
            )
            passwords = {"default": default_pw, iid: default_pw, "app": app_pw}
            ports = [n.port for n in node_files(server, iid)]
            assert len(ports) == 2
            old_mgmt = management_password(server, iid)
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("RKVSTORE_", "ALIBABA_CLOUD_"))
            }
            env["ALIBABA_CLOUD_ACCESS_KEY_ID"] = server.access_key_id
            env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = server.access_key_secret
            started = time.monotonic()
            done = subprocess.run(
                [*CLI, "instances", "rotate-management-password", iid, "--endpoint", server.url],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            timed(
                "rkvstore instances rotate-management-password (standard)",
                time.monotonic() - started,
            )
            assert done.returncode == 0, done.stderr
            assert f"management password of {iid} rotated" in done.stdout
            check_rotation(server, iid, ports, passwords, old_mgmt, "standard")
        finally:
            client.call("DeleteInstance", {"InstanceId": iid})


def test_rotate_management_password_on_the_cluster(cluster: Shared) -> None:
    server = cluster.server
    ports = cluster.ports()
    old_mgmt = cluster.mgmt()
    started = time.monotonic()
    with api(server) as client:
        body = client.call("RotateManagementPassword", {"InstanceId": cluster.instance_id})
    assert set(body) <= {"RequestId"}, body
    timed("RotateManagementPassword (cluster, 6 nodes)", time.monotonic() - started)
    check_rotation(server, cluster.instance_id, ports, cluster.passwords, old_mgmt, "cluster")
    for port in ports:
        assert cluster_info(port, "default", cluster.default_pw)["cluster_state"] == "ok"
