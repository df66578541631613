"""The instance surface Terraform and the MCP servers read (issue 11), through the SDKs.

One server serves the module, with a STAND_ALONE and a MASTER_SLAVE instance of
its first tenant, and a second tenant made with ``rkvstore tenants create``.
Every action goes through the new SDK's typed methods, signed V3 and V1
(``signature_algorithm="v2"``), and through the legacy SDK's request classes.
What the nodes say (``CONFIG GET bind``, ``INFO server``, ``CONFIG GET
tls-port``) is read here with redis-py, as the ``default`` account, and compared.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient

from rkvstore.domain.accounts import MANAGEMENT_USER
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    Instance,
    connect,
    new_password,
    provision,
)
from tests.api.ram_helpers import (
    FORBIDDEN_RAM,
    INSTANCE_NOT_FOUND,
    Principal,
    create_tenant,
    discover_account_id,
    expect_denied,
    expect_error,
    make_user,
    ram_server,
    root_of,
)
from tests.api.sdk_clients import (
    LEGACY,
    NEW_V1,
    NEW_V3,
    SDK_KINDS,
    error_type,
    legacy_client,
    legacy_request,
    new_sdk_client,
    read_error,
)
from tests.api.test_terraform_replay import INSTANCE_READ
from tests.conftest import LiveServer
from tests.integration.test_cluster import management_password

MADE_UP: Final = "r-" + "k3" * 9  # shaped like an instance ID; no tenant has it
NEVER_EXPIRES: Final = "2999-09-08T16:00:00Z"
# The six actions of the provider's read after DescribeInstanceAttribute, in its order.
DESCRIBES: Final = tuple(INSTANCE_READ[1:])
SSL_REFUSED: Final = (
    "OperationDenied.SSLNotSupported",
    403,
    "rkvstore does not set up TLS on an instance's nodes: SSL cannot be enabled or updated.",
)
TDE_REFUSED: Final = (
    "OperationDenied.TDENotSupported",
    403,
    "rkvstore does not encrypt data at rest: TDE cannot be enabled.",
)
BACKUP_REFUSED: Final = (
    "OperationDenied.BackupNotSupported",
    403,
    "rkvstore runs no backups: a backup policy cannot be set.",
)
SECURITY_GROUP_REFUSED: Final = (
    "OperationDenied.SecurityGroupNotSupported",
    403,
    "rkvstore has no ECS security groups: none can be bound to an instance.",
)
VPC_REFUSED: Final = (
    "OperationDenied.VpcNotSupported",
    403,
    "rkvstore instances are on the classic network only: NetworkType VPC, VpcId and "
    "VSwitchId are not supported.",
)
PREPAID_REFUSED: Final = (
    "OperationDenied.PrePaidNotSupported",
    403,
    "rkvstore instances are pay-as-you-go only: ChargeType PrePaid is not supported.",
)


def invalid(name: str) -> tuple[str, int, str]:
    return ("InvalidParameter", 400, f'The specified parameter "{name}" is not valid.')


def missing(name: str) -> tuple[str, int, str]:
    return (
        "MissingParameter",
        400,
        f'The input parameter "{name}" that is mandatory for processing this request is '
        "not supplied.",
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with ram_server(tmp_path_factory.mktemp("surface")) as server:
        yield server


@pytest.fixture(scope="module")
def instances(live_server: LiveServer) -> Iterator[list[Instance]]:
    with provision(live_server, STAND_ALONE, MASTER_SLAVE) as made:
        yield made


@pytest.fixture(scope="module")
def alone(instances: list[Instance]) -> Instance:
    return instances[0]


@pytest.fixture(scope="module")
def other_tenant(live_server: LiveServer) -> Principal:
    return create_tenant(live_server)


# --------------------------------------------------------------------------- one call, three SDKs

# The new SDK's request field for a parameter, where it is not the snake case of its name.
_FIELDS: Final = {
    "SSLEnabled": "sslenabled",
    "TDEStatus": "tdestatus",
    "DBInstanceId": "dbinstance_id",
    "InstanceId": "instance_id",
    "SecurityGroupId": "security_group_id",
    "PreferredBackupPeriod": "preferred_backup_period",
    "PreferredBackupTime": "preferred_backup_time",
    "NetworkType": "network_type",
    "VpcId": "vpc_id",
    "VSwitchId": "v_switch_id",
    "ChargeType": "charge_type",
    "NodeType": "node_type",
    "Password": "password",
}
# The new SDK's method and model names where they are not the obvious ones.
_METHODS: Final = {
    "DescribeDBInstanceNetInfo": ("describe_dbinstance_net_info", "DescribeDBInstanceNetInfo"),
    "DescribeInstanceSSL": ("describe_instance_ssl", "DescribeInstanceSSL"),
    "ModifyInstanceSSL": ("modify_instance_ssl", "ModifyInstanceSSL"),
    "ModifyInstanceTDE": ("modify_instance_tde", "ModifyInstanceTDE"),
}


def _snake(action: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in action).lstrip("_")


def new_call(server: LiveServer | Principal, kind: str, action: str, params: dict[str, str]) -> Any:
    """The new SDK's typed method for ``action``: its typed response body."""
    algorithm = "v2" if kind == NEW_V1 else None
    client = new_sdk_client(
        server.endpoint,
        server.access_key_id,
        server.access_key_secret,
        signature_algorithm=algorithm,
    )
    method, model = _METHODS.get(action, (_snake(action), action))
    request = getattr(kv_models, f"{model}Request")(**{_FIELDS[k]: v for k, v in params.items()})
    return getattr(client, method)(request).body


