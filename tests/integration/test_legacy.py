"""Redis 5.0 (api.md §3): no ACL, one account named after the instance, ``requirepass``.

A master and a replica of the test's own run a Redis 5.0.6 built from source
(``tests/redis5.py``), with ``requirepass``/``masterauth`` in their redis.conf.
RegisterInstance adopts them; ResetAccountPassword and ModifyAccountPassword of
the instance-ID account change ``requirepass`` and ``masterauth`` on both nodes,
all or nothing, persisted (a restarted node keeps the new one), repaired when a
node drifts, and brought back to the database's state after rkvstore is killed
mid-change. Everything else about accounts gets ``InvalidEngineVersion.Format``.

The nodes' own directories are not scanned for secrets: Redis 5 keeps
``requirepass`` in redis.conf as written, as it always has.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from alibabacloud_r_kvstore20150101 import models as kv_models

from rkvstore.client import RpcClient
from rkvstore.faults import VARIABLE as CRASH_VARIABLE
from tests.api.sdk_clients import new_sdk_client
from tests.conftest import LiveServer, free_port, start_server
from tests.integration.test_resilience import (
    api,
    api_error,
    auth_ok,
    connect,
    log_text,
    new_password,
    restart,
    serving,
    stop_server,
    wait_for,
)
from tests.redis5 import redis5_server

ENGINE = (400, "InvalidEngineVersion.Format", "Current EngineVersion does not support operations.")
FAST = {
    "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "0.5",
    "RKVSTORE_VERIFY_INTERVAL_SECONDS": "0.5",  # drift nobody flagged, too
    "RKVSTORE_NODE_TIMEOUT_SECONDS": "1",
}


def login(port: int, password: str) -> redis.Redis:
    return connect(port, None, password)


def accepts(port: int, password: str) -> bool:
    return auth_ok(port, None, password)


@dataclass
class Node5:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(redis5_server()), str(self.directory / "redis.conf")],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class Deployment5:
    master: Node5
    replica: Node5
    password: str  # requirepass and masterauth at the start

    @property
    def nodes(self) -> list[Node5]:
        return [self.master, self.replica]

    def endpoint(self) -> str:
        return f"127.0.0.1:{self.master.port}"

    def only(self, good: str, *bad: str) -> bool:
        return all(
            accepts(n.port, good) and not any(accepts(n.port, b) for b in bad) for n in self.nodes
        )

    def in_sync(self, password: str) -> bool:
        with login(self.replica.port, password) as client:
            return client.info("replication").get("master_link_status") == "up"

    def replicates(self, password: str, key: str) -> bool:
        with login(self.master.port, password) as client:
            client.set(key, "1")
        deadline = time.monotonic() + 10
        with login(self.replica.port, password) as client:
            while time.monotonic() < deadline:
                if client.get(key) == "1":
                    return True
                time.sleep(0.05)
        return False


def _write_conf(node: Node5, password: str, master_port: int | None) -> None:
    node.directory.mkdir(parents=True)
    lines = [
        "bind 127.0.0.1",
        f"port {node.port}",
        f'dir "{node.directory}"',
        "daemonize no",
        f'logfile "{node.directory / "redis.log"}"',
        f"requirepass {password}",
        f"masterauth {password}",
        'save ""',
        "appendonly no",
        "repl-diskless-sync-delay 0",
    ]
    if master_port is not None:
        lines.append(f"replicaof 127.0.0.1 {master_port}")
    (node.directory / "redis.conf").write_text("\n".join(lines) + "\n")


@pytest.fixture
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment5]:
    # Redis's own files: requirepass as written
    yield from start_deployment(tmp_path_factory.mktemp("redis5"))


def start_deployment(root: Path, replica_bind: str | None = "127.0.0.1") -> Iterator[Deployment5]:
    """A Redis 5 master and replica under ``root``, stopped after; ``replica_bind`` None:
    the replica has no ``bind`` line, and so listens on every interface (Redis 5's default)."""
    password = new_password()
    master = Node5(free_port(), root / "master")
    replica = Node5(free_port(), root / "replica")
    _write_conf(master, password, None)
    _write_conf(replica, password, master.port)
    if replica_bind != "127.0.0.1":
        conf = replica.directory / "redis.conf"
        line = "" if replica_bind is None else f"bind {replica_bind}\n"
        conf.write_text(conf.read_text().replace("bind 127.0.0.1\n", line))
    made = Deployment5(master, replica, password)
    try:
        for node in made.nodes:
            node.start()
        wait_for("Redis 5 serving", lambda: all(accepts(n.port, password) for n in made.nodes), 15)
        wait_for("Redis 5 replica in sync", lambda: made.in_sync(password), 15)
        with login(master.port, password) as client:
            assert client.info("server")["redis_version"] == "5.0.6"
        yield made
    finally:
        for node in reversed(made.nodes):
            node.stop()


def register(client: RpcClient, deployment: Deployment5, **extra: str) -> dict[str, Any]:
    return client.call(
        "RegisterInstance",
        {"Endpoint": deployment.endpoint(), "AdminPassword": deployment.password, **extra},
    )


def reset(client: RpcClient, instance_id: str, password: str) -> None:
    client.call(
        "ResetAccountPassword",
        {"InstanceId": instance_id, "AccountName": instance_id, "AccountPassword": password},
    )


def test_redis5_is_managed_through_requirepass(data_dir: Path, deployment: Deployment5) -> None:
    with serving(data_dir, FAST) as server, api(server) as client:
        body = register(client, deployment, AdminUserName="default")
        instance_id = str(body["InstanceId"])
        assert (body["EngineVersion"], body["NodeCount"]) == ("5.0", 2)
        item = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})["Instances"][
            "DBInstanceAttribute"
        ][0]
        assert (item["EngineVersion"], item["InstanceStatus"]) == ("5.0", "Normal")

        # The one account: named after the instance, Super, Available.
        listed = client.call("DescribeAccounts", {"InstanceId": instance_id})["Accounts"]["Account"]
        assert [(a["AccountName"], a["AccountType"], a["AccountStatus"]) for a in listed] == [
            (instance_id, "Super", "Available")
        ]

        # Anything else about accounts needs ACLs.
        other = new_password()
        for action, params in [
            ("CreateAccount", {"AccountName": "demo", "AccountPassword": other}),
            ("ResetAccountPassword", {"AccountName": "demo", "AccountPassword": other}),
            ("GrantAccountPrivilege", {"AccountName": "demo", "AccountPrivilege": "RoleReadOnly"}),
            ("DeleteAccount", {"AccountName": "demo"}),
            ("RotateManagementPassword", {}),
            # Sessions are told apart by ACL user (issue 15); refused before any change.
            ("KillAccountSessions", {"AccountName": instance_id}),
            ("DescribeAccountSessions", {"AccountName": instance_id}),
            (
                "ResetAccountPassword",
                {"AccountName": instance_id, "AccountPassword": other, "RevokeSessions": "true"},
            ),
        ]:
            err = api_error(client, action, {"InstanceId": instance_id, **params})
            assert (err.status, err.code, err.message) == ENGINE, action
        assert deployment.only(deployment.password, other)

        # The seed action, through the official SDK: requirepass and masterauth on both nodes.
        first = new_password()
        sdk = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
        sdk.reset_account_password(
            kv_models.ResetAccountPasswordRequest(
                instance_id=instance_id, account_name=instance_id, account_password=first
            )
        )
        assert deployment.only(first, deployment.password)
        assert deployment.replicates(first, "after-reset")
        for node in deployment.nodes:
            with login(node.port, first) as conn:
                assert conn.config_get("masterauth") == {"masterauth": first}
        assert all(_persisted(n) == (first, first) for n in deployment.nodes)  # CONFIG REWRITE

        # ModifyAccountPassword checks the old one against the stored hash.
        err = api_error(
            client,
            "ModifyAccountPassword",
            {
                "InstanceId": instance_id,
                "AccountName": instance_id,
                "OldAccountPassword": deployment.password,
                "NewAccountPassword": new_password(),
            },
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidAccountPassword.NotMatch",
            "The old password is incorrect.",
        )
        second = new_password()
        sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=instance_id,
                account_name=instance_id,
                old_account_password=first,
                new_account_password=second,
            )
        )
        assert deployment.only(second, first)

        # A restarted replica reads the new password from its rewritten redis.conf.
        deployment.replica.stop(signal.SIGKILL)
        deployment.replica.start()
        wait_for("restarted replica in sync", lambda: deployment.in_sync(second), 15)
        assert not accepts(deployment.replica.port, first)

        # masterauth changed by hand on the replica: the reconciler puts it back.
        mark = len(log_text(server))
        with login(deployment.replica.port, second) as conn:
            conn.config_set("masterauth", "by-hand")

        def masterauth_back() -> bool:
            with login(deployment.replica.port, second) as conn:
                return bool(conn.config_get("masterauth") == {"masterauth": second})

        wait_for("masterauth repaired", masterauth_back, 10)
        # The pass logs its repair once the node has it: the line may come a moment later.
        wait_for("repair logged", lambda: f"users {instance_id}" in log_text(server)[mark:], 10)

        # The password taken off a node by hand: put back, not left open.
        with login(deployment.replica.port, second) as conn:
            conn.config_set("requirepass", "")
        wait_for(
            "requirepass back on the replica",
            lambda: deployment.only(second, first) and deployment.in_sync(second),
            10,
        )

        client.call("DeleteInstance", {"InstanceId": instance_id})
        assert deployment.only(second)  # forgetting a deployment leaves its password


