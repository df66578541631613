"""``rkvstore serve --workers 2``: one port, two request workers, one supervisor of the nodes.

On SQLite and on PostgreSQL, with real redis-server nodes: the whole API is
served (and requests reach both workers, told apart by the ``pid=`` of their
access-log lines); a local node killed is restarted exactly once; the
supervising worker killed, another one takes supervision over, the parent
replaces the dead worker, and the instance goes on answering; SIGTERM to the
parent stops everything, nodes included.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rkvstore.client import RpcClient
from rkvstore.crypto import load_secret_box
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.secret import Secret
from rkvstore.store import repo
from rkvstore.store.db import make_engine
from tests.conftest import LiveServer, free_port, remember_secret, start_server
from tests.integration.test_resilience import (
    api,
    auth_ok,
    connect,
    create_instance,
    kill_strays,
    local_nodes,
    log_text,
    new_password,
    pid_alive,
    reset,
    wait_for,
    wait_serving,
)
from tests.scrape import scrape, value

WORKERS = {"RKVSTORE_WORKERS": "2", "RKVSTORE_RATE_LIMIT_PER_SECOND": "0"}
SUPERVISES = re.compile(r" pid=(\d+) worker \d+ supervises the local nodes")
ACCESS = re.compile(r" rkvstore\.access pid=(\d+) request_id=")


@pytest.fixture
def workers(data_dir: Path, database_url: str) -> Iterator[LiveServer]:
    metrics = {"RKVSTORE_METRICS_PORT": str(free_port())}  # served by both workers
    server = start_server(data_dir, database_url=database_url, extra_env={**WORKERS, **metrics})
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop(timeout=120)
        kill_strays(data_dir)


def supervisors(server: LiveServer) -> list[int]:
    """The workers that took supervision, in order."""
    return [int(pid) for pid in SUPERVISES.findall(log_text(server))]


def serving_pids(server: LiveServer) -> set[int]:
    return {int(pid) for pid in ACCESS.findall(log_text(server))}


def restarts(server: LiveServer, node_id: str) -> list[str]:
    return [line for line in log_text(server).splitlines() if f"node {node_id} is back on" in line]


def supervised(server: LiveServer, instance_id: str, supervisor: int) -> bool:
    """The supervising worker watches the instance's nodes: it built them or adopted them."""
    text = log_text(server)
    return (
        f"pid={supervisor} instance {instance_id}: built by another worker" in text
        or f"pid={supervisor} started node {instance_id}-0 of {instance_id}" in text
        or any(  # taken over: adopted at its start
            f"pid={supervisor} adopted node {instance_id}-0" in line for line in text.splitlines()
        )
    )


def kill_a_node_once(server: LiveServer, instance_id: str, password: str) -> None:
    """SIGKILL the master; it comes back (once) and lets ``default`` in."""
    node = local_nodes(server, instance_id)["master"]
    before = len(restarts(server, node.node_id))
    old = node.running_pid()
    os.kill(old, signal.SIGKILL)
    wait_serving(node, "default", password, old)
    wait_for("the restart logged", lambda: len(restarts(server, node.node_id)) > before, 10)
    time.sleep(3)  # a second supervisor would have restarted it too by now (1 s checks)
    assert len(restarts(server, node.node_id)) == before + 1, restarts(server, node.node_id)


def test_two_workers_serve_the_whole_api_and_supervise_nodes_once(workers: LiveServer) -> None:
    server = workers
    first = wait_for("a supervising worker", lambda: supervisors(server), 15)
    assert len(first) == 1, first

    # Many connections at once: the kernel hands them to both workers.
    def describe_regions(_: int) -> int:
        with api(server) as client:
            return len(client.call("DescribeRegions", {})["RegionIds"]["KVStoreRegion"])

    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            assert all(list(pool.map(describe_regions, range(16))))
            if len(serving_pids(server)) >= 2:
                break
    assert len(serving_pids(server)) == 2, serving_pids(server)

    with api(server) as client:
        default_pw = new_password()
        instance_id = create_instance(client, "MASTER_SLAVE", default_pw)
        demo_pw = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": demo_pw},
        )
        demo_pw = new_password()
        reset(client, instance_id, "demo", demo_pw)
        accounts = client.call("DescribeAccounts", {"InstanceId": instance_id})
        names = {a["AccountName"]: a["AccountStatus"] for a in accounts["Accounts"]["Account"]}
        assert names["demo"] == "Available", names
        nodes = local_nodes(server, instance_id)
        for node in nodes.values():
            assert auth_ok(node.port, "demo", demo_pw)

        with RpcClient(
            server.endpoint,
            server.access_key_id,
            Secret(server.access_key_secret),
            version="2015-05-01",
        ) as ram:
            ram.call("CreateUser", {"UserName": "ops"})
            users = ram.call("ListUsers", {})["Users"]["User"]
            assert [u["UserName"] for u in users] == ["ops"]

        # A node killed: restarted once, by the one supervising worker.
        supervisor = first[0]
        wait_for("nodes supervised", lambda: supervised(server, instance_id, supervisor), 10)
        kill_a_node_once(server, instance_id, default_pw)

        # The supervising worker killed: another takes over, the parent replaces it.
        os.kill(supervisor, signal.SIGKILL)
        after = wait_for("a new supervisor", lambda: supervisors(server)[1:], 15)
        assert after[0] != supervisor and pid_alive(after[0]), after
        wait_for(
            "the dead worker replaced",
            lambda: f"worker {supervisor} was killed by SIGKILL" in log_text(server),
            10,
        )
        demo_pw = new_password()
        reset(client, instance_id, "demo", demo_pw)
        for node in nodes.values():
            assert auth_ok(node.port, "demo", demo_pw)
        kill_a_node_once(server, instance_id, default_pw)
        assert len(supervisors(server)) == 2, supervisors(server)

        client.call("DeleteInstance", {"InstanceId": instance_id})
        assert client.call("DescribeInstances", {})["TotalCount"] == 0
        assert not (server.data_dir / "nodes" / instance_id).exists()

    # Both workers served, before and after the takeover; SIGTERM stops them all.
    assert len(serving_pids(server)) >= 2
    assert server.stop(timeout=120) == 0
    text = log_text(server)
    assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:4000]
    assert not re.search(r"status=5\d\d", text)