def legacy_call(server: LiveServer | Principal, action: str, params: dict[str, str]) -> Any:
    """The legacy SDK's request class for ``action``: the JSON answer."""
    module = importlib.import_module(f"aliyunsdkr_kvstore.request.v20150101.{action}Request")
    request = legacy_request(getattr(module, f"{action}Request")(), server.endpoint)
    for key, value in params.items():
        getattr(request, f"set_{key}")(value)
    client = legacy_client(server.access_key_id, server.access_key_secret)
    try:
        return json.loads(client.do_action_with_exception(request))
    finally:
        client.session.close()


def call(server: LiveServer | Principal, kind: str, action: str, **params: str) -> dict[str, Any]:
    """``action`` through one SDK; the answer as a JSON-shaped dict."""
    if kind == LEGACY:
        body: dict[str, Any] = legacy_call(server, action, params)
        return body
    answer: dict[str, Any] = new_call(server, kind, action, params).to_map()
    return answer


def expect(kind: str, invoke: Callable[[], Any], error: tuple[str, int, str]) -> None:
    """``invoke`` fails, through SDK ``kind``, with exactly ``error`` (code, status, message)."""
    with pytest.raises(error_type(kind)) as info:
        invoke()
    got = read_error(kind, info.value)
    # The new SDK wraps the Message in its own text; the body holds it as sent.
    message = got.message if got.body is None else got.body["Message"]
    assert (got.code, got.http_status, message) == error


# --------------------------------------------------------------------------- what the nodes say


def node_ports(instance: Instance) -> list[int]:
    return instance.node_ports


def config_get(server: LiveServer, instance: Instance, port: int, name: str) -> str:
    """``CONFIG GET name`` on one node, as the management user (the default accounts may
    not run CONFIG)."""
    password = management_password(server, instance.instance_id)
    with connect(port, MANAGEMENT_USER, password) as client:
        return str(client.config_get(name).get(name, ""))


def redis_version(instance: Instance, port: int) -> str:
    with connect(port, "default", instance.password) as client:
        return str(client.info("server")["redis_version"])


def expected_security_ips(server: LiveServer, instance: Instance) -> str:
    """The documented rule, applied to what every node itself says it listens on."""
    loopback_only = True
    for port in node_ports(instance):
        addresses = [a.lstrip("-") for a in config_get(server, instance, port, "bind").split()]
        for address in addresses or ["*"]:
            try:
                loopback_only = loopback_only and ipaddress.ip_address(address).is_loopback
            except ValueError:
                loopback_only = False
    return "127.0.0.1" if loopback_only else "0.0.0.0/0"


