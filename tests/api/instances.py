"""Instances for the API tests: create one and wait until it is Normal, find and talk to its nodes.

Not a test module. An instance takes a second or two to create (real
redis-server processes), so a test module makes few and shares them:

    @pytest.fixture(scope="module")
    def instances(live_server):
        with provision(live_server, STAND_ALONE, MASTER_SLAVE) as made:
            yield made          # [Instance(STAND_ALONE), Instance(MASTER_SLAVE)]

``provision`` creates every instance first and only then waits for them, so
their nodes start in parallel; on exit it deletes them (DeleteInstance), and the
server fixture stops the server. ``create_instance`` is the single step, for a
client of either kind: rkvstore's own ``RpcClient`` or the new official SDK's.

Nodes: the master is the instance's ``Port``; a MASTER_SLAVE instance's replica
is found through ``INFO replication`` on the master, asked as the ``default``
account with the password given at creation (DescribeInstanceAttribute does not
list nodes). Every password used here goes through ``remember_secret``.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from alibabacloud_tea_openapi.exceptions import ClientException as NewClientException
from redis.backoff import NoBackoff
from redis.retry import Retry

from rkvstore.client import RpcClient, RpcError
from rkvstore.secret import Secret
from tests.conftest import LiveServer, remember_secret

STAND_ALONE: Final = "STAND_ALONE"
MASTER_SLAVE: Final = "MASTER_SLAVE"
HOST: Final = "127.0.0.1"
CREATE_TIMEOUT: Final = 60.0  # seconds until Normal
REPLICA_TIMEOUT: Final = 15.0  # seconds until the master lists its replica
POLL: Final = 0.05
REDIS_TIMEOUT: Final = 5.0  # per socket operation against a node

AnyClient = RpcClient | NewClient
# DeleteInstance answers these while the instance is being created or another task runs.
_BUSY: Final = frozenset({"IncorrectDBInstanceState", "TaskExists"})


# --------------------------------------------------------------------------- passwords


def new_password(prefix: str = "Pw1_") -> str:
    """A fresh valid password (upper, lower, digit, special), remembered for the secret scan."""
    body = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))
    return remember_secret(prefix + body)


# --------------------------------------------------------------------------- clients


def rpc_client(server: LiveServer) -> RpcClient:
    """rkvstore's own V3-signing client for ``server`` (close it, or use it as a context)."""
    return RpcClient(server.endpoint, server.access_key_id, Secret(server.access_key_secret))


# --------------------------------------------------------------------------- one instance


def _describe_attribute(client: AnyClient, instance_id: str) -> dict[str, Any]:
    if isinstance(client, NewClient):
        request = kv_models.DescribeInstanceAttributeRequest(instance_id=instance_id)
        body: dict[str, Any] = client.describe_instance_attribute(request).body.to_map()
    else:
        body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
    items: list[dict[str, Any]] = body["Instances"]["DBInstanceAttribute"]
    assert len(items) == 1, body
    return items[0]


def start_creating(
    client: AnyClient,
    node_type: str,
    *,
    password: str | None = None,
    engine_version: str | None = None,
    instance_name: str | None = None,
) -> tuple[str, int]:
    """CreateInstance (answers at once, status Creating): ``(instance_id, port)``."""
    if isinstance(client, NewClient):
        request = kv_models.CreateInstanceRequest(
            node_type=node_type,
            password=password,
            engine_version=engine_version,
            instance_name=instance_name,
        )
        body = client.create_instance(request).body
        instance_id, port = body.instance_id, body.port
    else:
        params = {
            "NodeType": node_type,
            "Password": None if password is None else Secret(password),
            "EngineVersion": engine_version,
            "InstanceName": instance_name,
        }
        answer = client.call("CreateInstance", params)
        instance_id, port = answer["InstanceId"], answer["Port"]
    assert isinstance(instance_id, str) and instance_id.startswith("r-"), instance_id
    assert isinstance(port, int), port
    return instance_id, port


