"""Resilience on real processes: nodes that die, a server that restarts, nodes that hang.

Every test starts its own ``rkvstore serve`` (``start_server``) on its own data
dir and real redis-server processes: the local provider's, and for
RegisterInstance two of the test's own. Every wait is bounded; everything a
test starts is stopped in a ``finally`` (SIGSTOPped nodes get SIGCONT first).
Timings worth knowing (how long a ServiceUnavailable or a repair took) are
printed; run with ``-rP`` to see them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rkvstore.client import RpcClient, RpcError
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.localfiles import read_pidfile
from rkvstore.secret import Secret
from tests.conftest import ARTIFACT_DIRS, LiveServer, free_port, remember_secret, start_server
from tests.scrape import scrape, value

T = TypeVar("T")

SYSTEM_REDIS = Path("/usr/bin/redis-server")
SERVICE_UNAVAILABLE_MESSAGE = "The request has failed due to a temporary failure of the server."
# Every instance verified every second, as every pass once was (drift nobody
# flagged is found by the rolling verify).
FAST = {"RKVSTORE_RECONCILE_INTERVAL_SECONDS": "1", "RKVSTORE_VERIFY_INTERVAL_SECONDS": "1"}
HANGING = {**FAST, "RKVSTORE_NODE_TIMEOUT_SECONDS": "1"}


# --------------------------------------------------------------------------- small helpers


def new_password() -> str:
    """Upper, lower, a special and digits: valid by api.md §3 whatever the random part."""
    return remember_secret("Pw!" + secrets.token_hex(12) + "7")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, step: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (redis.RedisError, OSError, RpcError) as exc:
            last = exc
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


def connect(
    port: int, user: str | None = None, password: str | None = None, **extra: Any
) -> redis.Redis:
    """``extra``: more of redis.Redis's options (``ssl=True``, its certificates)."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=user,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        protocol=2,  # RESP2: Redis 5 (test_legacy) has no HELLO
        **extra,
    )


def auth_ok(port: int, user: str | None, password: str) -> bool:
    """True if ``AUTH user password`` succeeds, False on WRONGPASS; other errors propagate."""
    return logs_in(connect(port, user, password))


def logs_in(client: redis.Redis) -> bool:
    """``auth_ok`` for a client made already (TLS, say); closes it."""
    try:
        return client.ping() is True
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


def processes_on_port(port: int) -> list[int]:
    """Live redis-server processes whose title names this port ("<argv0> <bind>:<port>")."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
            if (
                b"redis-server" in cmdline
                and f":{port}".encode() in cmdline
                and "State:\tZ" not in status
            ):
                found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def files_holding(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


# --------------------------------------------------------------------------- the API


def api(server: LiveServer) -> RpcClient:
    return RpcClient(
        server.endpoint, server.access_key_id, Secret(server.access_key_secret), timeout=60
    )


def api_error(client: RpcClient, action: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        client.call(action, params)
    return caught.value


def status_of(client: RpcClient, instance_id: str) -> str:
    body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
    return str(body["Instances"]["DBInstanceAttribute"][0]["InstanceStatus"])


def create_instance(client: RpcClient, node_type: str, password: str) -> str:
    """CreateInstance, then wait (≤ 60 s) for it to be Normal."""
    body = client.call("CreateInstance", {"NodeType": node_type, "Password": password})
    instance_id = str(body["InstanceId"])

    def normal() -> bool:
        status = status_of(client, instance_id)
        assert status in ("Creating", "Normal"), f"{instance_id} went {status}"
        return status == "Normal"

    wait_for(f"{instance_id} Normal", normal, 60, step=0.2)
    return instance_id


def accounts_of(client: RpcClient, instance_id: str) -> dict[str, dict[str, Any]]:
    body = client.call("DescribeAccounts", {"InstanceId": instance_id})
    return {a["AccountName"]: a for a in body["Accounts"]["Account"]}


def account_status(client: RpcClient, instance_id: str, name: str) -> str:
    return str(accounts_of(client, instance_id)[name]["AccountStatus"])


def reset(client: RpcClient, instance_id: str, name: str, password: str) -> None:
    client.call(
        "ResetAccountPassword",
        {"InstanceId": instance_id, "AccountName": name, "AccountPassword": password},
    )


# --------------------------------------------------------------------------- local nodes


@dataclass(frozen=True)
class LocalNodeFiles:
    node_id: str
    directory: Path

    @property
    def port(self) -> int:
        text = (self.directory / "redis.conf").read_text()
        match = re.search(r"^port (\d+)$", text, re.MULTILINE)
        assert match, f"no port in {self.directory / 'redis.conf'}"
        return int(match.group(1))

    def pid(self) -> int | None:
        """The pid in ``redis.pid``; None while redis-server is (re)writing it."""
        return read_pidfile(self.directory / "redis.pid")

    def running_pid(self) -> int:
        """The pid of the node's live process, where the test knows it runs."""
        pid = self.pid()
        assert pid is not None and pid_alive(pid), f"{self.node_id}: no live process"
        return pid


