"""The instance updates of issue 11, through the new SDK (V3) and the legacy SDK (V1).

ModifyInstanceAttribute (name, the default password, release protection),
ModifyInstanceConfig / DescribeInstanceConfig / DescribeParameters, and
ModifySecurityIps. One server serves the module, with a MASTER_SLAVE instance
and a two-shard cluster; every parameter change is checked with ``CONFIG GET``
on every node (as rkvstore's management user: the default account may not
run CONFIG) and in every node's redis.conf. The reconciler's interval is long
here, so that a node made to refuse CONFIG SET stays that way for the test.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from alibabacloud_tea_openapi.exceptions import ClientException as NewClientException
from alibabacloud_tea_openapi.exceptions import ServerException as NewServerException
from aliyunsdkcore.acs_exception.exceptions import ServerException as LegacyServerException
from aliyunsdkcore.request import AcsRequest
from aliyunsdkr_kvstore.request.v20150101.DeleteInstanceRequest import DeleteInstanceRequest
from aliyunsdkr_kvstore.request.v20150101.DescribeInstanceAttributeRequest import (
    DescribeInstanceAttributeRequest,
)
from aliyunsdkr_kvstore.request.v20150101.DescribeInstanceConfigRequest import (
    DescribeInstanceConfigRequest,
)
from aliyunsdkr_kvstore.request.v20150101.DescribeParametersRequest import (
    DescribeParametersRequest,
)
from aliyunsdkr_kvstore.request.v20150101.ModifyInstanceAttributeRequest import (
    ModifyInstanceAttributeRequest,
)
from aliyunsdkr_kvstore.request.v20150101.ModifyInstanceConfigRequest import (
    ModifyInstanceConfigRequest,
)
from aliyunsdkr_kvstore.request.v20150101.ModifySecurityIpsRequest import (
    ModifySecurityIpsRequest,
)

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.iam.policy import evaluate, parse_policy
from rkvstore.products import SYSTEM_POLICIES
from rkvstore.secret import Secret
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    assert_wrongpass,
    can_login,
    connect,
    delete_instance,
    new_password,
    rpc_client,
    wait_normal,
)
from tests.api.ram_helpers import create_tenant
from tests.api.sdk_clients import legacy_client, legacy_request, new_sdk_client
from tests.conftest import ARTIFACT_DIRS, LiveServer, start_server
from tests.integration.test_cluster import management_password, node_files
from tests.integration.test_resilience import wait_serving

MADE_UP: Final = "r-" + "q7" * 9
NOT_FOUND: Final = ("InvalidInstanceId.NotFound", 404, "The specified instance is not found.")
ALLOWED_NAMES: Final = "maxmemory-policy, timeout, notify-keyspace-events, hz"
PROTECTED: Final = (
    "OperationDenied.ReleaseProtection",
    403,
    "The instance has release protection enabled; set InstanceReleaseProtection to false "
    "with ModifyInstanceAttribute before deleting it.",
)
WHITELIST_REFUSED: Final = (
    "OperationDenied.SecurityIps",
    403,
    "rkvstore cannot filter clients by address (Redis has no such setting): the whitelist "
    "of the instance is 127.0.0.1, as its nodes' bind address makes it, and cannot be changed.",
)
PASSWORD_FORMAT: Final = (
    "InvalidAccountPassword.Format",
    400,
    "Specified AccountPassword is not valid.",
)
UNAVAILABLE: Final = (
    "ServiceUnavailable",
    503,
    "The request has failed due to a temporary failure of the server.",
)


def not_supported(name: str) -> tuple[str, int, str]:
    return (
        "ParamNotSupported",
        400,
        f'Parameter "{name}" cannot be modified: rkvstore modifies only {ALLOWED_NAMES}.',
    )


def malformed(name: str, rule: str) -> tuple[str, int, str]:
    return ("InvalidParameters.Format", 400, f'Specified parameters is not valid: "{name}" {rule}.')


# --------------------------------------------------------------------------- fixtures


class Made:
    def __init__(self, instance_id: str, password: str) -> None:
        self.instance_id = instance_id
        self.password = password


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path = tmp_path_factory.mktemp("instance-config")
    ARTIFACT_DIRS.append(path)
    live = start_server(path, extra_env={"RKVSTORE_RECONCILE_INTERVAL_SECONDS": "60"})
    try:
        yield live
    finally:
        live.stop()


def _create(server: LiveServer, params: dict[str, Any]) -> Made:
    password = new_password("Def_1")
    with rpc_client(server) as client:
        body = client.call("CreateInstance", {**params, "Password": Secret(password)})
        wait_normal(client, str(body["InstanceId"]), 90)
    return Made(str(body["InstanceId"]), password)


@pytest.fixture(scope="module")
def standard(server: LiveServer) -> Iterator[Made]:
    made = _create(server, {"NodeType": MASTER_SLAVE})
    yield made
    _unprotect_and_delete(server, made.instance_id)


@pytest.fixture(scope="module")
def cluster(server: LiveServer) -> Iterator[Made]:
    made = _create(server, {"NodeType": MASTER_SLAVE, "ShardCount": 2})
    yield made
    _unprotect_and_delete(server, made.instance_id)


def _unprotect_and_delete(server: LiveServer, instance_id: str) -> None:
    with rpc_client(server) as client:
        client.call(
            "ModifyInstanceAttribute",
            {"InstanceId": instance_id, "InstanceReleaseProtection": "false"},
        )
        delete_instance(client, instance_id)


def sdk(server: LiveServer) -> NewClient:
    return new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)


def legacy(server: LiveServer, request: AcsRequest) -> dict[str, Any]:
    client = legacy_client(server.access_key_id, server.access_key_secret)
    try:
        raw = client.do_action_with_exception(legacy_request(request, server.endpoint))
    finally:
        client.session.close()
    body: dict[str, Any] = json.loads(raw)
    return body


def expect_new(call: Callable[[], Any], error: tuple[str, int, str]) -> None:
    with pytest.raises((NewClientException, NewServerException)) as info:
        call()
    body = dict(info.value.data or {})
    assert (info.value.code, info.value.status_code, body.get("Message")) == error, body


def expect_legacy(call: Callable[[], Any], error: tuple[str, int, str]) -> None:
    with pytest.raises(LegacyServerException) as info:
        call()
    exc = info.value
    assert (exc.get_error_code(), int(exc.get_http_status()), exc.get_error_msg()) == error


def node_ports(server: LiveServer, instance_id: str) -> list[int]:
    return [n.port for n in node_files(server, instance_id)]


def config_get(server: LiveServer, instance_id: str, name: str) -> dict[int, str]:
    """``CONFIG GET name`` on every node of the instance, as the management user."""
    mgmt = management_password(server, instance_id)
    out: dict[int, str] = {}
    for port in node_ports(server, instance_id):
        with connect(port, MANAGEMENT_USER, mgmt) as client:
            out[port] = client.config_get(name)[name]
    return out


def conf_files(server: LiveServer, instance_id: str) -> list[str]:
    return [(n.directory / "redis.conf").read_text() for n in node_files(server, instance_id)]


def modify_config(server: LiveServer, instance_id: str, config: dict[str, Any]) -> None:
    request = kv_models.ModifyInstanceConfigRequest(
        instance_id=instance_id, config=json.dumps(config)
    )
    sdk(server).modify_instance_config(request)


def describe_attribute(server: LiveServer, instance_id: str) -> dict[str, Any]:
    request = kv_models.DescribeInstanceAttributeRequest(instance_id=instance_id)
    body = sdk(server).describe_instance_attribute(request).body.to_map()
    (item,) = body["Instances"]["DBInstanceAttribute"]
    return dict(item)


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("which", ["standard", "cluster"])
def test_config_reaches_every_node_and_its_file(
    server: LiveServer, which: str, request: pytest.FixtureRequest
) -> None:
    made: Made = request.getfixturevalue(which)
    wanted = {
        "maxmemory-policy": "allkeys-lru",
        "timeout": "300",
        "hz": 20,  # a JSON number is taken as Alibaba's examples send it
        "notify-keyspace-events": "Ex",
    }
    modify_config(server, made.instance_id, wanted)
    ports = node_ports(server, made.instance_id)
    assert len(ports) == (2 if which == "standard" else 4)
    assert set(config_get(server, made.instance_id, "maxmemory-policy").values()) == {"allkeys-lru"}
    assert set(config_get(server, made.instance_id, "timeout").values()) == {"300"}
    assert set(config_get(server, made.instance_id, "hz").values()) == {"20"}
    # Redis keeps the classes in its own order.
    assert set(config_get(server, made.instance_id, "notify-keyspace-events").values()) == {"xE"}
    for text in conf_files(server, made.instance_id):
        assert 'maxmemory-policy "allkeys-lru"' in text
        assert 'timeout "300"' in text
        assert "masterauth" not in text  # never CONFIG REWRITE: it would write the password

    expected = {
        "hz": "20",
        "maxmemory-policy": "allkeys-lru",
        "notify-keyspace-events": "xE",
        "timeout": "300",
    }
    body = sdk(server).describe_instance_config(
        kv_models.DescribeInstanceConfigRequest(instance_id=made.instance_id)
    )
    assert json.loads(body.body.config) == expected
    assert body.body.param_repl_mode == "async"
    assert json.loads(describe_attribute(server, made.instance_id)["Config"]) == expected

    params = sdk(server).describe_parameters(
        kv_models.DescribeParametersRequest(dbinstance_id=made.instance_id)
    )
    running = {p.parameter_name: p for p in params.body.running_parameters.parameter}
    assert {k: p.parameter_value for k, p in running.items()} == expected
    assert running["timeout"].checking_code == "[0-100000]"
    assert running["hz"].modifiable_status == "true"
    assert running["hz"].force_restart == "false"
    assert params.body.config_parameters.parameter


def test_config_through_the_legacy_sdk(server: LiveServer, standard: Made) -> None:
    request = ModifyInstanceConfigRequest()
    request.set_InstanceId(standard.instance_id)
    request.set_Config(json.dumps({"maxmemory-policy": "volatile-ttl", "timeout": "60"}))
    legacy(server, request)
    assert set(config_get(server, standard.instance_id, "maxmemory-policy").values()) == {
        "volatile-ttl"
    }
    described = DescribeInstanceConfigRequest()
    described.set_InstanceId(standard.instance_id)
    config = json.loads(legacy(server, described)["Config"])
    assert (config["maxmemory-policy"], config["timeout"]) == ("volatile-ttl", "60")
    parameters = DescribeParametersRequest()
    parameters.set_DBInstanceId(standard.instance_id)
    body = legacy(server, parameters)
    shown = {
        p["ParameterName"]: p["ParameterValue"] for p in body["RunningParameters"]["Parameter"]
    }
    assert shown["maxmemory-policy"] == "volatile-ttl"
    assert body["EngineVersion"]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"maxmemory": "1gb"}, not_supported("maxmemory")),
        ({"requirepass": "x"}, not_supported("requirepass")),
        ({"timeout": "abc"}, malformed("timeout", "must be in [0-100000]")),
        ({"timeout": "100001"}, malformed("timeout", "must be in [0-100000]")),
        ({"hz": 0}, malformed("hz", "must be in [1-500]")),
        (
            {"maxmemory-policy": "lru"},
            malformed(
                "maxmemory-policy",
                "must be in [volatile-lru|allkeys-lru|volatile-lfu|allkeys-lfu|volatile-random|"
                "allkeys-random|volatile-ttl|noeviction]",
            ),
        ),
        (
            {"notify-keyspace-events": "Q"},
            malformed("notify-keyspace-events", "must be in [K|E][g$lshzxetmdA]* or empty"),
        ),
        (
            {"notify-keyspace-events": "x"},  # no K or E: would publish nothing
            malformed("notify-keyspace-events", "must be in [K|E][g$lshzxetmdA]* or empty"),
        ),
        (
            {"hz": True},
            malformed("hz", "must be a string or an integer in [1-500]"),
        ),
    ],
)
def test_config_outside_the_allow_list_or_malformed_is_refused(
    server: LiveServer, standard: Made, config: dict[str, Any], error: tuple[str, int, str]
) -> None:
    before = config_get(server, standard.instance_id, "timeout")
    expect_new(lambda: modify_config(server, standard.instance_id, config), error)
    request = ModifyInstanceConfigRequest()
    request.set_InstanceId(standard.instance_id)
    request.set_Config(json.dumps(config))
    expect_legacy(lambda: legacy(server, request), error)
    assert config_get(server, standard.instance_id, "timeout") == before


def test_config_that_is_not_a_json_object_is_refused(server: LiveServer, standard: Made) -> None:
    error = malformed("Config", "must be a JSON object")
    for text in ("not json", "[1, 2]", '"timeout"'):
        request = kv_models.ModifyInstanceConfigRequest(
            instance_id=standard.instance_id, config=text
        )
        expect_new(lambda r=request: sdk(server).modify_instance_config(r), error)


def test_a_node_that_refuses_config_set_leaves_every_node_as_it_was(
    server: LiveServer, standard: Made
) -> None:
    """One node's management user loses CONFIG SET (a real ACL rule): the others get
    their old value back, and the answer is ServiceUnavailable."""
    modify_config(server, standard.instance_id, {"timeout": "100"})
    mgmt = management_password(server, standard.instance_id)
    refusing = node_ports(server, standard.instance_id)[-1]
    with connect(refusing, MANAGEMENT_USER, mgmt) as client:
        client.execute_command("ACL", "SETUSER", MANAGEMENT_USER, "-config|set")
    try:
        expect_new(
            lambda: modify_config(server, standard.instance_id, {"timeout": "200"}), UNAVAILABLE
        )
        assert set(config_get(server, standard.instance_id, "timeout").values()) == {"100"}
        for text in conf_files(server, standard.instance_id):
            assert 'timeout "200"' not in text
    finally:
        with connect(refusing, MANAGEMENT_USER, mgmt) as client:
            client.execute_command("ACL", "SETUSER", MANAGEMENT_USER, "+config|set")
    modify_config(server, standard.instance_id, {"timeout": "200"})
    assert set(config_get(server, standard.instance_id, "timeout").values()) == {"200"}


def test_a_stopped_master_changes_nothing_and_config_reads_empty(
    server: LiveServer, standard: Made
) -> None:
    """A node that does not answer: ServiceUnavailable within the node timeout, nothing
    changed; DescribeInstanceAttribute still answers, with Config ``{}``."""
    modify_config(server, standard.instance_id, {"hz": "15"})
    master = node_files(server, standard.instance_id)[0]
    pid = master.running_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        expect_new(lambda: modify_config(server, standard.instance_id, {"hz": "25"}), UNAVAILABLE)
        assert time.monotonic() - started < 10
        assert describe_attribute(server, standard.instance_id)["Config"] == "{}"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert set(config_get(server, standard.instance_id, "hz").values()) == {"15"}


def test_parameters_survive_a_node_restart(server: LiveServer, standard: Made) -> None:
    modify_config(server, standard.instance_id, {"timeout": "77"})
    replica = node_files(server, standard.instance_id)[-1]
    old = replica.running_pid()
    os.kill(old, signal.SIGKILL)
    wait_serving(replica, "default", standard.password, old)
    assert config_get(server, standard.instance_id, "timeout")[replica.port] == "77"


# --------------------------------------------------------------------------- errors of every action


def _new_calls(server: LiveServer, instance_id: str) -> dict[str, Callable[[], Any]]:
    client = sdk(server)
    return {
        "ModifyInstanceAttribute": lambda: client.modify_instance_attribute(
            kv_models.ModifyInstanceAttributeRequest(instance_id=instance_id, instance_name="x1")
        ),
        "ModifyInstanceConfig": lambda: client.modify_instance_config(
            kv_models.ModifyInstanceConfigRequest(instance_id=instance_id, config='{"hz":10}')
        ),
        "DescribeInstanceConfig": lambda: client.describe_instance_config(
            kv_models.DescribeInstanceConfigRequest(instance_id=instance_id)
        ),
        "DescribeParameters": lambda: client.describe_parameters(
            kv_models.DescribeParametersRequest(dbinstance_id=instance_id)
        ),
        "ModifySecurityIps": lambda: client.modify_security_ips(
            kv_models.ModifySecurityIpsRequest(instance_id=instance_id, security_ips="127.0.0.1")
        ),
    }


def _legacy_calls(server: LiveServer, instance_id: str) -> dict[str, Callable[[], Any]]:
    attribute = ModifyInstanceAttributeRequest()
    attribute.set_InstanceId(instance_id)
    attribute.set_InstanceName("x1")
    config = ModifyInstanceConfigRequest()
    config.set_InstanceId(instance_id)
    config.set_Config('{"hz":10}')
    described = DescribeInstanceConfigRequest()
    described.set_InstanceId(instance_id)
    parameters = DescribeParametersRequest()
    parameters.set_DBInstanceId(instance_id)
    ips = ModifySecurityIpsRequest()
    ips.set_InstanceId(instance_id)
    ips.set_SecurityIps("127.0.0.1")
    return {
        name: (lambda r=r: legacy(server, r))
        for name, r in (
            ("ModifyInstanceAttribute", attribute),
            ("ModifyInstanceConfig", config),
            ("DescribeInstanceConfig", described),
            ("DescribeParameters", parameters),
            ("ModifySecurityIps", ips),
        )
    }


def test_unknown_instance_is_not_found_for_every_action(server: LiveServer) -> None:
    for call in _new_calls(server, MADE_UP).values():
        expect_new(call, NOT_FOUND)
    for call in _legacy_calls(server, MADE_UP).values():
        expect_legacy(call, NOT_FOUND)


def test_another_tenants_instance_is_not_found_for_every_action(
    server: LiveServer, standard: Made
) -> None:
    other = create_tenant(server)
    as_other = other.as_server(server)
    for call in _new_calls(as_other, standard.instance_id).values():
        expect_new(call, NOT_FOUND)
    for call in _legacy_calls(as_other, standard.instance_id).values():
        expect_legacy(call, NOT_FOUND)
    assert describe_attribute(server, standard.instance_id)["InstanceName"] != "x1"


# ------------------------------------------------------------------ ModifyInstanceAttribute


def test_new_password_reaches_every_node_and_the_old_one_is_refused(
    server: LiveServer, standard: Made
) -> None:
    old, new = standard.password, new_password("New_1")
    sdk(server).modify_instance_attribute(
        kv_models.ModifyInstanceAttributeRequest(instance_id=standard.instance_id, new_password=new)
    )
    standard.password = new
    for port in node_ports(server, standard.instance_id):
        for user in ("default", standard.instance_id):
            assert can_login(port, user, new), (user, port)
            assert_wrongpass(port, user, old)
    # Through the legacy SDK, with the name in the same call (as Terraform sends it).
    newer = new_password("New_2")
    request = ModifyInstanceAttributeRequest()
    request.set_InstanceId(standard.instance_id)
    request.set_NewPassword(newer)
    request.set_InstanceName("renamed-by-v1")
    legacy(server, request)
    standard.password = newer
    for port in node_ports(server, standard.instance_id):
        assert can_login(port, "default", newer)
        assert_wrongpass(port, "default", new)
    assert describe_attribute(server, standard.instance_id)["InstanceName"] == "renamed-by-v1"


def test_new_password_outside_the_rule_is_refused(server: LiveServer, standard: Made) -> None:
    call = lambda: sdk(server).modify_instance_attribute(  # noqa: E731
        kv_models.ModifyInstanceAttributeRequest(
            instance_id=standard.instance_id, new_password="short"
        )
    )
    expect_new(call, PASSWORD_FORMAT)
    assert can_login(node_ports(server, standard.instance_id)[0], "default", standard.password)


def test_release_protection_is_shown_and_stops_delete(server: LiveServer) -> None:
    made = _create(server, {"NodeType": STAND_ALONE})
    request = ModifyInstanceAttributeRequest()
    request.set_InstanceId(made.instance_id)
    request.set_InstanceReleaseProtection(True)
    legacy(server, request)
    assert describe_attribute(server, made.instance_id)["InstanceReleaseProtection"] is True
    described = DescribeInstanceAttributeRequest()
    described.set_InstanceId(made.instance_id)
    item = legacy(server, described)["Instances"]["DBInstanceAttribute"][0]
    assert item["InstanceReleaseProtection"] is True

    expect_new(
        lambda: sdk(server).delete_instance(
            kv_models.DeleteInstanceRequest(instance_id=made.instance_id)
        ),
        PROTECTED,
    )
    delete = DeleteInstanceRequest()
    delete.set_InstanceId(made.instance_id)
    expect_legacy(lambda: legacy(server, delete), PROTECTED)
    assert describe_attribute(server, made.instance_id)["InstanceStatus"] == "Normal"

    sdk(server).modify_instance_attribute(
        kv_models.ModifyInstanceAttributeRequest(
            instance_id=made.instance_id, instance_release_protection=False
        )
    )
    assert describe_attribute(server, made.instance_id)["InstanceReleaseProtection"] is False
    legacy(server, delete)
    expect_new(lambda: describe_attribute(server, made.instance_id), NOT_FOUND)


# --------------------------------------------------------------------------- ModifySecurityIps


def test_security_ips_that_are_already_true_are_accepted(
    server: LiveServer, standard: Made
) -> None:
    client = sdk(server)
    for ips, mode in (("127.0.0.1", None), ("127.0.0.1/32", "Cover"), ("127.0.0.1", "Append")):
        client.modify_security_ips(
            kv_models.ModifySecurityIpsRequest(
                instance_id=standard.instance_id, security_ips=ips, modify_mode=mode
            )
        )
    request = ModifySecurityIpsRequest()
    request.set_InstanceId(standard.instance_id)
    request.set_SecurityIps("127.0.0.1")
    request.set_SecurityIpGroupName("default")
    legacy(server, request)


@pytest.mark.parametrize(
    ("ips", "mode", "group"),
    [
        ("10.0.0.0/8", None, None),
        ("0.0.0.0/0", "Cover", None),
        ("127.0.0.1,192.168.1.1", "Cover", None),
        ("192.168.1.1", "Append", None),
        ("127.0.0.1", "Delete", None),
        ("127.0.0.1", None, "app_servers"),
    ],
)
def test_security_ips_that_would_change_who_connects_are_refused(
    server: LiveServer, standard: Made, ips: str, mode: str | None, group: str | None
) -> None:
    expect_new(
        lambda: sdk(server).modify_security_ips(
            kv_models.ModifySecurityIpsRequest(
                instance_id=standard.instance_id,
                security_ips=ips,
                modify_mode=mode,
                security_ip_group_name=group,
            )
        ),
        WHITELIST_REFUSED,
    )
    request = ModifySecurityIpsRequest()
    request.set_InstanceId(standard.instance_id)
    request.set_SecurityIps(ips)
    if mode:
        request.set_ModifyMode(mode)
    if group:
        request.set_SecurityIpGroupName(group)
    expect_legacy(lambda: legacy(server, request), WHITELIST_REFUSED)


def test_malformed_security_ips_are_refused(server: LiveServer, standard: Made) -> None:
    error = ("InvalidSecurityIPs.Format", 400, "Specified security IP list is not valid.")
    for ips in ("abc", "300.1.1.1", "10.0.0.0/40", ",,"):
        request = kv_models.ModifySecurityIpsRequest(
            instance_id=standard.instance_id, security_ips=ips
        )
        expect_new(lambda r=request: sdk(server).modify_security_ips(r), error)


# --------------------------------------------------------------------------- RAM


def test_system_policies_cover_the_new_actions() -> None:
    read_only = parse_policy(SYSTEM_POLICIES["AliyunKvstoreReadOnlyAccess"][1])
    full = parse_policy(SYSTEM_POLICIES["AliyunKvstoreFullAccess"][1])
    arn = "acs:kvstore:cn-hangzhou:1234567890123456:instance/" + MADE_UP
    for action in ("DescribeInstanceConfig", "DescribeParameters"):
        assert evaluate([read_only], f"kvstore:{action}", arn, {}) == "Allow"
    for action in ("ModifyInstanceAttribute", "ModifyInstanceConfig", "ModifySecurityIps"):
        assert evaluate([read_only], f"kvstore:{action}", arn, {}) == "ImplicitDeny"
        assert evaluate([full], f"kvstore:{action}", arn, {}) == "Allow"
