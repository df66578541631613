"""Account sessions (issue 15): revoke what a leaked password opened.

One server serves the module, with two local instances made at once: a
MASTER_SLAVE on Redis 6.2 (two nodes) and a two-shard cluster with a replica
each on Redis 7.0 (four nodes); one test registers a deployment of its own.
A "session" here is a bare redis-py ``Connection`` (no pool: a pool would
reconnect behind the test's back) opened and authenticated on one node; its
next command after a kill reads the server's close as a ``ConnectionError``.
Calls go through the new SDK's generic ``call_api`` (how an application sends
an extension parameter) and through ``rkvstore call``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException
from darabonba.runtime import RuntimeOptions
from redis.connection import Connection

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.faults import STALL_VARIABLE
from rkvstore.secret import Secret
from tests.api.instances import (
    HOST,
    MASTER_SLAVE,
    REDIS_TIMEOUT,
    assert_wrongpass,
    can_login,
    connect,
    create_instance,
    delete_instance,
    new_password,
    rpc_client,
    start_creating,
    wait_normal,
)
from tests.api.ram_helpers import (
    GENEROUS_RATE,
    discover_account_id,
    expect_denied,
    make_user,
    root_of,
)
from tests.api.sdk_clients import new_sdk_client, rpc_params
from tests.conftest import ARTIFACT_DIRS, LiveServer, start_server
from tests.integration.test_cluster import node_files
from tests.integration.test_resilience import own_deployment, wait_for

CLI_TIMEOUT: Final = 60
NODE_TIMEOUT: Final = "1"


@dataclass
class Made:
    instance_id: str
    password: str  # the default accounts'
    nodes: dict[str, int]  # node ID -> port, every node


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("sessions")
    ARTIFACT_DIRS.append(path)
    # No repair pass while a node is stopped on purpose; a short node deadline.
    env = {
        **GENEROUS_RATE,
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "60",
        "RKVSTORE_NODE_TIMEOUT_SECONDS": NODE_TIMEOUT,
    }
    live = start_server(path, extra_env=env)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def instances(server: LiveServer) -> Iterator[dict[str, Made]]:
    """``{"master_slave": …, "cluster": …}``, created at once, deleted at the end."""
    made: dict[str, Made] = {}
    with rpc_client(server) as client:
        try:
            password = new_password("Def_1")
            # Redis 6.2 (EngineVersion 6.0) here, 7.0 for the cluster: both engines.
            iid, _ = start_creating(client, MASTER_SLAVE, password=password, engine_version="6.0")
            made["master_slave"] = Made(iid, password, {})
            password = new_password("Def_1")
            body = client.call(
                "CreateInstance",
                {"NodeType": MASTER_SLAVE, "ShardCount": 2, "Password": Secret(password)},
            )
            made["cluster"] = Made(str(body["InstanceId"]), password, {})
            for one in made.values():
                wait_normal(client, one.instance_id, 90)
                one.nodes = {f.node_id: f.port for f in node_files(server, one.instance_id)}
            assert len(made["master_slave"].nodes) == 2
            assert len(made["cluster"].nodes) == 4
            yield made
        finally:
            for one in made.values():
                delete_instance(client, one.instance_id)


# --------------------------------------------------------------------------- calls


def sdk_call(server: LiveServer, action: str, **params: str) -> dict[str, Any]:
    """The new SDK's generic call, as the README shows it."""
    client = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
    request = open_api_models.OpenApiRequest(query=params)
    result = client.call_api(rpc_params(action), request, RuntimeOptions())
    assert result["statusCode"] == 200
    body: dict[str, Any] = result["body"]
    return body