def local_nodes(server: LiveServer, instance_id: str) -> dict[str, LocalNodeFiles]:
    """``{"master": …, "replica": …}`` from ``<data_dir>/nodes/<instance>/<node>/``."""
    root = server.data_dir / "nodes" / instance_id
    nodes = {}
    for directory in sorted(root.iterdir()):
        role = "master" if directory.name.endswith("-0") else "replica"
        nodes[role] = LocalNodeFiles(directory.name, directory)
    return nodes


def wait_serving(node: LocalNodeFiles, user: str, password: str, old_pid: int | None) -> int:
    """Wait until a (new) process serves the node's port and lets ``user`` in; its pid."""

    def serving() -> int | None:
        pid = node.pid()
        if pid is None or pid == old_pid or not pid_alive(pid):
            return None
        return pid if auth_ok(node.port, user, password) else None

    return wait_for(f"node {node.node_id} serving", serving, 15)


def kill_strays(data_dir: Path) -> None:
    """Last resort: no redis-server a test made rkvstore start outlives the test."""
    for pidfile in (data_dir / "nodes").glob("*/*/redis.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"redis-server" in cmdline and pid_alive(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def serving(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """A server on ``data_dir``; afterwards its instances are deleted and it is stopped."""
    server = start_server(data_dir, extra_env=env)
    try:
        yield server
    finally:
        stop_server(server, delete_instances=True)
        kill_strays(data_dir)


def stop_server(server: LiveServer, *, delete_instances: bool = False) -> None:
    if delete_instances and server.process.poll() is None:
        with contextlib.suppress(Exception), api(server) as client:
            body = client.call("DescribeInstances", {"PageSize": 100})
            for item in body["Instances"]["KVStoreInstance"]:
                with contextlib.suppress(RpcError):
                    client.call("DeleteInstance", {"InstanceId": item["InstanceId"]})
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        server.stop(signal.SIGKILL)


def restart(server: LiveServer, env: dict[str, str] | None = None) -> LiveServer:
    """A new ``rkvstore serve`` on the same data dir, with the same root key."""
    return start_server(
        server.data_dir,
        extra_env=env,
        access_key=(server.access_key_id, server.access_key_secret),
    )


def log_text(server: LiveServer) -> str:
    path = server.data_dir / "rkvstore.log"
    return path.read_text(errors="replace") if path.exists() else ""


# --------------------------------------------------------------------------- 1. a node dies


def test_killed_node_comes_back_on_its_port_with_every_account(data_dir: Path) -> None:
    with serving(data_dir, FAST) as server, api(server) as client:
        default_pw = new_password()
        instance_id = create_instance(client, "MASTER_SLAVE", default_pw)
        demo_pw = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": demo_pw},
        )
        # Current passwords differ from those the nodes were created with: what
        # comes back after a crash must be what was persisted afterwards.
        demo_pw = new_password()
        reset(client, instance_id, "demo", demo_pw)
        default_pw_now = new_password()
        reset(client, instance_id, "default", default_pw_now)
        current = {"default": default_pw_now, instance_id: default_pw, "demo": demo_pw}
        nodes = local_nodes(server, instance_id)
        assert set(nodes) == {"master", "replica"}

        for role in ("master", "replica"):
            node = nodes[role]
            port, old_pid = node.port, node.running_pid()
            assert processes_on_port(port) == [old_pid]
            os.kill(old_pid, signal.SIGKILL)
            started = time.monotonic()
            new_pid = wait_serving(node, "demo", demo_pw, old_pid)
            took = time.monotonic() - started
            print(f"{role} killed: back on port {port} (pid {new_pid}) after {took:.2f} s")
            assert node.port == port
            assert processes_on_port(port) == [new_pid]
            for each in nodes.values():
                for user, pw in current.items():
                    assert auth_ok(each.port, user, pw), f"{user} on {each.node_id} after {role}"
                assert not auth_ok(each.port, "demo", "Wrong-pw-1234")

        # Replication still works: a write on the master reaches the replica.
        with connect(nodes["master"].port, "demo", demo_pw) as master:
            master.set("resilience:key", "after-the-crashes")
        with connect(nodes["replica"].port, "demo", demo_pw) as replica:
            wait_for(
                "replicated write",
                lambda: replica.get("resilience:key") == "after-the-crashes",
                15,
            )
        # A reconciler pass that met a node while it was down said Unavailable; the next
        # one, with every node back, says Available again.
        wait_for(
            "demo Available",
            lambda: account_status(client, instance_id, "demo") == "Available",
            10,
        )


# --------------------------------------------------------------------------- 2. serve restarts


@dataclass
class Fleet:
    """What a test created: instance -> {account: current password}."""

    passwords: dict[str, dict[str, str]]

    def check_nodes(self, server: LiveServer) -> dict[int, int]:
        """Every account authenticates on every node; returns port -> pid."""
        pids = {}
        for instance_id, accounts in self.passwords.items():
            for node in local_nodes(server, instance_id).values():
                for user, pw in accounts.items():
                    assert auth_ok(node.port, user, pw), f"{user} on {node.node_id}"
                found = processes_on_port(node.port)
                assert found == [node.running_pid()], f"port {node.port}: processes {found}"
                pids[node.port] = found[0]
        return pids


def _make_fleet(client: RpcClient) -> Fleet:
    fleet = Fleet({})
    for node_type in ("MASTER_SLAVE", "STAND_ALONE"):
        default_pw = new_password()
        instance_id = create_instance(client, node_type, default_pw)
        demo_pw = new_password()
        client.call(
            "CreateAccount",
            {
                "InstanceId": instance_id,
                "AccountName": "demo",
                "AccountPassword": demo_pw,
                "AccountPrivilege": "RoleReadOnly",
                "AccountDescription": "resilience",
            },
        )
        fleet.passwords[instance_id] = {"default": default_pw, instance_id: default_pw}
        fleet.passwords[instance_id]["demo"] = demo_pw
    return fleet


def _check_after_restart(client: RpcClient, fleet: Fleet, before: dict[str, Any]) -> None:
    body = client.call("DescribeInstances", {"PageSize": 100})
    items = {i["InstanceId"]: i for i in body["Instances"]["KVStoreInstance"]}
    assert set(items) == set(fleet.passwords)
    for instance_id, item in items.items():
        assert item["InstanceStatus"] == "Normal"
        assert item["Port"] == before[instance_id]["Port"]
        assert item["NodeType"] == before[instance_id]["NodeType"]
        accounts = accounts_of(client, instance_id)
        assert set(accounts) == set(fleet.passwords[instance_id])
        assert all(a["AccountStatus"] == "Available" for a in accounts.values())
        privilege = accounts["demo"]["DatabasePrivileges"]["DatabasePrivilege"][0]
        assert privilege["AccountPrivilege"] == "RoleReadOnly"
        assert accounts["demo"]["AccountDescription"] == "resilience"


def _reset_everywhere(client: RpcClient, server: LiveServer, fleet: Fleet, lease: float) -> None:
    """A new reset of ``demo`` works on every instance (old refused, new accepted)."""
    for instance_id, accounts in fleet.passwords.items():
        old, new = accounts["demo"], new_password()

        def attempt(instance_id: str = instance_id, new: str = new) -> bool:
            try:
                reset(client, instance_id, "demo", new)
            except RpcError as exc:
                # A slot the killed server held is freed after its lease (api.md §6).
                if exc.code != "TaskExists":
                    raise
                return False
            return True

        wait_for(f"reset on {instance_id}", attempt, lease + 10, step=0.5)
        accounts["demo"] = new
        for node in local_nodes(server, instance_id).values():
            assert auth_ok(node.port, "demo", new)
            assert not auth_ok(node.port, "demo", old)


def test_serve_restarts_keep_instances_and_accounts(data_dir: Path) -> None:
    lease = 6.0
    env = {**FAST, "RKVSTORE_TASK_LEASE_SECONDS": str(lease)}
    server = start_server(data_dir, extra_env=env)
    try:
        with api(server) as client:
            fleet = _make_fleet(client)
            body = client.call("DescribeInstances", {"PageSize": 100})
            before = {i["InstanceId"]: i for i in body["Instances"]["KVStoreInstance"]}
        pids = fleet.check_nodes(server)

        # SIGTERM: a clean stop (the nodes stop with it by default), then a restart.
        assert server.stop(signal.SIGTERM) == 0
        assert all(processes_on_port(port) == [] for port in pids), "nodes outlived SIGTERM"
        server = restart(server, env)
        with api(server) as client:
            _check_after_restart(client, fleet, before)
            fleet.check_nodes(server)
            _reset_everywhere(client, server, fleet, lease)
        pids = fleet.check_nodes(server)

        # kill -9: the nodes keep running and the next server adopts them.
        server.stop(signal.SIGKILL)
        assert all(processes_on_port(port) == [pid] for port, pid in pids.items())
        log_mark = len(log_text(server))
        server = restart(server, env)
        with api(server) as client:
            _check_after_restart(client, fleet, before)
            assert fleet.check_nodes(server) == pids, "the running nodes were not adopted"
            _reset_everywhere(client, server, fleet, lease)
        assert fleet.check_nodes(server) == pids
        assert log_text(server)[log_mark:].count("adopted node") == len(pids)
    finally:
        stop_server(server, delete_instances=True)
        kill_strays(data_dir)


# --------------------------------------------------------------------------- 3, 4. a node hangs


@pytest.mark.parametrize("stopped", ["replica", "master"])
def test_hung_node_gives_service_unavailable_and_is_brought_back(
    data_dir: Path, stopped: str
) -> None:
    metrics_port = free_port()
    env = {**HANGING, "RKVSTORE_METRICS_PORT": str(metrics_port)}
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    with serving(data_dir, env) as server, api(server) as client:
        instance_id = create_instance(client, "MASTER_SLAVE", new_password())
        old_pw = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": old_pw},
        )
        nodes = local_nodes(server, instance_id)
        hung = nodes[stopped]
        pid = hung.running_pid()
        new_pw = new_password()
        before = scrape(metrics)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = client.request(
                "ResetAccountPassword",
                {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": new_pw},
            )
            unavailable_after = time.monotonic() - started
            body = response.json()
            print(f"{stopped} stopped: ServiceUnavailable after {unavailable_after:.2f} s")
            assert response.status_code == 503, body
            assert body["Code"] == "ServiceUnavailable"
            assert body["Message"] == SERVICE_UNAVAILABLE_MESSAGE
            assert unavailable_after < 10
            assert account_status(client, instance_id, "demo") == "Unavailable"
            # The node that answered was put back already.
            for role, node in nodes.items():
                if role != stopped:
                    assert auth_ok(node.port, "demo", old_pw)
                    assert not auth_ok(node.port, "demo", new_pw)
            time.sleep(1.5)  # a reconciler pass or so meets the hung node too
            assert account_status(client, instance_id, "demo") == "Unavailable"
            # Counted: the failed change, the node it was undone on; the hung node
            # out of reach once a pass has met it.
            during = scrape(metrics)
            failures = "rkvstore_node_change_failures_total"
            assert value(during, failures) == value(before, failures) + 1
            undone = value(during, "rkvstore_node_rollbacks_total", result="ok")
            assert undone >= value(before, "rkvstore_node_rollbacks_total", result="ok") + 1
            wait_for(
                "the hung node counted out of reach",
                lambda: value(scrape(metrics), "rkvstore_unreachable_nodes") >= 1,
                10,
            )
            log_mark = len(log_text(server))
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()

        # The command queued on the hung node runs now; rkvstore must undo it.
        def back_in_line() -> bool:
            return (
                all(
                    auth_ok(n.port, "demo", old_pw) and not auth_ok(n.port, "demo", new_pw)
                    for n in nodes.values()
                )
                and account_status(client, instance_id, "demo") == "Available"
            )

        wait_for("every node back on the old password", back_in_line, 20)
        converged_after = time.monotonic() - resumed
        print(f"{stopped} resumed: back in line after {converged_after:.2f} s")
        # Stable, not a glimpse before the late command ran: two more intervals.
        time.sleep(2.5)
        for node in nodes.values():
            assert auth_ok(node.port, "demo", old_pw), node.node_id
            assert not auth_ok(node.port, "demo", new_pw), node.node_id
        assert processes_on_port(hung.port) == [pid], "the hung node was replaced, not repaired"
        repairs = log_text(server)[log_mark:]
        assert f"repaired drift on node 127.0.0.1:{hung.port}: users demo" in repairs, (
            "the late command never ran on the resumed node, or was not repaired"
        )
        after = scrape(metrics)
        repaired = "rkvstore_reconcile_repairs_total"
        assert value(after, repaired) >= value(before, repaired) + 1
        assert value(after, "rkvstore_unreachable_nodes") == 0

        newer_pw = new_password()
        reset(client, instance_id, "demo", newer_pw)
        for node in nodes.values():
            assert auth_ok(node.port, "demo", newer_pw)
            assert not auth_ok(node.port, "demo", old_pw)
        assert account_status(client, instance_id, "demo") == "Available"


def test_a_change_that_reaches_every_node_makes_its_accounts_available_at_once(
    data_dir: Path,
) -> None:
    """A pass saw a node out of reach; once a change reaches it, no need to wait a minute."""
    slow_passes = {
        **HANGING,
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "60",
        "RKVSTORE_VERIFY_INTERVAL_SECONDS": "60",
    }
    with serving(data_dir, slow_passes) as server, api(server) as client:
        instance_id = create_instance(client, "MASTER_SLAVE", new_password())
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": new_password()},
        )
        hung = local_nodes(server, instance_id)["replica"]
        pid = hung.running_pid()
        log_mark = len(log_text(server))
        os.kill(pid, signal.SIGSTOP)
        try:
            response = client.request(
                "ResetAccountPassword",
                {
                    "InstanceId": instance_id,
                    "AccountName": "demo",
                    "AccountPassword": new_password(),
                },
            )
            assert response.status_code == 503, response.text
            assert response.json()["Code"] == "ServiceUnavailable"
            # The failure woke the reconciler; its pass finds the node out of reach.
            wait_for(
                "a pass that meets the hung node",
                lambda: f"node 127.0.0.1:{hung.port} out of reach" in log_text(server)[log_mark:],
                15,
            )
            assert account_status(client, instance_id, "demo") == "Unavailable"
        finally:
            os.kill(pid, signal.SIGCONT)
        newer = new_password()
        reset(client, instance_id, "demo", newer)
        # Long before the next pass (60 s away): the change itself showed every node answers.
        assert account_status(client, instance_id, "demo") == "Available"
        for node in local_nodes(server, instance_id).values():
            assert auth_ok(node.port, "demo", newer), node.node_id
        assert f"node 127.0.0.1:{hung.port} in reach again" in log_text(server)[log_mark:]


def test_a_hung_node_holds_up_only_its_own_instance_s_repairs(data_dir: Path) -> None:
    """Passes over instances run apart: one waiting out a stopped node's timeout
    does not keep the reconciler from repairing another instance meanwhile."""
    from tests.integration.test_cluster import management_password

    node_timeout = 10.0
    env = {
        "RKVSTORE_NODE_TIMEOUT_SECONDS": str(node_timeout),
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "0.5",
        "RKVSTORE_VERIFY_INTERVAL_SECONDS": "0.5",
    }
    with serving(data_dir, env) as server, api(server) as client:
        hung_id = create_instance(client, "STAND_ALONE", new_password())
        drifting_id = create_instance(client, "STAND_ALONE", new_password())
        passwords = {}
        for instance_id in (hung_id, drifting_id):
            passwords[instance_id] = new_password()
            client.call(
                "CreateAccount",
                {
                    "InstanceId": instance_id,
                    "AccountName": "demo",
                    "AccountPassword": passwords[instance_id],
                },
            )
        hung = local_nodes(server, hung_id)["master"]
        drifting = local_nodes(server, drifting_id)["master"]
        log_mark = len(log_text(server))
        pid = hung.running_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)  # passes have begun that wait on the stopped node
            stray = remember_secret("Stray!" + secrets.token_hex(10))
            mgmt = management_password(server, drifting_id)
            with connect(drifting.port, MANAGEMENT_USER, mgmt) as conn:
                conn.execute_command("ACL", "SETUSER", "demo", "resetpass", f">{stray}")
            changed = time.monotonic()

            def repaired() -> bool:
                return auth_ok(drifting.port, "demo", passwords[drifting_id]) and not auth_ok(
                    drifting.port, "demo", stray
                )

            # Well within the stopped node's timeout: not after it.
            wait_for("the other instance repaired", repaired, node_timeout / 2)
            print(f"repaired beside a hung instance after {time.monotonic() - changed:.2f} s")
            assert f"node 127.0.0.1:{hung.port} out of reach" not in log_text(server)[log_mark:]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert f"repaired drift on node 127.0.0.1:{drifting.port}: users demo" in log_text(server)


# --------------------------------------------------------------------------- 5, 6. RegisterInstance


@dataclass
class OwnRedis:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]


@dataclass
class OwnDeployment:
    master: OwnRedis
    replica: OwnRedis
    admin_password: str

    @property
    def nodes(self) -> list[OwnRedis]:
        return [self.master, self.replica]

    def admin(self, node: OwnRedis) -> redis.Redis:
        return connect(node.port, "admin", self.admin_password)

    def users(self, node: OwnRedis) -> list[str]:
        with self.admin(node) as conn:
            return list(conn.acl_users())


def start_own_redis(
    directory: Path,
    port: int,
    admin_hash: str,
    master_port: int | None,
    extra: Sequence[str] = (),
) -> OwnRedis:
    """A redis-server of the test's own (system binary): an ``admin`` user, ``default`` off."""
    directory.mkdir(mode=0o700)
    (directory / "users.acl").write_text(
        f"user admin on #{admin_hash} ~* &* +@all\nuser default off\n"
    )
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f'dir "{directory}"',
        "daemonize no",
        f'pidfile "{directory / "redis.pid"}"',
        f'logfile "{directory / "redis.log"}"',
        f'aclfile "{directory / "users.acl"}"',
        'save ""',
        "appendonly no",
        "repl-diskless-sync-delay 0",
    ]
    if master_port is not None:
        # masterauth is set at runtime (CONFIG SET), so no file here holds the password.
        lines += [f"replicaof 127.0.0.1 {master_port}", "masteruser admin"]
    lines += extra
    (directory / "redis.conf").write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [str(SYSTEM_REDIS), str(directory / "redis.conf")],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return OwnRedis(port, directory, process)


