"""The instance surface and settings of issue 11 on Redis 5.0 (no ACL, ``requirepass``).

A master and a replica of the test's own run Redis 5.0.6 (``tests/redis5.py``,
built as ``test_legacy.py`` builds it) and are registered: a local instance is
always the system's Redis, 6.0 or later. rkvstore reaches these nodes through
``requirepass`` alone, so the Describes' node reads (``INFO server``, ``CONFIG
GET bind``, ``CONFIG GET tls-port``, which Redis 5 does not know) go that way;
each answer is compared with what both nodes say. ``ModifyInstanceAttribute``'s
``NewPassword`` is the instance's one password there: ``requirepass`` and
``masterauth`` on both nodes, persisted, and rkvstore's own login from then on.
The parameter actions need ACLs and are refused (README, "Instance settings").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models

from rkvstore.client import RpcClient
from tests.api.sdk_clients import new_sdk_client
from tests.integration.test_legacy import (
    ENGINE,
    FAST,
    Deployment5,
    _persisted,
    login,
    register,
    reset,
    start_deployment,
)
from tests.integration.test_resilience import api, api_error, new_password, serving

NEVER_EXPIRES: Final = "2999-09-08T16:00:00Z"
PASSWORD_FORMAT: Final = (
    400,
    "InvalidAccountPassword.Format",
    "Specified AccountPassword is not valid.",
)


def whitelist_refused(current: str) -> tuple[int, str, str]:
    return (
        403,
        "OperationDenied.SecurityIps",
        "rkvstore cannot filter clients by address (Redis has no such setting): the whitelist "
        f"of the instance is {current}, as its nodes' bind address makes it, and cannot be "
        "changed.",
    )


@pytest.fixture
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment5]:
    yield from start_deployment(tmp_path_factory.mktemp("redis5-surface"))


@pytest.fixture
def open_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment5]:
    yield from start_deployment(tmp_path_factory.mktemp("redis5-open"), None)


def node_says(deployment: Deployment5, password: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for node in deployment.nodes:
        with login(node.port, password) as client:
            out[node.port] = {
                "version": client.info("server")["redis_version"],
                "bind": client.config_get("bind").get("bind"),
                "tls-port": client.config_get("tls-port"),  # unknown before 6.0: {}
                "role": client.info("replication")["role"],
            }
    return out


def attribute(client: RpcClient, instance_id: str) -> dict[str, Any]:
    body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
    (item,) = body["Instances"]["DBInstanceAttribute"]
    return dict(item)


def whitelist(client: RpcClient, instance_id: str) -> str:
    body = client.call("DescribeSecurityIps", {"InstanceId": instance_id})
    (group,) = body["SecurityIpGroups"]["SecurityIpGroup"]
    assert group["SecurityIpGroupName"] == "default"
    return str(group["SecurityIpList"])


def check_describes(client: RpcClient, instance_id: str, deployment: Deployment5, pw: str) -> None:
    """The node-read Describes against what both nodes say, logged in with ``pw``."""
    said = node_says(deployment, pw)
    assert {s["version"] for s in said.values()} == {"5.0.6"}
    assert all(s["tls-port"] == {} for s in said.values())  # no TLS before 6.0
    assert said[deployment.master.port]["role"] == "master"

    engine = client.call("DescribeEngineVersion", {"InstanceId": instance_id})
    assert (engine["MinorVersion"], engine["MajorVersion"], engine["Engine"]) == (
        "5.0.6",
        "5.0",
        "redis",
    )
    assert engine["IsSSLEnable"] == "0"
    ssl = client.call("DescribeInstanceSSL", {"InstanceId": instance_id})
    assert (ssl["InstanceId"], ssl["SSLEnabled"]) == (instance_id, "Disable")
    net = client.call("DescribeDBInstanceNetInfo", {"InstanceId": instance_id})
    (item,) = net["NetInfoItems"]["InstanceNetInfo"]
    assert (item["ConnectionString"], item["Port"]) == ("127.0.0.1", str(deployment.master.port))
    backup = client.call("DescribeBackupPolicy", {"InstanceId": instance_id})
    assert backup["BackupRetentionPeriod"] == "0"
    groups = client.call("DescribeSecurityGroupConfiguration", {"InstanceId": instance_id})
    assert groups["Items"] == {"EcsSecurityGroupRelation": []}


def test_redis5_describes_and_new_password(data_dir: Path, deployment: Deployment5) -> None:
    with serving(data_dir, FAST) as server, api(server) as client:
        instance_id = str(register(client, deployment, AdminUserName="default")["InstanceId"])

        item = attribute(client, instance_id)
        assert item["EngineVersion"] == "5.0"
        assert item["IsSupportTDE"] is False
        assert item["RealInstanceClass"] == item["InstanceClass"]
        assert item["VpcAuthMode"] == "Open"  # requirepass: a password is always needed
        assert item["Config"] == "{}"  # parameters are not managed before 6.0
        assert item["EndTime"] == NEVER_EXPIRES
        assert item["InstanceReleaseProtection"] is False
        check_describes(client, instance_id, deployment, deployment.password)
        assert whitelist(client, instance_id) == "127.0.0.1"  # both nodes bind 127.0.0.1
        # The whitelist that is true is accepted as on any engine; another is refused.
        client.call("ModifySecurityIps", {"InstanceId": instance_id, "SecurityIps": "127.0.0.1"})
        err = api_error(
            client, "ModifySecurityIps", {"InstanceId": instance_id, "SecurityIps": "10.0.0.0/8"}
        )
        assert (err.status, err.code, err.message) == whitelist_refused("127.0.0.1")

        # The parameter actions need ACLs: refused, nothing read or set.
        for action, params in [
            ("DescribeInstanceConfig", {"InstanceId": instance_id}),
            ("DescribeParameters", {"DBInstanceId": instance_id}),
            ("ModifyInstanceConfig", {"InstanceId": instance_id, "Config": '{"hz": "20"}'}),
        ]:
            err = api_error(client, action, params)
            assert (err.status, err.code, err.message) == ENGINE, action
        for node in deployment.nodes:
            with login(node.port, deployment.password) as conn:
                assert conn.config_get("hz") == {"hz": "10"}

        # A password outside the rule: refused before any node is touched.
        err = api_error(
            client, "ModifyInstanceAttribute", {"InstanceId": instance_id, "NewPassword": "short"}
        )
        assert (err.status, err.code, err.message) == PASSWORD_FORMAT
        assert deployment.only(deployment.password)

        # NewPassword, as Terraform sends it (with the name), through the official SDK.
        first = new_password()
        sdk = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
        sdk.modify_instance_attribute(
            kv_models.ModifyInstanceAttributeRequest(
                instance_id=instance_id, new_password=first, instance_name="legacy-renamed"
            )
        )
        assert deployment.only(first, deployment.password)
        for node in deployment.nodes:
            with login(node.port, first) as conn:
                assert conn.config_get("masterauth") == {"masterauth": first}
        assert all(_persisted(n) == (first, first) for n in deployment.nodes)  # CONFIG REWRITE
        assert deployment.replicates(first, "after-new-password")
        assert attribute(client, instance_id)["InstanceName"] == "legacy-renamed"

        # rkvstore still manages the instance: it logs in with the new password now.
        check_describes(client, instance_id, deployment, first)
        listed = client.call("DescribeAccounts", {"InstanceId": instance_id})["Accounts"]["Account"]
        assert [(a["AccountName"], a["AccountStatus"]) for a in listed] == [
            (instance_id, "Available")
        ]
        # The account's recorded hash is the new password's: ModifyAccountPassword, which
        # checks the old one against it, takes it.
        second = new_password()
        client.call(
            "ModifyAccountPassword",
            {
                "InstanceId": instance_id,
                "AccountName": instance_id,
                "OldAccountPassword": first,
                "NewAccountPassword": second,
            },
        )
        assert deployment.only(second, first, deployment.password)
        third = new_password()
        reset(client, instance_id, third)
        assert deployment.only(third, second, first)
        assert deployment.replicates(third, "after-reset")
        check_describes(client, instance_id, deployment, third)


def test_redis5_whitelist_follows_every_nodes_bind(
    data_dir: Path, open_replica: Deployment5
) -> None:
    """The master binds 127.0.0.1, the replica nothing (every interface): the instance
    admits any address that reaches the replica, so the whitelist is 0.0.0.0/0."""
    with serving(data_dir, FAST) as server, api(server) as client:
        instance_id = str(register(client, open_replica)["InstanceId"])
        said = node_says(open_replica, open_replica.password)
        assert said[open_replica.master.port]["bind"] == "127.0.0.1"
        assert said[open_replica.replica.port]["bind"] == ""
        assert whitelist(client, instance_id) == "0.0.0.0/0"
        client.call("ModifySecurityIps", {"InstanceId": instance_id, "SecurityIps": "0.0.0.0/0"})
        err = api_error(
            client, "ModifySecurityIps", {"InstanceId": instance_id, "SecurityIps": "127.0.0.1"}
        )
        assert (err.status, err.code, err.message) == whitelist_refused("0.0.0.0/0")
        check_describes(client, instance_id, open_replica, open_replica.password)