# --------------------------------------------------------------------------- the Describes


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_the_six_describes_answer_the_truth(
    live_server: LiveServer, instances: list[Instance], kind: str
) -> None:
    for instance in instances:
        iid = instance.instance_id
        net = call(live_server, kind, "DescribeDBInstanceNetInfo", InstanceId=iid)
        assert net["InstanceNetworkType"] == "CLASSIC"
        items = net["NetInfoItems"]["InstanceNetInfo"]
        assert len(items) == 1, net
        assert items[0]["ConnectionString"] == "127.0.0.1"
        assert items[0]["IPAddress"] == "127.0.0.1"
        assert items[0]["Port"] == str(instance.port)
        assert items[0]["DBInstanceNetType"] == "1"
        assert items[0]["IPType"] == "Inner"

        backup = call(live_server, kind, "DescribeBackupPolicy", InstanceId=iid)
        assert backup["PreferredBackupPeriod"] == ""
        assert backup["PreferredBackupTime"] == ""
        assert backup["EnableBackupLog"] == 0

        groups = call(live_server, kind, "DescribeSecurityGroupConfiguration", InstanceId=iid)
        assert groups["Items"] == {"EcsSecurityGroupRelation": []}

        ssl = call(live_server, kind, "DescribeInstanceSSL", InstanceId=iid)
        tls = [config_get(live_server, instance, p, "tls-port") for p in node_ports(instance)]
        assert tls == ["0"] * len(tls)  # no node has a TLS listener
        assert ssl["SSLEnabled"] == "Disable"
        assert ssl["InstanceId"] == iid

        ips = call(live_server, kind, "DescribeSecurityIps", InstanceId=iid)
        group = ips["SecurityIpGroups"]["SecurityIpGroup"]
        assert [g["SecurityIpGroupName"] for g in group] == ["default"]
        assert group[0]["SecurityIpList"] == expected_security_ips(live_server, instance)
        # The local provider's nodes listen on loopback only.
        assert group[0]["SecurityIpList"] == "127.0.0.1"

        engine = call(live_server, kind, "DescribeEngineVersion", InstanceId=iid)
        version = redis_version(instance, instance.port)
        assert engine["MinorVersion"] == version
        assert engine["MajorVersion"] == f"{version.split('.')[0]}.0"
        assert engine["Engine"] == "redis"
        assert engine["IsSSLEnable"] == "0"
        assert engine["IsAutoUpgradeOpen"] == "0"
        assert engine["EnableUpgradeMajorVersion"] is False


def test_the_describes_parse_into_the_sdk_models_with_their_types(
    live_server: LiveServer, alone: Instance
) -> None:
    iid = alone.instance_id
    net = new_call(live_server, NEW_V3, "DescribeDBInstanceNetInfo", {"InstanceId": iid})
    assert isinstance(net, kv_models.DescribeDBInstanceNetInfoResponseBody)
    item = net.net_info_items.instance_net_info[0]
    assert item.port == str(alone.port) and item.direct_connection == 0
    ssl = new_call(live_server, NEW_V3, "DescribeInstanceSSL", {"InstanceId": iid})
    assert ssl.sslenabled == "Disable"
    ips = new_call(live_server, NEW_V3, "DescribeSecurityIps", {"InstanceId": iid})
    assert ips.security_ip_groups.security_ip_group[0].security_ip_list == "127.0.0.1"
    groups = new_call(
        live_server, NEW_V3, "DescribeSecurityGroupConfiguration", {"InstanceId": iid}
    )
    assert groups.items.ecs_security_group_relation == []
    backup = new_call(live_server, NEW_V3, "DescribeBackupPolicy", {"InstanceId": iid})
    assert backup.preferred_backup_period == "" and backup.backup_retention_period == "0"
    engine = new_call(live_server, NEW_V3, "DescribeEngineVersion", {"InstanceId": iid})
    assert engine.minor_version == redis_version(alone, alone.port)
    assert engine.enable_upgrade_minor_version is False


