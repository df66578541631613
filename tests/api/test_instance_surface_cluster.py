"""The instance surface (issue 11) on a CLUSTER instance: every node is asked.

One server serves the module, with a two-shard cluster (two masters, a replica
each: four redis-server processes). The six Describes and DescribeInstanceAttribute's
added fields go through the new SDK (V3) and the legacy SDK, and are compared with
what each of the four nodes says of itself (``CONFIG GET bind`` / ``tls-port``,
``INFO server``, ``CLUSTER INFO``), read here with redis-py as the management
user. A replica that stops answering makes the node-read Describes
``ServiceUnavailable`` within the node timeout: they ask every node, not the
master alone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.products.kvstore import parameter_rules as allowed
from rkvstore.secret import Secret
from tests.api.instances import (
    MASTER_SLAVE,
    connect,
    delete_instance,
    new_password,
    rpc_client,
    wait_normal,
)
from tests.api.sdk_clients import LEGACY, NEW_V3, new_sdk_client
from tests.api.test_instance_config import expect_new
from tests.api.test_instance_surface import NEVER_EXPIRES, call
from tests.conftest import ARTIFACT_DIRS, LiveServer, start_server
from tests.integration.test_cluster import management_password, node_files

UNAVAILABLE: Final = (
    "ServiceUnavailable",
    503,
    "The request has failed due to a temporary failure of the server.",
)
NODE_READS: Final = ("DescribeInstanceSSL", "DescribeSecurityIps", "DescribeEngineVersion")


class Cluster:
    def __init__(self, instance_id: str, port: int, password: str) -> None:
        self.instance_id = instance_id
        self.port = port  # CreateInstance's: the connection address
        self.password = password


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("surface-cluster")
    ARTIFACT_DIRS.append(path)
    env = {
        # No repair pass while a node is stopped on purpose; a short node deadline.
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "60",
        "RKVSTORE_NODE_TIMEOUT_SECONDS": "1",
    }
    live = start_server(path, extra_env=env)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def cluster(server: LiveServer) -> Iterator[Cluster]:
    password = new_password("Def_1")
    with rpc_client(server) as client:
        body = client.call(
            "CreateInstance",
            {"NodeType": MASTER_SLAVE, "ShardCount": 2, "Password": Secret(password)},
        )
        made = Cluster(str(body["InstanceId"]), int(body["Port"]), password)
        try:
            wait_normal(client, made.instance_id, 90)
            yield made
        finally:
            delete_instance(client, made.instance_id)


def ask_every_node(server: LiveServer, instance_id: str) -> dict[int, dict[str, Any]]:
    """What each node says of itself, by port, as the management user."""
    mgmt = management_password(server, instance_id)
    out: dict[int, dict[str, Any]] = {}
    for node in node_files(server, instance_id):
        with connect(node.port, MANAGEMENT_USER, mgmt) as client:
            out[node.port] = {
                "bind": client.config_get("bind")["bind"],
                "tls-port": client.config_get("tls-port")["tls-port"],
                "version": client.info("server")["redis_version"],
                "role": client.info("replication")["role"],
                "cluster_state": client.cluster("INFO")["cluster_state"],
                "parameters": {n: client.config_get(n)[n] for n in allowed.NAMES},
            }
    return out


def loopback_only(bind: str) -> bool:
    addresses = [a.lstrip("-") for a in bind.split()]
    return bool(addresses) and all(a in ("127.0.0.1", "::1") for a in addresses)


@pytest.mark.parametrize("kind", [NEW_V3, LEGACY])
def test_the_six_describes_on_a_cluster_answer_what_every_node_says(
    server: LiveServer, cluster: Cluster, kind: str
) -> None:
    iid = cluster.instance_id
    nodes = ask_every_node(server, iid)
    assert len(nodes) == 4
    assert sorted(n["role"] for n in nodes.values()) == ["master", "master", "slave", "slave"]
    assert {n["cluster_state"] for n in nodes.values()} == {"ok"}

    net = call(server, kind, "DescribeDBInstanceNetInfo", InstanceId=iid)
    (item,) = net["NetInfoItems"]["InstanceNetInfo"]
    assert (item["ConnectionString"], item["IPAddress"]) == ("127.0.0.1", "127.0.0.1")
    # The connection address is a master of the cluster, as CreateInstance said.
    assert item["Port"] == str(cluster.port)
    assert nodes[cluster.port]["role"] == "master"
    assert (net["InstanceNetworkType"], item["DBInstanceNetType"]) == ("CLASSIC", "1")

    backup = call(server, kind, "DescribeBackupPolicy", InstanceId=iid)
    assert (backup["PreferredBackupPeriod"], backup["BackupRetentionPeriod"]) == ("", "0")
    groups = call(server, kind, "DescribeSecurityGroupConfiguration", InstanceId=iid)
    assert groups["Items"] == {"EcsSecurityGroupRelation": []}

    # No node has a TLS listener, so SSL is off.
    assert {n["tls-port"] for n in nodes.values()} == {"0"}
    ssl = call(server, kind, "DescribeInstanceSSL", InstanceId=iid)
    assert (ssl["InstanceId"], ssl["SSLEnabled"]) == (iid, "Disable")

    # Every one of the four nodes binds loopback only: the whitelist is 127.0.0.1.
    assert all(loopback_only(n["bind"]) for n in nodes.values()), nodes
    ips = call(server, kind, "DescribeSecurityIps", InstanceId=iid)
    (group,) = ips["SecurityIpGroups"]["SecurityIpGroup"]
    assert (group["SecurityIpGroupName"], group["SecurityIpList"]) == ("default", "127.0.0.1")

    versions = {n["version"] for n in nodes.values()}
    assert len(versions) == 1  # one binary for every node
    (version,) = versions
    engine = call(server, kind, "DescribeEngineVersion", InstanceId=iid)
    assert (engine["MinorVersion"], engine["MajorVersion"]) == (version, f"{version[0]}.0")
    assert (engine["IsSSLEnable"], engine["IsAutoUpgradeOpen"]) == ("0", "0")


def test_instance_attribute_of_a_cluster_carries_the_added_fields(
    server: LiveServer, cluster: Cluster
) -> None:
    client = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
    request = kv_models.DescribeInstanceAttributeRequest(instance_id=cluster.instance_id)
    body = client.describe_instance_attribute(request).body
    (attribute,) = body.instances.dbinstance_attribute
    assert attribute.architecture_type == "cluster"
    assert attribute.replication_mode == "cluster"
    assert attribute.shard_count == 2
    assert attribute.real_instance_class == attribute.instance_class
    assert attribute.is_support_tde is False
    assert attribute.is_order_completed is True
    assert attribute.instance_release_protection is False
    assert attribute.charge_type == "PostPaid"
    assert attribute.end_time == NEVER_EXPIRES
    assert attribute.vpc_auth_mode == "Open"
    assert attribute.tags.tag == []
    assert (attribute.connection_domain, attribute.port) == ("127.0.0.1", cluster.port)
    # Config: the allow-listed parameters as the master at the connection address holds them.
    nodes = ask_every_node(server, cluster.instance_id)
    assert json.loads(attribute.config) == nodes[cluster.port]["parameters"]
    raw = body.to_map()["Instances"]["DBInstanceAttribute"][0]
    assert isinstance(raw["IsSupportTDE"], bool) and isinstance(raw["Config"], str)


def test_a_silent_replica_makes_the_node_reads_unavailable(
    server: LiveServer, cluster: Cluster
) -> None:
    """A replica of the second shard stopped: the Describes that read the nodes answer
    ServiceUnavailable within the node timeout (they ask all four); those that read
    the database, and DescribeInstanceAttribute (its Config comes from the master),
    still answer."""
    nodes = ask_every_node(server, cluster.instance_id)
    files = node_files(server, cluster.instance_id)
    replicas = [f for f in files if nodes[f.port]["role"] == "slave"]
    silent = replicas[-1]
    pid = silent.running_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        for action in NODE_READS:
            started = time.monotonic()
            expect_new(
                lambda a=action: call(server, NEW_V3, a, InstanceId=cluster.instance_id),  # type: ignore[misc]
                UNAVAILABLE,
            )
            assert time.monotonic() - started < 10, action
        net = call(server, NEW_V3, "DescribeDBInstanceNetInfo", InstanceId=cluster.instance_id)
        assert net["NetInfoItems"]["InstanceNetInfo"][0]["Port"] == str(cluster.port)
        answer = call(server, NEW_V3, "DescribeInstanceAttribute", InstanceId=cluster.instance_id)
        (attribute,) = answer["Instances"]["DBInstanceAttribute"]
        assert attribute["InstanceStatus"] == "Normal"
    finally:
        os.kill(pid, signal.SIGCONT)
    ips = call(server, NEW_V3, "DescribeSecurityIps", InstanceId=cluster.instance_id)
    assert ips["SecurityIpGroups"]["SecurityIpGroup"][0]["SecurityIpList"] == "127.0.0.1"