def stop_own_redis(node: OwnRedis) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGCONT)
        node.process.terminate()
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)


@contextlib.contextmanager
def own_deployment(root: Path) -> Iterator[OwnDeployment]:
    """A master and a replica of our own, with an admin user and ``default`` off."""
    if not SYSTEM_REDIS.exists():
        pytest.skip(f"no {SYSTEM_REDIS}")
    password = remember_secret("Adm!" + secrets.token_hex(14))
    digest = hashlib.sha256(password.encode()).hexdigest()
    started: list[OwnRedis] = []
    try:
        master = start_own_redis(root / "master", free_port(), digest, None)
        started.append(master)
        replica = start_own_redis(root / "replica", free_port(), digest, master.port)
        started.append(replica)
        deployment = OwnDeployment(master, replica, password)
        for node in started:

            def up(node: OwnRedis = node) -> bool:
                return auth_ok(node.port, "admin", password)

            wait_for(f"own redis on {node.port}", up, 15)
        with deployment.admin(replica) as conn:
            conn.config_set("masterauth", password)

            def link_up() -> bool:
                return bool(conn.info("replication").get("master_link_status") == "up")

            wait_for("own replica in sync", link_up, 15)
        yield deployment
    finally:
        for node in reversed(started):
            stop_own_redis(node)