def test_instance_attribute_carries_the_fields_terraform_reads(
    live_server: LiveServer, instances: list[Instance]
) -> None:
    client: NewClient = new_sdk_client(
        live_server.endpoint, live_server.access_key_id, live_server.access_key_secret
    )
    for instance in instances:
        request = kv_models.DescribeInstanceAttributeRequest(instance_id=instance.instance_id)
        body = client.describe_instance_attribute(request).body
        attribute = body.instances.dbinstance_attribute[0]
        assert attribute.is_support_tde is False
        assert attribute.is_order_completed is True
        assert attribute.instance_release_protection is False
        assert attribute.real_instance_class == attribute.instance_class
        assert attribute.charge_type == "PostPaid"
        assert attribute.end_time == NEVER_EXPIRES
        assert attribute.tags.tag == []
        assert attribute.vpc_auth_mode == "Open"
        assert attribute.read_only_count == 0
        assert attribute.slave_read_only_count == 0
        assert attribute.slave_replica_count == 0
        assert attribute.has_renew_change_order == "false"
        replicas = 1 if instance.node_type == MASTER_SLAVE else 0
        assert attribute.replica_count == replicas
        mode = "master-slave" if instance.node_type == MASTER_SLAVE else None
        assert attribute.replication_mode == mode
        raw = body.to_map()["Instances"]["DBInstanceAttribute"][0]
        assert isinstance(raw["IsSupportTDE"], bool)
        assert isinstance(raw["IsOrderCompleted"], bool)


def test_instances_listing_carries_its_model_fields(
    live_server: LiveServer, instances: list[Instance]
) -> None:
    client: NewClient = new_sdk_client(
        live_server.endpoint, live_server.access_key_id, live_server.access_key_secret
    )
    ids = ",".join(i.instance_id for i in instances)
    body = client.describe_instances(kv_models.DescribeInstancesRequest(instance_ids=ids)).body
    listed = body.instances.kvstore_instance
    assert len(listed) == len(instances)
    for item in listed:
        assert item.end_time == NEVER_EXPIRES
        assert item.read_only_count == "0"  # a string in this model
        assert item.has_renew_change_order is False
        assert item.tags.tag == []
        assert item.edition_type == "Community"
        assert item.charge_type == "PostPaid"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_unknown_and_other_tenants_instances_are_not_found(
    live_server: LiveServer, alone: Instance, other_tenant: Principal, kind: str
) -> None:
    for action in DESCRIBES:
        expect(
            kind,
            lambda action=action: call(live_server, kind, action, InstanceId=MADE_UP),
            INSTANCE_NOT_FOUND,
        )
        expect(
            kind,
            lambda action=action: call(other_tenant, kind, action, InstanceId=alone.instance_id),
            INSTANCE_NOT_FOUND,
        )
    # The refusals look the instance up first: not found beats "not supported".
    refusals: list[tuple[str, dict[str, str]]] = [
        ("ModifyInstanceSSL", {"SSLEnabled": "Enable"}),
        ("ModifyInstanceTDE", {"TDEStatus": "Enabled"}),
        (
            "ModifyBackupPolicy",
            {"PreferredBackupPeriod": "Monday", "PreferredBackupTime": "01:00Z-02:00Z"},
        ),
    ]
    for action, extra in refusals:
        for who, iid in ((live_server, MADE_UP), (other_tenant, alone.instance_id)):
            expect(
                kind,
                lambda action=action, extra=extra, who=who, iid=iid: call(
                    who, kind, action, InstanceId=iid, **extra
                ),
                INSTANCE_NOT_FOUND,
            )
    expect(
        kind,
        lambda: call(
            other_tenant,
            kind,
            "ModifySecurityGroupConfiguration",
            DBInstanceId=alone.instance_id,
            SecurityGroupId="sg-1",
        ),
        INSTANCE_NOT_FOUND,
    )


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_malformed_values_are_refused(live_server: LiveServer, alone: Instance, kind: str) -> None:
    iid = alone.instance_id
    expect(
        kind,
        lambda: call(live_server, kind, "ModifyInstanceSSL", InstanceId=iid, SSLEnabled="On"),
        invalid("SSLEnabled"),
    )
    expect(
        kind,
        lambda: call(live_server, kind, "ModifyInstanceTDE", InstanceId=iid, TDEStatus="on"),
        invalid("TDEStatus"),
    )
    expect(
        kind,
        lambda: call(live_server, kind, "ModifyInstanceSSL", InstanceId=iid),
        missing("SSLEnabled"),
    )
    expect(
        kind,
        lambda: call(live_server, kind, "ModifySecurityGroupConfiguration", DBInstanceId=iid),
        missing("SecurityGroupId"),
    )


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_settings_rkvstore_cannot_make_true_are_refused(
    live_server: LiveServer, alone: Instance, kind: str
) -> None:
    iid = alone.instance_id
    for value in ("Enable", "Update"):
        expect(
            kind,
            lambda value=value: call(
                live_server, kind, "ModifyInstanceSSL", InstanceId=iid, SSLEnabled=value
            ),
            SSL_REFUSED,
        )
    expect(
        kind,
        lambda: call(live_server, kind, "ModifyInstanceTDE", InstanceId=iid, TDEStatus="Enabled"),
        TDE_REFUSED,
    )
    expect(
        kind,
        lambda: call(
            live_server,
            kind,
            "ModifyBackupPolicy",
            InstanceId=iid,
            PreferredBackupPeriod="Monday,Friday",
            PreferredBackupTime="01:00Z-02:00Z",
        ),
        BACKUP_REFUSED,
    )
    # Terraform with only backup_time set sends the time alone (the period reads
    # back empty): the answer is still the refusal, not a missing parameter.
    expect(
        kind,
        lambda: call(
            live_server,
            kind,
            "ModifyBackupPolicy",
            InstanceId=iid,
            PreferredBackupTime="01:00Z-02:00Z",
        ),
        BACKUP_REFUSED,
    )
    expect(
        kind,
        lambda: call(
            live_server,
            kind,
            "ModifySecurityGroupConfiguration",
            DBInstanceId=iid,
            SecurityGroupId="sg-bp1",
        ),
        SECURITY_GROUP_REFUSED,
    )
    # What already holds is no change: SSL and TDE off.
    call(live_server, kind, "ModifyInstanceSSL", InstanceId=iid, SSLEnabled="Disable")
    call(live_server, kind, "ModifyInstanceTDE", InstanceId=iid, TDEStatus="Disabled")
    ssl = call(live_server, kind, "DescribeInstanceSSL", InstanceId=iid)
    assert ssl["SSLEnabled"] == "Disable"