def _persisted(node: Node5) -> tuple[str, str]:
    """``requirepass`` and ``masterauth`` as the node's redis.conf has them."""
    found = {}
    for line in (node.directory / "redis.conf").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("requirepass", "masterauth"):
            found[key] = value.strip('"')
    return found["requirepass"], found["masterauth"]


def test_redis5_reset_with_a_stopped_node_is_rolled_back(
    data_dir: Path, deployment: Deployment5
) -> None:
    with serving(data_dir, FAST) as server, api(server) as client:
        instance_id = str(register(client, deployment)["InstanceId"])
        assert deployment.replica.process is not None
        pid = deployment.replica.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = client.request(
                "ResetAccountPassword",
                {
                    "InstanceId": instance_id,
                    "AccountName": instance_id,
                    "AccountPassword": new_password(),
                },
            )
            took = time.monotonic() - started
            body = response.json()
            assert (response.status_code, body["Code"], body["Message"]) == (
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
            assert took < 10
            assert accepts(deployment.master.port, deployment.password)
            # Put back by the change's own undo, not by a reconciler pass after it.
            assert f"drift on node 127.0.0.1:{deployment.master.port}" not in log_text(server)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Whatever the stopped replica had queued runs now; every node ends where
        # the database says, and stays there.
        wait_for(
            "every node back on the recorded password",
            lambda: deployment.only(deployment.password),
            20,
        )
        time.sleep(1.5)
        assert deployment.only(deployment.password)
        wait_for("replica in sync", lambda: deployment.in_sync(deployment.password), 15)
        newer = new_password()
        reset(client, instance_id, newer)
        assert deployment.only(newer, deployment.password)


@pytest.mark.parametrize("point", ["nodes-changed", "fanout-first-node"])
def test_redis5_serve_killed_mid_reset_recovers(
    data_dir: Path, deployment: Deployment5, point: str
) -> None:
    server = start_server(data_dir, extra_env=FAST)
    try:
        with api(server) as client:
            instance_id = str(register(client, deployment)["InstanceId"])
    finally:
        stop_server(server)  # the instance stays registered
    lease = {**FAST, "RKVSTORE_TASK_LEASE_SECONDS": "1"}
    crashing = restart(server, {**lease, CRASH_VARIABLE: point})
    lost = new_password()
    assert deployment.replica.process is not None
    replica_pid = deployment.replica.process.pid
    if point == "fanout-first-node":
        # The master answers first and rkvstore dies then; the replica, stopped,
        # has not been changed: the half-changed case.
        os.kill(replica_pid, signal.SIGSTOP)
    try:
        with api(crashing) as client, pytest.raises(httpx.TransportError):
            reset(client, instance_id, lost)
        crashing.process.wait(timeout=10)
    finally:
        os.kill(replica_pid, signal.SIGCONT)
        with contextlib.suppress(Exception):
            crashing.stop(signal.SIGKILL)
    assert accepts(deployment.master.port, lost)
    half = point == "fanout-first-node"
    assert accepts(deployment.replica.port, deployment.password if half else lost)
    again: LiveServer = restart(server, lease)
    try:
        # The change was not recorded: every node goes back to the recorded password.
        wait_for(
            "nodes back on the recorded password",
            lambda: deployment.only(deployment.password, lost),
            30,
        )
        with api(again) as client:
            newer = new_password()
            wait_for(
                "a reset after the crash",
                lambda: reset(client, instance_id, newer) is None,
                15,
                step=0.5,
            )
            assert deployment.only(newer, deployment.password, lost)
            assert deployment.replicates(newer, f"after-{point}")
    finally:
        stop_server(again, delete_instances=True)


def test_redis5_change_waits_while_a_node_may_hold_an_unrecorded_password(
    data_dir: Path, deployment: Deployment5
) -> None:
    """The pending password is the only way into a node that kept an unrecorded
    change: a new change must not replace it while such a node is out of reach."""
    server = start_server(data_dir, extra_env=FAST)
    try:
        with api(server) as client:
            instance_id = str(register(client, deployment)["InstanceId"])
    finally:
        stop_server(server)
    lease = {**FAST, "RKVSTORE_TASK_LEASE_SECONDS": "1"}
    crashing = restart(server, {**lease, CRASH_VARIABLE: "nodes-changed"})
    lost = new_password()
    try:
        with api(crashing) as client, pytest.raises(httpx.TransportError):
            reset(client, instance_id, lost)
        crashing.process.wait(timeout=10)
    finally:
        with contextlib.suppress(Exception):
            crashing.stop(signal.SIGKILL)
    assert all(accepts(n.port, lost) for n in deployment.nodes)  # changed, never recorded

    assert deployment.replica.process is not None
    replica_pid = deployment.replica.process.pid
    os.kill(replica_pid, signal.SIGSTOP)  # out of reach while rkvstore recovers
    again = restart(server, lease)
    try:
        wait_for(
            "the master back on the recorded password",
            lambda: accepts(deployment.master.port, deployment.password),
            20,
        )
        with api(again) as client:
            response = client.request(
                "ResetAccountPassword",
                {
                    "InstanceId": instance_id,
                    "AccountName": instance_id,
                    "AccountPassword": new_password(),
                },
            )
            body = response.json()
            assert (response.status_code, body["Code"], body["Message"]) == (
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
            os.kill(replica_pid, signal.SIGCONT)
            # Still reachable with the pending password: put back like the master.
            wait_for(
                "every node on the recorded password",
                lambda: deployment.only(deployment.password, lost),
                20,
            )
            wait_for("replica in sync", lambda: deployment.in_sync(deployment.password), 15)
            newer = new_password()
            reset(client, instance_id, newer)
            assert deployment.only(newer, deployment.password, lost)
    finally:
        os.kill(replica_pid, signal.SIGCONT)
        stop_server(again, delete_instances=True)