def register(client: RpcClient, endpoint: str, password: str) -> dict[str, Any]:
    return client.call(
        "RegisterInstance",
        {"Endpoint": endpoint, "AdminUserName": "admin", "AdminPassword": password},
    )


@pytest.fixture
def own_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("own-redis")
    ARTIFACT_DIRS.append(path)  # nothing there may hold a password either
    return path


def test_register_instance_manages_accounts_on_every_node(data_dir: Path, own_root: Path) -> None:
    with own_deployment(own_root) as own, serving(data_dir, FAST) as server, api(server) as client:
        # A wrong admin password: refused, nothing recorded, nothing left on the nodes.
        wrong = remember_secret("Wrong!" + secrets.token_hex(10))
        err = api_error(
            client,
            "RegisterInstance",
            {
                "Endpoint": f"127.0.0.1:{own.master.port}",
                "AdminUserName": "admin",
                "AdminPassword": wrong,
            },
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidEndpoint.AuthenticationFailed",
            f"Redis node 127.0.0.1:{own.master.port} refused AdminUserName and AdminPassword: "
            "give a user of its ACL with that user's password, or AdminUserName default with "
            "its requirepass.",
        )
        assert client.call("DescribeInstances", {})["TotalCount"] == 0
        assert all(MANAGEMENT_USER not in own.users(n) for n in own.nodes)

        # An endpoint that is not one: a clear 400, not a 500.
        err = api_error(
            client,
            "RegisterInstance",
            {"Endpoint": "127.0.0.1:²", "AdminUserName": "admin", "AdminPassword": wrong},
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidParameter",
            'The specified parameter "Endpoint" is not valid.',
        )

        # A user of the deployment's own, there before rkvstore came.
        theirs = remember_secret("Theirs_" + secrets.token_hex(8))
        for node in own.nodes:
            with own.admin(node) as conn:
                conn.execute_command("ACL", "SETUSER", "app", "on", f">{theirs}", "~*", "+@all")
        body = register(client, f"127.0.0.1:{own.master.port}", own.admin_password)
        instance_id = body["InstanceId"]
        # rkvstore does not take over a user it did not create.
        err = api_error(
            client,
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "app", "AccountPassword": new_password()},
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidAccountName.Duplicate",
            "Specified AccountName already exists.",
        )
        assert all(auth_ok(node.port, "app", theirs) for node in own.nodes)
        assert re.fullmatch(r"r-[a-z0-9]{18}", instance_id)
        attribute = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
        item = attribute["Instances"]["DBInstanceAttribute"][0]
        assert item["InstanceStatus"] == "Normal"
        assert item["NodeCount"] == 2
        assert (item["ConnectionDomain"], item["Port"]) == ("127.0.0.1", own.master.port)
        assert all(MANAGEMENT_USER in own.users(n) for n in own.nodes)

        first = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": first},
        )
        for node in own.nodes:
            assert auth_ok(node.port, "demo", first)
        second = new_password()
        reset(client, instance_id, "demo", second)
        for node in own.nodes:
            assert auth_ok(node.port, "demo", second)
            assert not auth_ok(node.port, "demo", first)
        assert account_status(client, instance_id, "demo") == "Available"

        client.call("DeleteInstance", {"InstanceId": instance_id})
        for node in own.nodes:
            assert MANAGEMENT_USER not in own.users(node)
            assert auth_ok(node.port, "demo", second)  # the deployment's accounts stay
            assert auth_ok(node.port, "admin", own.admin_password)

        # Through the replica's address: the master is found too.
        body = register(client, f"127.0.0.1:{own.replica.port}", own.admin_password)
        again = body["InstanceId"]
        attribute = client.call("DescribeInstanceAttribute", {"InstanceId": again})
        item = attribute["Instances"]["DBInstanceAttribute"][0]
        assert item["InstanceStatus"] == "Normal"
        assert item["NodeCount"] == 2
        assert (item["ConnectionDomain"], item["Port"]) == ("127.0.0.1", own.master.port)
        assert all(MANAGEMENT_USER in own.users(n) for n in own.nodes)
        # Registered twice, two instances would fight over one management user.
        err = api_error(
            client,
            "RegisterInstance",
            {
                "Endpoint": f"127.0.0.1:{own.master.port}",
                "AdminUserName": "admin",
                "AdminPassword": own.admin_password,
            },
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidEndpoint.Registered",
            "A node of the specified Redis endpoint is already managed by rkvstore: delete the "
            "instance that manages it (DeleteInstance) before registering it again.",
        )
        assert client.call("DescribeInstances", {})["TotalCount"] == 1
        client.call("DeleteInstance", {"InstanceId": again})
        assert all(MANAGEMENT_USER not in own.users(n) for n in own.nodes)
        assert files_holding(data_dir, own.admin_password) == []
    # Also once the server has stopped (SQLite checkpointed, logs closed).
    assert files_holding(data_dir, own.admin_password) == []
    assert files_holding(own_root, own.admin_password) == []