def test_workers_share_task_slots_without_taking_each_others_over(workers: LiveServer) -> None:
    """Concurrent changes to one instance through both workers all succeed, one at a
    time: a worker never takes a sibling's live task for a dead holder's (the
    workers are forked after import; each names itself in the slots it takes)."""
    server = workers
    wait_for("a supervising worker", lambda: supervisors(server), 15)
    with api(server) as client:
        instance_id = create_instance(client, "STAND_ALONE", new_password())
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "app", "AccountPassword": new_password()},
        )

    def change(password: str) -> str:
        with api(server) as client:
            try:
                reset(client, instance_id, "app", password)
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
        return "ok"

    resets = 0
    with ThreadPoolExecutor(16) as pool:
        for _ in range(4):  # until both workers have served some of them
            passwords = [new_password() for _ in range(48)]
            outcomes = list(pool.map(change, passwords))
            assert outcomes == ["ok"] * len(passwords), [o for o in outcomes if o != "ok"]
            resets += len(passwords)
            if len(serving_pids(server)) == 2:
                break
    assert len(serving_pids(server)) == 2, serving_pids(server)
    # Whichever worker answers a scrape, it counts both workers' calls (multiprocess mode).
    url = f"http://127.0.0.1:{server.env['RKVSTORE_METRICS_PORT']}/metrics"
    for _ in range(4):
        samples = scrape(url)
        done = {"action": "ResetAccountPassword", "code": "Success"}
        assert value(samples, "rkvstore_requests_total", **done) == resets
        assert value(samples, "rkvstore_task_slot_waits_total", result="taken") > 0
    text = log_text(server)
    assert "taking over" not in text and "outlived its lease" not in text
    assert not re.search(r"status=5\d\d", text)


def test_stopping_the_service_stops_the_nodes(workers: LiveServer) -> None:
    server = workers
    wait_for("a supervising worker", lambda: supervisors(server), 15)
    with api(server) as client:
        password = new_password()
        instance_id = create_instance(client, "STAND_ALONE", password)
    node = local_nodes(server, instance_id)["master"]
    pid = node.running_pid()
    supervisor = supervisors(server)[0]
    wait_for("nodes supervised", lambda: supervised(server, instance_id, supervisor), 10)
    assert server.stop(timeout=120) == 0
    assert not pid_alive(pid), "the node outlived the service"
    assert "stopping 2 workers" in log_text(server)


def management_password(server: LiveServer, database_url: str, instance_id: str) -> str:
    """As the operator reads it: the data dir's master key opens the database's copy."""
    box = load_secret_box(server.data_dir, None)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            instance = repo.get_instance_any_tenant(conn, instance_id)
    finally:
        engine.dispose()
    assert instance is not None, instance_id
    return remember_secret(box.open(instance.mgmt_password_encrypted).reveal())


def served_by(server: LiveServer, request_id: str) -> int:
    found = re.search(rf" pid=(\d+) request_id={request_id} ", log_text(server))
    assert found, request_id
    return int(found.group(1))


def test_a_rotation_through_another_worker_reaches_the_supervised_replica(
    workers: LiveServer, database_url: str
) -> None:
    """The supervising worker takes up a management password rotated elsewhere: the
    replica's masterauth, and the password it restarts with."""
    server = workers
    supervisor = wait_for("a supervising worker", lambda: supervisors(server), 15)[0]
    with api(server) as client:
        instance_id = create_instance(client, "MASTER_SLAVE", new_password())
    wait_for("nodes supervised", lambda: supervised(server, instance_id, supervisor), 10)
    for _ in range(40):  # a new connection each time, until the other worker answers one
        with api(server) as client:
            body = client.call("RotateManagementPassword", {"InstanceId": instance_id})
        if served_by(server, body["RequestId"]) != supervisor:
            break
    else:
        pytest.fail("every rotation was served by the supervising worker")
    new = management_password(server, database_url, instance_id)
    replica = local_nodes(server, instance_id)["replica"]

    def masterauth_is_new() -> bool:
        with connect(replica.port, MANAGEMENT_USER, new) as conn:
            return bool(conn.config_get("masterauth")["masterauth"] == new)

    wait_for("the replica's masterauth is the new password", masterauth_is_new, 10)
    old = replica.running_pid()
    os.kill(old, signal.SIGKILL)  # restarted by the supervisor, with the new login
    wait_serving(replica, MANAGEMENT_USER, new, old)

    def link_up() -> bool:
        with connect(replica.port, MANAGEMENT_USER, new) as conn:
            return bool(conn.info("replication").get("master_link_status") == "up")

    wait_for("the restarted replica in sync with its master", link_up, 20)