def wait_normal(
    client: AnyClient, instance_id: str, timeout: float = CREATE_TIMEOUT
) -> dict[str, Any]:
    """Poll DescribeInstanceAttribute until ``Normal``; its attribute (as a dict)."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        attribute = _describe_attribute(client, instance_id)
        status = attribute["InstanceStatus"]
        if status == "Normal":
            return attribute
        assert status == "Creating", f"{instance_id} went {status}, not Normal"
        time.sleep(POLL)
    raise AssertionError(f"{instance_id} not Normal within {timeout} s (last: {status})")


def create_instance(
    client: AnyClient,
    node_type: str,
    *,
    password: str | None = None,
    engine_version: str | None = None,
    instance_name: str | None = None,
    timeout: float = CREATE_TIMEOUT,
) -> tuple[str, int]:
    """CreateInstance, then wait (bounded) until it is Normal: ``(instance_id, port)``."""
    instance_id, port = start_creating(
        client,
        node_type,
        password=password,
        engine_version=engine_version,
        instance_name=instance_name,
    )
    wait_normal(client, instance_id, timeout)
    return instance_id, port


def delete_instance(client: AnyClient, instance_id: str, timeout: float = CREATE_TIMEOUT) -> None:
    """DeleteInstance; waits (bounded) while it is still being created or busy. Gone is fine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if isinstance(client, NewClient):
                request = kv_models.DeleteInstanceRequest(instance_id=instance_id)
                client.delete_instance(request)
            else:
                client.call("DeleteInstance", {"InstanceId": instance_id})
            return
        except (RpcError, NewClientException) as exc:
            code = str(exc.code)
            if code == "InvalidInstanceId.NotFound":
                return
            if code not in _BUSY or time.monotonic() > deadline:
                raise
        time.sleep(POLL)


# --------------------------------------------------------------------------- nodes


@contextmanager
def connect(port: int, username: str, password: str) -> Iterator[redis.Redis]:
    """A redis-py client logged in as ``username`` on one node; closed afterwards.

    The connection (and so AUTH) happens on the first command.
    """
    client = redis.Redis(
        host=HOST,
        port=port,
        username=username,
        password=password,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        decode_responses=True,
        # redis-py retries a ConnectionError (AuthenticationError is one) with backoff by
        # default; a refused login must fail at once.
        retry=Retry(NoBackoff(), 0),
    )
    try:
        yield client
    finally:
        client.close()


def can_login(port: int, username: str, password: str) -> bool:
    """True if AUTH succeeds on that node, False on WRONGPASS; anything else raises."""
    with connect(port, username, password) as client:
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return False


def assert_wrongpass(port: int, username: str, password: str) -> None:
    """Logging in as ``username`` with ``password`` is refused (WRONGPASS) on that node."""
    with connect(port, username, password) as client:
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            assert "invalid username-password pair" in str(exc), exc
            return
    raise AssertionError(f"{username} logged in on port {port} with a password it should not have")


def replica_ports(master_port: int, default_password: str, expected: int) -> list[int]:
    """The replicas the master reports in ``INFO replication`` (waits until ``expected``)."""
    deadline = time.monotonic() + REPLICA_TIMEOUT
    found: list[int] = []
    with connect(master_port, "default", default_password) as client:
        while time.monotonic() < deadline:
            info = client.info("replication")
            found = sorted(
                int(value["port"])
                for key, value in info.items()
                if key.startswith("slave") and isinstance(value, dict)
            )
            if len(found) >= expected:
                return found
            time.sleep(POLL)
    raise AssertionError(f"master {master_port} lists replicas {found}, expected {expected}")


def acl_snapshot(ports: list[int], default_password: str) -> dict[int, list[str]]:
    """``ACL LIST`` of every node, read as the (Super) ``default`` account."""
    out: dict[int, list[str]] = {}
    for port in ports:
        with connect(port, "default", default_password) as client:
            out[port] = sorted(client.execute_command("ACL", "LIST"))
    return out


# --------------------------------------------------------------------------- shared instances


@dataclass
class Instance:
    """A Normal instance a test module shares: where it is and its ``default`` password."""

    instance_id: str
    node_type: str
    port: int  # the master's, as CreateInstance reported it
    password: str  # the default accounts' password
    node_ports: list[int] = field(default_factory=list)  # master first, then replicas

    @property
    def replica_ports(self) -> list[int]:
        return self.node_ports[1:]


@contextmanager
def provision(
    server: LiveServer,
    *node_types: str,
    engine_version: str | None = None,
) -> Iterator[list[Instance]]:
    """Create one instance per node type (in parallel), wait until Normal, delete on exit."""
    made: list[Instance] = []
    with rpc_client(server) as client:
        try:
            for node_type in node_types:
                password = new_password("Def_1")
                instance_id, port = start_creating(
                    client, node_type, password=password, engine_version=engine_version
                )
                made.append(Instance(instance_id, node_type, port, password))
            for instance in made:
                wait_normal(client, instance.instance_id)
                replicas = 1 if instance.node_type == MASTER_SLAVE else 0
                others = replica_ports(instance.port, instance.password, replicas)
                instance.node_ports = [instance.port, *others]
            yield made
        finally:
            for instance in made:
                delete_instance(client, instance.instance_id)