@contextlib.contextmanager
def own_lone_redis(directory: Path) -> Iterator[tuple[OwnRedis, str]]:
    """One redis-server of the test's own with an ``admin`` user; and its password."""
    if not SYSTEM_REDIS.exists():
        pytest.skip(f"no {SYSTEM_REDIS}")
    password = remember_secret("Adm!" + secrets.token_hex(14))
    lone = start_own_redis(
        directory, free_port(), hashlib.sha256(password.encode()).hexdigest(), None
    )
    try:
        wait_for("own redis serving", lambda: auth_ok(lone.port, "admin", password), 15)
        yield lone, password
    finally:
        stop_own_redis(lone)


def manage_then_forget(client: RpcClient, instance_id: str, port: int) -> None:
    """An account made through the registered instance logs in on the node; then delete it."""
    demo = new_password()
    client.call(
        "CreateAccount",
        {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": demo},
    )
    assert auth_ok(port, "demo", demo)
    client.call("DeleteInstance", {"InstanceId": instance_id})


def test_the_rolling_verify_alone_brings_a_replica_added_later_in_line(
    data_dir: Path, own_root: Path
) -> None:
    """A replica that joins a registered deployment is found by the verify (which
    asks the nodes whom they know in the round trip that reads their users), with
    no change asked for: recorded, given the management user and the accounts."""
    with (
        own_lone_redis(own_root / "lone") as (master, password),
        serving(data_dir, FAST) as server,
        api(server) as client,
    ):
        params = {"AdminUserName": "admin", "AdminPassword": password}
        iid = client.call("RegisterInstance", {"Endpoint": f"127.0.0.1:{master.port}", **params})[
            "InstanceId"
        ]
        app = new_password()
        client.call(
            "CreateAccount", {"InstanceId": iid, "AccountName": "app", "AccountPassword": app}
        )
        digest = hashlib.sha256(password.encode()).hexdigest()
        replica = start_own_redis(own_root / "replica", free_port(), digest, master.port)
        try:
            wait_for("own replica", lambda: auth_ok(replica.port, "admin", password), 15)
            with connect(replica.port, "admin", password) as conn:
                conn.config_set("masterauth", password)
            # ACL users are not replicated: only rkvstore puts the account there.
            wait_for(
                "the account on the new replica", lambda: auth_ok(replica.port, "app", app), 15
            )
            attribute = client.call("DescribeInstanceAttribute", {"InstanceId": iid})
            assert attribute["Instances"]["DBInstanceAttribute"][0]["NodeCount"] == 2
            wait_for("in line", lambda: account_status(client, iid, "app") == "Available", 15)
            client.call("DeleteInstance", {"InstanceId": iid})
            with connect(replica.port, "admin", password) as conn:
                assert MANAGEMENT_USER not in conn.acl_users()
        finally:
            stop_own_redis(replica)


def test_one_node_under_two_names_is_registered_once(data_dir: Path, own_root: Path) -> None:
    """``localhost`` and ``127.0.0.1`` are one node: two instances would fight over
    its management user. Clients keep the name they registered with."""
    with (
        own_lone_redis(own_root / "lone") as (lone, password),
        serving(data_dir, FAST) as server,
        api(server) as client,
    ):
        body = register(client, f"localhost:{lone.port}", password)
        assert (body["ConnectionDomain"], body["Port"]) == ("localhost", lone.port)
        assert body["NodeCount"] == 1
        err = api_error(
            client,
            "RegisterInstance",
            {
                "Endpoint": f"127.0.0.1:{lone.port}",
                "AdminUserName": "admin",
                "AdminPassword": password,
            },
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidEndpoint.Registered",
            "A node of the specified Redis endpoint is already managed by rkvstore: delete the "
            "instance that manages it (DeleteInstance) before registering it again.",
        )
        assert client.call("DescribeInstances", {})["TotalCount"] == 1
        manage_then_forget(client, body["InstanceId"], lone.port)
        # Forgotten: now it may be registered under its other name.
        again = register(client, f"127.0.0.1:{lone.port}", password)
        assert again["ConnectionDomain"] == "127.0.0.1"
        client.call("DeleteInstance", {"InstanceId": again["InstanceId"]})


@contextlib.contextmanager
def port_forward(listen_host: str, target_port: int) -> Iterator[int]:
    """A TCP forward ``listen_host:<port>`` -> ``127.0.0.1:target_port`` (loopback only)."""
    import selectors
    import socket
    import threading

    server = socket.create_server((listen_host, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with a, b, selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while not stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        acceptor.join(timeout=5)
        server.close()


def test_a_node_behind_a_port_forward_is_registered_where_it_is_reached(
    data_dir: Path, own_root: Path
) -> None:
    """The node sees itself at 127.0.0.1:P; rkvstore reaches it at 127.0.0.2:Q."""
    with (
        own_lone_redis(own_root / "forwarded") as (lone, password),
        port_forward("127.0.0.2", lone.port) as forwarded,
        serving(data_dir, FAST) as server,
        api(server) as client,
    ):
        body = register(client, f"127.0.0.2:{forwarded}", password)
        assert (body["ConnectionDomain"], body["Port"]) == ("127.0.0.2", forwarded)
        manage_then_forget(client, body["InstanceId"], lone.port)


def test_reconciler_repairs_a_password_set_by_hand(data_dir: Path, own_root: Path) -> None:
    with own_deployment(own_root) as own, serving(data_dir, FAST) as server, api(server) as client:
        instance_id = register(client, f"127.0.0.1:{own.master.port}", own.admin_password)[
            "InstanceId"
        ]
        kept = new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": kept},
        )
        stray = remember_secret("Stray!" + secrets.token_hex(10))
        for node in own.nodes:
            with own.admin(node) as conn:
                conn.execute_command("ACL", "SETUSER", "demo", f">{stray}")
            assert auth_ok(node.port, "demo", stray)
        started, log_mark = time.monotonic(), len(log_text(server))

        def repaired() -> bool:
            return all(
                auth_ok(n.port, "demo", kept) and not auth_ok(n.port, "demo", stray)
                for n in own.nodes
            )

        wait_for("stray password removed", repaired, 10)
        print(f"stray ACL SETUSER repaired after {time.monotonic() - started:.2f} s")
        time.sleep(2)  # and it stays so
        assert repaired()
        for node in own.nodes:
            repairs = log_text(server)[log_mark:]
            assert f"repaired drift on node 127.0.0.1:{node.port}: users demo" in repairs
        assert account_status(client, instance_id, "demo") == "Available"
        client.call("DeleteInstance", {"InstanceId": instance_id})


def test_two_registrations_at_once_leave_one_working_instance(
    data_dir: Path, own_root: Path
) -> None:
    """Of two RegisterInstance calls racing for one deployment, one wins and keeps working."""
    import threading

    with own_deployment(own_root) as own, serving(data_dir, FAST) as server:
        outcomes: list[Any] = []

        def register_once() -> None:
            with api(server) as client:
                try:
                    outcomes.append(
                        register(client, f"127.0.0.1:{own.master.port}", own.admin_password)
                    )
                except RpcError as exc:
                    outcomes.append(exc)

        threads = [threading.Thread(target=register_once) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        won = [o for o in outcomes if isinstance(o, dict)]
        lost = [o for o in outcomes if isinstance(o, RpcError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert (lost[0].status, lost[0].code) == (400, "InvalidEndpoint.Registered")
        with api(server) as client:
            instance_id = won[0]["InstanceId"]
            assert client.call("DescribeInstances", {})["TotalCount"] == 1
            password = new_password()
            client.call(
                "CreateAccount",
                {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": password},
            )
            assert all(auth_ok(node.port, "demo", password) for node in own.nodes)
            client.call("DeleteInstance", {"InstanceId": instance_id})
