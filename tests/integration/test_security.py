"""Issue 9: no tenant can trick it. Each finding reproduced against a live server.

2. A CreateAccount whose replica answered too late leaves no invisible user.
3. Only nodes that took the management user are recorded; the port allocator
   keeps off recorded ports.
5. One node, one name: ``[::ffff:127.0.0.1]:P`` is ``127.0.0.1:P``.
6. Under V1, Action and Version come from the signed parameters only.
7. A repeated parameter name is refused.
8. No value can forge a log line.
9. The principal's type is in every access-log line.
12. A per-tenant quota of local instances and nodes.
13. RegisterInstance reaches only the allowed networks.
14. A NUL in a password is the password's own error.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.addresses import normalize_host
from rkvstore.engine.local import LocalNodeError, LocalNodeManager
from tests.api.ram_helpers import create_tenant, discover_account_id, make_user, root_of
from tests.conftest import HTTP_STACKS, LiveServer, free_port, remember_secret
from tests.integration.test_resilience import (
    FAST,
    SYSTEM_REDIS,
    OwnRedis,
    api,
    api_error,
    auth_ok,
    connect,
    log_text,
    new_password,
    own_lone_redis,
    serving,
    start_own_redis,
    status_of,
    stop_own_redis,
    wait_for,
)
from tests.trickle import TrickleProxy

pytestmark = pytest.mark.skipif(not SYSTEM_REDIS.exists(), reason=f"no {SYSTEM_REDIS}")

NOT_ALLOWED = (
    400,
    "InvalidEndpoint.NotAllowed",
    "The specified Redis endpoint, or a node of its deployment, is outside the networks "
    "that may be registered.",
)
REGISTERED = (
    400,
    "InvalidEndpoint.Registered",
    "A node of the specified Redis endpoint is already managed by rkvstore: delete the "
    "instance that manages it (DeleteInstance) before registering it again.",
)
SERVICE_UNAVAILABLE = (
    503,
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["Code"], body["Message"]


# --------------------------------------------------------------------------- 2. no invisible user


@pytest.fixture
def own_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import ARTIFACT_DIRS

    path = tmp_path_factory.mktemp("own-redis")
    ARTIFACT_DIRS.append(path)
    return path


def _start_pair_behind_proxy(
    root: Path, trickle_after: bytes | None = None
) -> tuple[OwnRedis, OwnRedis, TrickleProxy, str]:
    """A master and a replica of our own; the replica announces a trickling proxy as itself."""
    password = remember_secret("Adm!" + secrets.token_hex(14))
    digest = hashlib.sha256(password.encode()).hexdigest()
    master = start_own_redis(root / "master", free_port(), digest, None)
    replica_port = free_port()
    proxy = TrickleProxy(replica_port, interval=1.5, trickle_after=trickle_after)
    replica = start_own_redis(
        root / "replica",
        replica_port,
        digest,
        master.port,
        extra=["replica-announce-ip 127.0.0.1", f"replica-announce-port {proxy.port}"],
    )
    for node in (master, replica):
        wait_for(f"own redis {node.port}", lambda n=node: auth_ok(n.port, "admin", password), 15)
    with connect(replica.port, "admin", password) as conn:
        conn.config_set("masterauth", password)

        def linked() -> bool:
            return bool(conn.info("replication").get("master_link_status") == "up")

        wait_for("replica linked", linked, 15)
    with connect(master.port, "admin", password) as conn:

        def announced() -> bool:
            info = conn.info("replication")
            return any(
                isinstance(v, dict) and int(v.get("port", 0)) == proxy.port for v in info.values()
            )

        wait_for("replica announced through the proxy", announced, 15)
    return master, replica, proxy, password


def test_a_failed_create_leaves_no_invisible_user(data_dir: Path, own_root: Path) -> None:
    # The replica answers reads in time, but the create's own batch too late.
    master, replica, proxy, password = _start_pair_behind_proxy(own_root, b"ghost")
    env = {**FAST, "RKVSTORE_NODE_TIMEOUT_SECONDS": "1"}
    try:
        with serving(data_dir, env) as server, api(server) as client:
            body = client.call(
                "RegisterInstance",
                {
                    "Endpoint": f"127.0.0.1:{master.port}",
                    "AdminUserName": "admin",
                    "AdminPassword": password,
                },
            )
            iid = body["InstanceId"]
            assert body["NodeCount"] == 2
            user_password = new_password()
            proxy.set_mode("trickle")  # the replica's replies now come too late
            err = api_error(
                client,
                "CreateAccount",
                {"InstanceId": iid, "AccountName": "ghost", "AccountPassword": user_password},
            )
            assert (err.status, err.code, err.message) == SERVICE_UNAVAILABLE
            # The replica did run the command: the user is there, until taken back.
            assert auth_ok(replica.port, "ghost", user_password)
            assert not auth_ok(master.port, "ghost", user_password)
            proxy.set_mode("pass")
            wait_for(
                "the leftover user taken off the replica",
                lambda: not auth_ok(replica.port, "ghost", user_password),
                15,
            )
            accounts = client.call("DescribeAccounts", {"InstanceId": iid})["Accounts"]["Account"]
            assert "ghost" not in {a["AccountName"] for a in accounts}
            # The name is usable again, and then deletable.
            again = new_password()
            client.call(
                "CreateAccount",
                {"InstanceId": iid, "AccountName": "ghost", "AccountPassword": again},
            )
            assert auth_ok(master.port, "ghost", again) and auth_ok(replica.port, "ghost", again)
            client.call("DeleteAccount", {"InstanceId": iid, "AccountName": "ghost"})
            client.call("DeleteInstance", {"InstanceId": iid})
    finally:
        proxy.stop()
        stop_own_redis(replica)
        stop_own_redis(master)


# --------------------------------------------------------------------------- 3. claims


def test_a_replica_that_does_not_answer_is_not_recorded(data_dir: Path, own_root: Path) -> None:
    master, replica, proxy, password = _start_pair_behind_proxy(own_root)
    try:
        env = {**FAST, "RKVSTORE_NODE_TIMEOUT_SECONDS": "1"}
        with serving(data_dir, env) as server, api(server) as client:
            proxy.set_mode("trickle")
            body = client.call(
                "RegisterInstance",
                {
                    "Endpoint": f"127.0.0.1:{master.port}",
                    "AdminUserName": "admin",
                    "AdminPassword": password,
                },
            )
            # Registered with the master alone: the replica took no management user.
            assert body["NodeCount"] == 2  # as discovered
            attribute = client.call(
                "DescribeInstanceAttribute", {"InstanceId": body["InstanceId"]}
            )["Instances"]["DBInstanceAttribute"][0]
            assert attribute["NodeCount"] == 1
            # So the replica's address is free for a registration of its own.
            proxy.set_mode("pass")
            client.call("DeleteInstance", {"InstanceId": body["InstanceId"]})
    finally:
        proxy.stop()
        stop_own_redis(replica)
        stop_own_redis(master)


def test_the_allocator_keeps_off_ports_the_database_records(tmp_path: Path) -> None:
    low = free_port()
    manager = LocalNodeManager(tmp_path / "nodes", port_range=(low, low))
    with pytest.raises(LocalNodeError):
        manager.allocate_port(avoid=frozenset({low}))
    assert manager.allocate_port() == low


# --------------------------------------------------------------------------- 5. one node, one name


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::FFFF:7F00:1]", "127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("Redis.Example.", "redis.example"),
    ],
)
def test_addresses_have_one_spelling(given: str, canonical: str) -> None:
    assert normalize_host(given) == canonical


def test_one_node_cannot_be_claimed_twice_under_two_spellings(
    data_dir: Path, tmp_path: Path
) -> None:
    with (
        own_lone_redis(tmp_path / "lone") as (node, password),
        serving(data_dir, FAST) as server,
        api(server) as client,
    ):
        params = {"AdminUserName": "admin", "AdminPassword": password}
        first = client.call("RegisterInstance", {"Endpoint": f"127.0.0.1:{node.port}", **params})
        other = create_tenant(server)
        with api(other.as_server(server)) as theirs:
            for spelling in (f"[::ffff:127.0.0.1]:{node.port}", f"LOCALHOST.:{node.port}"):
                err = api_error(theirs, "RegisterInstance", {"Endpoint": spelling, **params})
                assert (err.status, err.code, err.message) == REGISTERED, spelling
        client.call("DeleteInstance", {"InstanceId": first["InstanceId"]})


# --------------------------------------------------------------------------- 6, 7, 8, 9: requests


def _v1_query(server: LiveServer, params: dict[str, str]) -> str:
    """A V1-signed query string (HMAC-SHA1 over the sorted, percent-encoded parameters)."""
    common = {
        "Format": "JSON",
        "AccessKeyId": server.access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": secrets.token_hex(16),
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    values = {**common, **params}

    def enc(text: str) -> str:
        return quote(text, safe="-_.~")

    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(values.items()))
    to_sign = f"GET&{enc('/')}&{enc(canonical)}"
    digest = hmac.new(
        (server.access_key_secret + "&").encode(), to_sign.encode(), hashlib.sha1
    ).digest()
    return urlencode({**values, "Signature": b64encode(digest).decode()})


@pytest.mark.parametrize("stack", sorted(HTTP_STACKS))
def test_under_v1_the_action_comes_from_the_signed_parameters(data_dir: Path, stack: str) -> None:
    with serving(data_dir, {**FAST, **HTTP_STACKS[stack]}) as server:
        query = _v1_query(server, {"Action": "DescribeRegions", "Version": "2015-01-01"})
        response = httpx.get(
            f"{server.url}/?{query}",
            headers={"x-acs-action": "DeleteInstance", "x-acs-version": "2099-01-01"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert "RegionIds" in response.json()
        # Without an Action parameter, a header does not stand in for it.
        query = _v1_query(server, {"Version": "2015-01-01"})
        response = httpx.get(
            f"{server.url}/?{query}", headers={"x-acs-action": "DescribeRegions"}, timeout=30
        )
        assert error_of(response) == (
            400,
            "MissingParameter",
            'The input parameter "Action" that is mandatory for processing this request is '
            "not supplied.",
        )


@pytest.mark.parametrize("stack", sorted(HTTP_STACKS))
def test_a_repeated_parameter_name_is_refused(data_dir: Path, stack: str) -> None:
    with serving(data_dir, {**FAST, **HTTP_STACKS[stack]}) as server:
        query = _v1_query(server, {"Action": "DescribeRegions", "Version": "2015-01-01"})
        for extra in ("&Action=DeleteInstance", "&SignatureNonce=again"):
            response = httpx.get(f"{server.url}/?{query}{extra}", timeout=30)
            name = extra[1:].split("=")[0]
            assert error_of(response) == (
                400,
                "InvalidParameter.Duplicate",
                f'The parameter "{name}" is given more than once.',
            )
        # Once in the query and once in the body is twice, too.
        response = httpx.post(
            f"{server.url}/?{query}",
            content="Action=DeleteInstance",
            headers={"content-type": "application/x-www-form-urlencoded"},
            timeout=30,
        )
        assert error_of(response)[1] == "InvalidParameter.Duplicate"


def test_no_value_forges_a_log_line_and_the_principal_type_is_logged(data_dir: Path) -> None:
    with serving(data_dir, FAST) as server, api(server) as client:
        forged = "request_id=FORGED action=DeleteInstance principal=root:1/root status=200"
        err = api_error(
            client,
            "RegisterInstance",
            {"Endpoint": f"nowhere\n{forged}\r\n:6379", "AdminPassword": new_password()},
        )
        assert err.status == 400
        # A RAM user named "root" (no policy: denied) beside the tenant's root.
        root = root_of(server)
        user = make_user(root, discover_account_id(root), name="root")
        with api(user.as_server(server)) as as_user:
            api_error(as_user, "DescribeRegions", {})
        text = log_text(server)
        assert not any(
            "request_id=FORGED" in line.split(" rkvstore.")[0] for line in text.splitlines()
        )
        assert not any(line.startswith("request_id=FORGED") for line in text.splitlines())
        lines = [line for line in text.splitlines() if " rkvstore.access " in line]
        principals = {line.split(" principal=")[1].split(" ")[0] for line in lines}
        assert f"user:{user.account_id}/root" in principals
        assert any(p.startswith("root:") and p.endswith("/root") for p in principals)
        assert all(p == "-" or p.startswith(("root:", "user:")) for p in principals), principals


# --------------------------------------------------------------------------- 12. quota


def test_a_tenant_quota_of_local_instances_and_nodes(data_dir: Path) -> None:
    env = {**FAST, "RKVSTORE_TENANT_MAX_INSTANCES": "2", "RKVSTORE_TENANT_MAX_NODES": "3"}
    with serving(data_dir, env) as server, api(server) as client:
        first = client.call("CreateInstance", {"NodeType": "MASTER_SLAVE"})["InstanceId"]
        err = api_error(client, "CreateInstance", {"NodeType": "MASTER_SLAVE"})
        assert (err.status, err.code, err.message) == (
            403,
            "QuotaExceeded.Nodes",
            "The instance would take the tenant past its quota of 3 local Redis nodes.",
        )
        second = client.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"]
        err = api_error(client, "CreateInstance", {"NodeType": "STAND_ALONE"})
        assert (err.status, err.code, err.message) == (
            403,
            "QuotaExceeded.Instances",
            "The tenant has its quota of 2 local instances already.",
        )
        # Concurrent creations are counted one after the other.
        for iid in (first, second):
            wait_for("Normal", lambda i=iid: status_of(client, i) == "Normal", 60)
            client.call("DeleteInstance", {"InstanceId": iid})
        codes: list[str] = []
        lock = threading.Lock()

        def create() -> None:
            with api(server) as own:
                response = own.request("CreateInstance", {"NodeType": "STAND_ALONE"})
                with lock:
                    codes.append(response.json().get("Code", "OK"))

        threads = [threading.Thread(target=create) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(codes) == ["OK", "OK", "QuotaExceeded.Instances", "QuotaExceeded.Instances"]


# --------------------------------------------------------------------------- 13. allowed networks


def test_register_reaches_only_the_allowed_networks(data_dir: Path, tmp_path: Path) -> None:
    env = {**FAST, "RKVSTORE_REGISTER_NETWORKS": "10.0.0.0/8"}
    with (
        own_lone_redis(tmp_path / "lone") as (node, password),
        serving(data_dir, env) as server,
        api(server) as client,
    ):
        for endpoint in (f"127.0.0.1:{node.port}", f"localhost:{node.port}"):
            err = api_error(
                client,
                "RegisterInstance",
                {"Endpoint": endpoint, "AdminUserName": "admin", "AdminPassword": password},
            )
            assert (err.status, err.code, err.message) == NOT_ALLOWED, endpoint
        with connect(node.port, "admin", password) as conn:
            assert MANAGEMENT_USER not in conn.acl_users()


def test_a_closed_port_and_one_that_is_not_redis_answer_alike(
    data_dir: Path, tmp_path: Path
) -> None:
    """Issue 9 wanted every failure alike, so that RegisterInstance could not map a
    network; issue 13 wants each to say what to do. What still answers alike is
    whatever is not a Redis: a closed port, and a port where something else
    listens (here rkvstore's own HTTP port). A Redis that refuses the login says
    so: only addresses inside RKVSTORE_REGISTER_NETWORKS can be tried at all."""
    closed = free_port()
    with (
        own_lone_redis(tmp_path / "lone") as (node, _password),
        serving(data_dir, FAST) as server,
        api(server) as client,
    ):
        wrong = new_password()
        answers = {}
        for endpoint in (f"127.0.0.1:{closed}", server.endpoint, f"127.0.0.1:{node.port}"):
            err = api_error(
                client,
                "RegisterInstance",
                {"Endpoint": endpoint, "AdminUserName": "admin", "AdminPassword": wrong},
            )
            answers[endpoint] = (err.status, err.code, err.message.replace(endpoint, "{node}"))
        unreachable = (
            400,
            "InvalidEndpoint.Unreachable",
            "Redis node {node} cannot be reached, or did not answer as Redis in time: check its "
            "host and port, that it runs, and that it accepts connections from rkvstore's host.",
        )
        assert answers == {
            f"127.0.0.1:{closed}": unreachable,
            server.endpoint: unreachable,
            f"127.0.0.1:{node.port}": (
                400,
                "InvalidEndpoint.AuthenticationFailed",
                "Redis node {node} refused AdminUserName and AdminPassword: give a user of its "
                "ACL with that user's password, or AdminUserName default with its requirepass.",
            ),
        }


# --------------------------------------------------------------------------- 14. NUL in a password


def test_a_nul_in_a_password_is_the_password_s_own_error(data_dir: Path) -> None:
    with serving(data_dir, FAST) as server, api(server) as client:
        err = api_error(
            client, "CreateInstance", {"NodeType": "STAND_ALONE", "Password": "Abc\x00defg12"}
        )
        assert (err.status, err.code, err.message) == (
            400,
            "InvalidAccountPassword.Format",
            "Specified AccountPassword is not valid.",
        )
        err = api_error(
            client, "CreateInstance", {"NodeType": "STAND_ALONE", "InstanceName": "a\x00b"}
        )
        assert (err.status, err.code) == (400, "InvalidParameter.Encoding")


def test_a_node_announced_later_outside_the_allowed_networks_is_left_alone(
    data_dir: Path, own_root: Path
) -> None:
    """Review of issue 9: a replica that joins after registration and announces an address
    outside RKVSTORE_REGISTER_NETWORKS never gets the admin login, nor is recorded."""
    password = remember_secret("Adm!" + secrets.token_hex(14))
    digest = hashlib.sha256(password.encode()).hexdigest()
    master = start_own_redis(own_root / "master", free_port(), digest, None)
    replica: OwnRedis | None = None
    env = {**FAST, "RKVSTORE_REGISTER_NETWORKS": "127.0.0.1/32"}
    try:
        wait_for("own master", lambda: auth_ok(master.port, "admin", password), 15)
        with serving(data_dir, env) as server, api(server) as client:
            params = {"AdminUserName": "admin", "AdminPassword": password}
            iid = client.call(
                "RegisterInstance", {"Endpoint": f"127.0.0.1:{master.port}", **params}
            )["InstanceId"]
            # A replica joins, announcing itself at 127.0.0.2: loopback, yet outside.
            replica = start_own_redis(
                own_root / "replica",
                free_port(),
                digest,
                master.port,
                extra=["replica-announce-ip 127.0.0.2"],
            )
            wait_for("own replica", lambda: auth_ok(replica.port, "admin", password), 15)
            with connect(replica.port, "admin", password) as conn:
                conn.config_set("masterauth", password)
            with connect(master.port, "admin", password) as conn:

                def announced() -> bool:
                    info = conn.info("replication")
                    return any(
                        isinstance(v, dict) and v.get("ip") == "127.0.0.2" for v in info.values()
                    )

                wait_for("the replica announced at 127.0.0.2", announced, 15)
            # A change looks at the deployment again, and passes run meanwhile.
            client.call(
                "CreateAccount",
                {"InstanceId": iid, "AccountName": "app", "AccountPassword": new_password()},
            )
            time.sleep(2.5)  # a few reconciler passes (interval 1 s): none may reach it
            attribute = client.call("DescribeInstanceAttribute", {"InstanceId": iid})
            assert attribute["Instances"]["DBInstanceAttribute"][0]["NodeCount"] == 1
            with connect(replica.port, "admin", password) as conn:
                assert MANAGEMENT_USER not in conn.acl_users()
            assert "outside RKVSTORE_REGISTER_NETWORKS left alone" in log_text(server)
            client.call("DeleteInstance", {"InstanceId": iid})
    finally:
        if replica is not None:
            stop_own_redis(replica)
        stop_own_redis(master)