@pytest.mark.parametrize("kind", SDK_KINDS)
def test_create_instance_refuses_a_vpc_and_a_subscription(
    live_server: LiveServer, instances: list[Instance], kind: str
) -> None:
    password = new_password()
    asks: list[tuple[dict[str, str], tuple[str, int, str]]] = [
        ({"NetworkType": "VPC"}, VPC_REFUSED),
        ({"VpcId": "vpc-bp1"}, VPC_REFUSED),
        ({"VSwitchId": "vsw-bp1"}, VPC_REFUSED),
        ({"NetworkType": "CLASSIC", "ChargeType": "PrePaid"}, PREPAID_REFUSED),
        ({"NetworkType": "classic-ish"}, invalid("NetworkType")),
    ]
    for extra, error in asks:
        params = {"NodeType": STAND_ALONE, "Password": password, **extra}
        expect(
            kind, lambda params=params: call(live_server, kind, "CreateInstance", **params), error
        )
    client: NewClient = new_sdk_client(
        live_server.endpoint, live_server.access_key_id, live_server.access_key_secret
    )
    listed = client.describe_instances(kv_models.DescribeInstancesRequest()).body
    assert listed.total_count == len(instances)  # nothing was created


# --------------------------------------------------------------------------- RAM and regions


def test_read_only_policy_covers_the_describes_not_the_modifies(
    live_server: LiveServer, alone: Instance
) -> None:
    root = root_of(live_server)
    account_id = discover_account_id(root)
    reader = make_user(root, account_id, system=["AliyunKvstoreReadOnlyAccess"])
    iid = alone.instance_id
    for action in DESCRIBES:
        call(reader, NEW_V3, action, InstanceId=iid)
    expect_denied(
        lambda: new_call(
            reader, NEW_V3, "ModifyInstanceSSL", {"InstanceId": iid, "SSLEnabled": "Disable"}
        ),
        reader,
        "kvstore:ModifyInstanceSSL",
    )
    nobody = make_user(root, account_id)
    expect_error(
        lambda: new_call(nobody, NEW_V3, "DescribeSecurityIps", {"InstanceId": iid}),
        FORBIDDEN_RAM,
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_region_endpoint_is_the_host_the_client_used(live_server: LiveServer, host: str) -> None:
    port = live_server.endpoint.rsplit(":", 1)[1]
    endpoint = f"{host}:{port}"
    client = new_sdk_client(endpoint, live_server.access_key_id, live_server.access_key_secret)
    regions = client.describe_regions(kv_models.DescribeRegionsRequest()).body
    assert regions.region_ids.kvstore_region[0].region_endpoint == endpoint