def cli_call(server: LiveServer, tmp: Path, action: str, **params: str) -> dict[str, Any]:
    """``rkvstore call``; a secret parameter from a file (0600), never the command line."""
    args = ["call", action, "--endpoint", server.url, "--access-key-id", server.access_key_id]
    for name, value in params.items():
        if name.endswith("Password"):
            path = tmp / f"{name}-{secrets.token_hex(4)}"
            path.touch(mode=0o600)
            path.write_text(value + "\n")
            args += [f"--{name}-file", str(path)]
        else:
            args += [f"--{name}", value]
    env = {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": server.access_key_secret}
    done = subprocess.run(
        [sys.executable, "-m", "rkvstore.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def new_account(
    server: LiveServer, made: Made, privilege: str = "RoleReadWrite"
) -> tuple[str, str]:
    name = "acct_" + secrets.token_hex(4)
    password = new_password()
    sdk_call(
        server,
        "CreateAccount",
        InstanceId=made.instance_id,
        AccountName=name,
        AccountPassword=password,
        AccountPrivilege=privilege,
    )
    return name, password


# --------------------------------------------------------------------------- sessions


def open_session(port: int, user: str, password: str, name: str | None = None) -> Connection:
    """One connection, authenticated now (and named, if ``name``)."""
    conn = Connection(
        host=HOST,
        port=port,
        username=user,
        password=password,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
    )
    conn.connect()
    if name is not None:
        conn.send_command("CLIENT", "SETNAME", name)
        assert conn.read_response() == b"OK"
    return conn


def works(conn: Connection) -> bool:
    """True if the session still answers; False if the server closed it."""
    try:
        conn.send_command("PING")
        return conn.read_response() == b"PONG"
    except redis.ConnectionError:  # redis-py has dropped the socket
        return False


@contextmanager
def sessions_on(ports: dict[str, int], user: str, password: str) -> Iterator[dict[str, Connection]]:
    with ExitStack() as stack:
        opened = {}
        for node_id, port in ports.items():
            conn = open_session(port, user, password, name=f"s-{node_id}")
            stack.callback(conn.disconnect)
            opened[node_id] = conn
        yield opened


def clients(port: int, user: str, password: str, kind: str | None = None) -> list[dict[str, str]]:
    """``CLIENT LIST`` (of one type) of a node, as ``user``."""
    with connect(port, user, password) as client:
        return list(client.client_list(_type=kind))


def client_ids(port: int, default_password: str, user: str) -> set[str]:
    return {c["id"] for c in clients(port, "default", default_password) if c["user"] == user}


def replication_ok(made: Made) -> None:
    """Every master still lists its replica, every replica's link is up."""
    for port in made.nodes.values():
        with connect(port, "default", made.password) as client:
            info = client.info("replication")
        if info["role"] == "master":
            assert info["connected_slaves"] == 1, (port, info)
        else:
            assert info["master_link_status"] == "up", (port, info)


def by_node(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["NodeId"]: n for n in answer["Nodes"]["Node"]}


# --------------------------------------------------------------------------- the scenario


@pytest.mark.parametrize("how", ["sdk", "cli"])
@pytest.mark.parametrize("kind", ["master_slave", "cluster"])
def test_reset_with_revoke_puts_the_old_sessions_out_on_every_node(
    server: LiveServer, instances: dict[str, Made], kind: str, how: str, tmp_path: Path
) -> None:
    made = instances[kind]
    name, old = new_account(server, made)
    new = new_password()
    with sessions_on(made.nodes, name, old) as leaked:
        params = {
            "InstanceId": made.instance_id,
            "AccountName": name,
            "AccountPassword": new,
            "RevokeSessions": "true",
        }
        if how == "sdk":
            body = sdk_call(server, "ResetAccountPassword", **params)
        else:
            body = cli_call(server, tmp_path, "ResetAccountPassword", **params)
        revoked = body["RevokedSessions"]
        assert revoked["KilledCount"] == len(made.nodes)
        assert {k: v["Killed"] for k, v in by_node(revoked).items()} == dict.fromkeys(made.nodes, 1)
        for node_id, conn in leaked.items():
            assert not works(conn), f"{node_id}: the leaked session still answers"
    for port in made.nodes.values():
        assert_wrongpass(port, name, old)
        assert can_login(port, name, new)
    replication_ok(made)


def test_modify_with_revoke_puts_the_old_sessions_out(
    server: LiveServer, instances: dict[str, Made]
) -> None:
    made = instances["master_slave"]
    name, old = new_account(server, made)
    new = new_password()
    with sessions_on(made.nodes, name, old) as leaked:
        body = sdk_call(
            server,
            "ModifyAccountPassword",
            InstanceId=made.instance_id,
            AccountName=name,
            OldAccountPassword=old,
            NewAccountPassword=new,
            RevokeSessions="true",
        )
        assert body["RevokedSessions"]["KilledCount"] == len(made.nodes)
        assert not any(works(conn) for conn in leaked.values())
    for port in made.nodes.values():
        assert_wrongpass(port, name, old)
        assert can_login(port, name, new)


@pytest.mark.parametrize("revoke", [None, "false"])
def test_without_revoke_the_old_session_keeps_working(
    server: LiveServer, instances: dict[str, Made], revoke: str | None
) -> None:
    """Documented: rotation without downtime depends on open connections staying open."""
    made = instances["cluster"]
    name, old = new_account(server, made)
    new = new_password()
    with sessions_on(made.nodes, name, old) as open_ones:
        params = {"InstanceId": made.instance_id, "AccountName": name, "AccountPassword": new}
        if revoke is not None:
            params["RevokeSessions"] = revoke
        body = sdk_call(server, "ResetAccountPassword", **params)
        assert "RevokedSessions" not in body
        assert all(works(conn) for conn in open_ones.values())
    for port in made.nodes.values():
        assert_wrongpass(port, name, old)


# --------------------------------------------------------------------------- KillAccountSessions


@pytest.mark.parametrize("kind", ["master_slave", "cluster"])
def test_kill_closes_the_accounts_sessions_and_nothing_else(
    server: LiveServer, instances: dict[str, Made], kind: str
) -> None:
    made = instances[kind]
    victim, victim_pw = new_account(server, made)
    # RoleRepl: the privilege a replication link could log in with.
    other, other_pw = new_account(server, made, "RoleRepl")
    mgmt_before = {
        node_id: client_ids(port, made.password, MANAGEMENT_USER)
        for node_id, port in made.nodes.items()
    }
    assert all(mgmt_before.values()), mgmt_before
    with (
        sessions_on(made.nodes, victim, victim_pw) as first,
        sessions_on(made.nodes, victim, victim_pw) as second,
        sessions_on(made.nodes, other, other_pw) as bystanders,
    ):
        seen = sdk_call(
            server, "DescribeAccountSessions", InstanceId=made.instance_id, AccountName=victim
        )
        assert seen["AccountName"] == victim
        nodes = by_node(seen)
        assert set(nodes) == set(made.nodes)
        for node_id, node in nodes.items():
            assert node["Reachable"] is True
            assert node["SessionCount"] == 2
            sessions = node["Sessions"]["Session"]
            assert {s["Name"] for s in sessions} == {f"s-{node_id}"}
            mine = {
                "{}:{}".format(*c._sock.getsockname())  # type: ignore[union-attr]
                for c in (first[node_id], second[node_id])
            }
            assert {s["ClientAddress"] for s in sessions} == mine
            assert all(s["Age"] >= 0 and s["Idle"] >= 0 for s in sessions)

        body = sdk_call(
            server, "KillAccountSessions", InstanceId=made.instance_id, AccountName=victim
        )
        assert body["KilledCount"] == 2 * len(made.nodes)
        assert {k: v["Killed"] for k, v in by_node(body).items()} == dict.fromkeys(made.nodes, 2)
        assert not any(works(c) for c in [*first.values(), *second.values()])
        assert all(works(c) for c in bystanders.values())

        after = sdk_call(
            server, "DescribeAccountSessions", InstanceId=made.instance_id, AccountName=victim
        )
        assert {n["SessionCount"] for n in after["Nodes"]["Node"]} == {0}
    for node_id, port in made.nodes.items():
        assert mgmt_before[node_id] <= client_ids(port, made.password, MANAGEMENT_USER)
    replication_ok(made)
    # The password still works: a kill is not a reset.
    assert all(can_login(port, victim, victim_pw) for port in made.nodes.values())


def test_a_node_that_does_not_answer_is_reported(
    server: LiveServer, instances: dict[str, Made]
) -> None:
    made = instances["master_slave"]
    name, password = new_account(server, made)
    files = {f.node_id: f for f in node_files(server, made.instance_id)}
    silent = sorted(files)[-1]  # the replica
    pid = files[silent].running_pid()
    with sessions_on({k: v for k, v in made.nodes.items() if k != silent}, name, password) as on:
        os.kill(pid, signal.SIGSTOP)
        try:
            seen = sdk_call(
                server, "DescribeAccountSessions", InstanceId=made.instance_id, AccountName=name
            )
            nodes = by_node(seen)
            assert nodes[silent]["Reachable"] is False
            assert [n["SessionCount"] for k, n in nodes.items() if k != silent] == [1]
            with pytest.raises(ServerException) as info:
                sdk_call(
                    server, "KillAccountSessions", InstanceId=made.instance_id, AccountName=name
                )
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (info.value.code, info.value.status_code) == ("SessionsNotClosed", 503)
        assert info.value.data["Message"] == (
            f"The account's sessions could not be closed on node(s) {silent}, which did not "
            "answer; those on the other nodes were closed. Call KillAccountSessions again."
        )
        assert not any(works(c) for c in on.values())


def test_errors_of_the_session_actions(server: LiveServer, instances: dict[str, Made]) -> None:
    made = instances["master_slave"]
    cases = [
        ({"AccountName": "nobody"}, ("InvalidAccountName.NotFound", 404)),
        ({"AccountName": MANAGEMENT_USER}, ("InvalidAccountName.NotFound", 404)),
        ({"AccountName": "Bad-Name"}, ("InvalidAccountName.Format", 400)),
    ]
    messages = {
        "InvalidAccountName.NotFound": "Specified AccountName does not exist.",
        "InvalidAccountName.Format": "Specified AccountName is not valid.",
    }
    for action in ("KillAccountSessions", "DescribeAccountSessions"):
        for params, (code, status) in cases:
            with pytest.raises(ClientException) as info:
                sdk_call(server, action, InstanceId=made.instance_id, **params)
            assert (info.value.code, info.value.status_code) == (code, status)
            assert info.value.data["Message"] == messages[code]
        with pytest.raises(ClientException) as info:
            sdk_call(server, action, InstanceId="r-nosuchinstance000", AccountName="x")
        assert info.value.code == "InvalidInstanceId.NotFound"
        assert info.value.data["Message"] == "The specified instance is not found."
    with pytest.raises(ClientException) as info:
        sdk_call(
            server,
            "ResetAccountPassword",
            InstanceId=made.instance_id,
            AccountName="nobody",
            AccountPassword=new_password(),
            RevokeSessions="maybe",
        )
    assert info.value.code == "InvalidParameter"
    assert info.value.data["Message"] == 'The specified parameter "RevokeSessions" is not valid.'


def test_a_ram_user_without_the_action_is_denied(
    server: LiveServer, instances: dict[str, Made]
) -> None:
    made = instances["master_slave"]
    name, password = new_account(server, made)
    root = root_of(server)
    account_id = discover_account_id(root)
    reader = make_user(root, account_id, system=["AliyunKvstoreReadOnlyAccess"])
    as_reader = reader.as_server(server)
    with sessions_on(made.nodes, name, password) as open_ones:
        # Read-only access may look (kvstore:DescribeAccountSessions is a Describe)…
        seen = sdk_call(
            as_reader, "DescribeAccountSessions", InstanceId=made.instance_id, AccountName=name
        )
        assert {n["SessionCount"] for n in seen["Nodes"]["Node"]} == {1}
        # …but not put anyone out.
        expect_denied(
            lambda: sdk_call(
                as_reader, "KillAccountSessions", InstanceId=made.instance_id, AccountName=name
            ),
            reader,
            "kvstore:KillAccountSessions",
        )
        assert all(works(c) for c in open_ones.values())


# --------------------------------------------------------------------------- registered


def replica_links(port: int, admin: str, admin_password: str) -> dict[str, str]:
    """The master's replication links: client id -> the user it logged in as."""
    return {c["id"]: c["user"] for c in clients(port, admin, admin_password, "replica")}


def test_on_a_registered_deployment_the_accounts_replication_link_stays(
    server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A RoleRepl account may be a replica's login: its replication link is no session."""
    root = tmp_path_factory.mktemp("own-redis")
    ARTIFACT_DIRS.append(root)
    with own_deployment(root) as own:
        body = sdk_call(
            server,
            "RegisterInstance",
            Endpoint=f"127.0.0.1:{own.master.port}",
            AdminUserName="admin",
            AdminPassword=own.admin_password,
        )
        made = Made(str(body["InstanceId"]), "", {"master": own.master.port})
        made.nodes["replica"] = own.replica.port
        try:
            name, password = new_account(server, made, "RoleRepl")
            with own.admin(own.replica) as replica:
                replica.config_set("masteruser", name)
                replica.config_set("masterauth", password)
                replica.execute_command("CLIENT", "KILL", "TYPE", "master")  # link again, as it

            def linked_as_account() -> bool:
                links = replica_links(own.master.port, "admin", own.admin_password)
                with own.admin(own.replica) as replica:
                    up = replica.info("replication")["master_link_status"] == "up"
                return up and list(links.values()) == [name]

            wait_for("the replica linked as the account", linked_as_account, 15)
            link = replica_links(own.master.port, "admin", own.admin_password)
            with sessions_on(made.nodes, name, password) as leaked:
                answer = sdk_call(
                    server, "KillAccountSessions", InstanceId=made.instance_id, AccountName=name
                )
                assert answer["KilledCount"] == 2
                assert not any(works(c) for c in leaked.values())
            assert replica_links(own.master.port, "admin", own.admin_password) == link
            with own.admin(own.replica) as replica:
                assert replica.info("replication")["master_link_status"] == "up"
        finally:
            sdk_call(server, "DeleteInstance", InstanceId=made.instance_id)


# --------------------------------------------------------------------------- a revoke that fails


def _stopped(pid: int) -> bool:
    """The process is in state T (stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.slow
def test_a_revoke_that_meets_a_silent_node_says_so_and_the_password_stands(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The server stops itself once the new password is recorded (a stall point); the
    replica is stopped meanwhile, so only the kill meets it."""
    path = tmp_path_factory.mktemp("sessions-stall")
    ARTIFACT_DIRS.append(path)
    env = {
        STALL_VARIABLE: "db-committed",
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "60",
        "RKVSTORE_NODE_TIMEOUT_SECONDS": NODE_TIMEOUT,
    }
    live = start_server(path, extra_env=env)
    replica_pid: int | None = None
    try:
        with rpc_client(live) as client:
            iid, _ = create_instance(client, MASTER_SLAVE, password=new_password("Def_1"))
            made = Made(iid, "", {f.node_id: f.port for f in node_files(live, iid)})
            replica_id = sorted(made.nodes)[-1]
            replica_pid = {f.node_id: f for f in node_files(live, iid)}[replica_id].running_pid()
            name, old = new_account(live, made)
            new = new_password()
            answers: list[httpx.Response] = []

            def reset() -> None:
                params = {
                    "InstanceId": iid,
                    "AccountName": name,
                    "AccountPassword": Secret(new),
                    "RevokeSessions": True,
                }
                answers.append(client.request("ResetAccountPassword", params))

            with sessions_on(made.nodes, name, old) as leaked:
                resetting = threading.Thread(target=reset)
                resetting.start()
                wait_for("the server stopped once recorded", lambda: _stopped(live.process.pid), 20)
                os.kill(replica_pid, signal.SIGSTOP)
                os.kill(live.process.pid, signal.SIGCONT)
                resetting.join(timeout=30)
                os.kill(replica_pid, signal.SIGCONT)
                assert len(answers) == 1
                body = answers[0].json()
                assert (answers[0].status_code, body["Code"]) == (
                    503,
                    "SessionsNotClosed.PasswordChanged",
                )
                assert body["Message"] == (
                    "The password was changed on every node, but the account's sessions could "
                    f"not be closed on node(s) {replica_id}, which did not answer. Call "
                    "KillAccountSessions."
                )
                master_id = sorted(made.nodes)[0]
                assert not works(leaked[master_id])
                # What the message says to do; the replica answers again.
                client.call("KillAccountSessions", {"InstanceId": iid, "AccountName": name})
                assert not works(leaked[replica_id])
            for port in made.nodes.values():
                assert_wrongpass(port, name, old)
                assert can_login(port, name, new)
            delete_instance(client, iid)
    finally:
        for pid in (replica_pid, live.process.pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        live.stop()
