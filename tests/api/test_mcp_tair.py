"""The Tair OpenAPI MCP server's tools against rkvstore, by their exact requests (issue 11).

The server is PyPI's ``alibabacloud-tair-openapi-mcp-server`` 0.1.2 (module
``tair_openapi_mcp_server``). It is not run here, and cannot be part of this suite:

- every release (0.0.1 to 0.1.2) declares ``Requires-Python >=3.12``; rkvstore supports
  and tests on 3.11, where ``pip install`` finds no version at all;
- it cannot be pointed at an endpoint: ``utils/openapi_client.py`` builds each client as
  ``Config(access_key_id, access_key_secret, region_id)`` with the AccessKey from
  ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (its only other
  settings are ``TAIR_MCP_LOG_LEVEL`` and ``TAIR_MCP_LOG_FILE``), so the SDK resolves the
  public endpoint (``r-kvstore.aliyuncs.com``, HTTPS); over stdio it talks to Alibaba Cloud;
- it requires ``mcp>=1.0.0`` with no upper bound, and a fresh install resolves mcp 2.x,
  where ``mcp.server.fastmcp`` no longer exists: the server fails on import unless
  ``mcp<2`` is pinned by hand.

Run by hand on Python 3.12 (with ``mcp<2``), its own tools through FastMCP's
``call_tool``, with its client cache seeded with the same client pointed at a live
rkvstore, answered as these tests expect: ``describe_security_ips`` the ``default``
group ``127.0.0.1``, ``describe_accounts`` both Super accounts, ``modify_security_ips``
``OperationDenied.SecurityIps`` (403), an unknown instance ``InvalidInstanceId.NotFound``.

So each tool's request is sent here as its source sends it (``tools/describe.py``,
``tools/security_ips.py``): the same SDK client class (``alibabacloud_r_kvstore20150101``
on tea-openapi, its default V3 signature; the server pins 6.1.0, this suite has 7.0.0),
the same request model with the same fields, ``.body.to_map()`` of the answer. The only
change is the one the server has no setting for: the endpoint (host:port, plain HTTP).
The answers are checked against the nodes themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from alibabacloud_tea_openapi.exceptions import ClientException

from rkvstore.domain.accounts import MANAGEMENT_USER
from tests.api.instances import (
    MASTER_SLAVE,
    Instance,
    acl_snapshot,
    new_password,
    provision,
    rpc_client,
)
from tests.api.sdk_clients import new_sdk_client
from tests.api.test_instance_surface import MADE_UP, expected_security_ips
from tests.conftest import LiveServer

INSTANCE_NOT_FOUND: Final = (
    "InvalidInstanceId.NotFound",
    404,
    "The specified instance is not found.",
)
SECURITY_IPS_REFUSED: Final = (
    "OperationDenied.SecurityIps",
    403,
    "rkvstore cannot filter clients by address (Redis has no such setting): the whitelist "
    "of the instance is {current}, as its nodes' bind address makes it, and cannot be changed.",
)


@pytest.fixture(scope="module")
def instance(live_server: LiveServer) -> Iterator[Instance]:
    with provision(live_server, MASTER_SLAVE) as made:
        yield made[0]


@pytest.fixture
def client(live_server: LiveServer) -> NewClient:
    """``OpenAPIClientManager.get_client(region_id)``: AccessKey and region, nothing else
    (here also the endpoint)."""
    return new_sdk_client(
        live_server.endpoint, live_server.access_key_id, live_server.access_key_secret
    )


# --------------------------------------------------------------------------- the tools' calls


def describe_security_ips(client: NewClient, instance_id: str) -> dict[str, Any]:
    """Tool ``describe_security_ips`` (tools/describe.py)."""
    req = kv_models.DescribeSecurityIpsRequest(instance_id=instance_id)
    answer: dict[str, Any] = client.describe_security_ips(req).body.to_map()
    return answer


def describe_accounts(
    client: NewClient, instance_id: str, account_name: str = ""
) -> dict[str, Any]:
    """Tool ``describe_accounts`` (tools/describe.py): ``AccountName`` only when given."""
    request = kv_models.DescribeAccountsRequest(instance_id=instance_id)
    if account_name:
        request.account_name = account_name
    answer: dict[str, Any] = client.describe_accounts(request).body.to_map()
    return answer


def modify_security_ips(client: NewClient, instance_id: str, security_ips: str) -> dict[str, Any]:
    """Tool ``modify_security_ips`` (tools/security_ips.py) with its defaults: group
    ``default``, mode ``Cover``."""
    req = kv_models.ModifySecurityIpsRequest(
        instance_id=instance_id,
        security_ips=security_ips,
        security_ip_group_name="default",
        modify_mode="Cover",
    )
    answer: dict[str, Any] = client.modify_security_ips(req).body.to_map()
    return answer


def sdk_error(exc: ClientException) -> tuple[str, int, str]:
    """What the tool returns as ``{"error": str(e)}``, read from the SDK's exception."""
    return str(exc.code), int(exc.status_code or 0), str(dict(exc.data or {}).get("Message"))


# --------------------------------------------------------------------------- the tests


def test_describe_security_ips_is_what_the_nodes_bind(
    live_server: LiveServer, client: NewClient, instance: Instance
) -> None:
    answer = describe_security_ips(client, instance.instance_id)
    assert set(answer) == {"RequestId", "SecurityIpGroups"}, answer
    groups = answer["SecurityIpGroups"]["SecurityIpGroup"]
    assert groups == [
        {
            "SecurityIpGroupName": "default",
            "SecurityIpGroupAttribute": "",
            "SecurityIpList": expected_security_ips(live_server, instance),
        }
    ]


def test_describe_accounts_is_the_acl_of_every_node(
    live_server: LiveServer, client: NewClient, instance: Instance
) -> None:
    iid = instance.instance_id
    name = "mcp_reader"
    with rpc_client(live_server) as rpc:
        rpc.call(
            "CreateAccount",
            {
                "InstanceId": iid,
                "AccountName": name,
                "AccountPassword": new_password("Mcp_1"),
                "AccountPrivilege": "RoleReadOnly",
            },
        )
        try:
            listed = describe_accounts(client, iid)["Accounts"]["Account"]
            one = describe_accounts(client, iid, name)["Accounts"]["Account"]
            acl = acl_snapshot(instance.node_ports, instance.password)
        finally:
            rpc.call("DeleteAccount", {"InstanceId": iid, "AccountName": name})

    names = {a["AccountName"] for a in listed}
    assert {name, "default"} <= names
    assert all(a["InstanceId"] == iid for a in listed)
    assert [a["AccountName"] for a in one] == [name]
    assert one[0]["AccountType"] == "Normal"
    privileges = {p["AccountPrivilege"] for p in one[0]["DatabasePrivileges"]["DatabasePrivilege"]}
    assert privileges == {"RoleReadOnly"}
    # Every node has exactly these users (and rkvstore's own management user, never listed).
    assert len(acl) == 2  # master and replica
    for port, rules in acl.items():
        users = {rule.split()[1] for rule in rules}
        assert users == names | {MANAGEMENT_USER}, (port, rules)
    assert MANAGEMENT_USER not in names


def test_modify_security_ips_is_refused_and_nothing_changes(
    live_server: LiveServer, client: NewClient, instance: Instance
) -> None:
    current = expected_security_ips(live_server, instance)
    code, status, message = SECURITY_IPS_REFUSED
    with pytest.raises(ClientException) as info:
        modify_security_ips(client, instance.instance_id, "192.168.1.0/24,10.0.0.100")
    assert sdk_error(info.value) == (code, status, message.format(current=current))
    # What is true already is accepted (a no-op), as the tool's own example "Cover" with it.
    assert set(modify_security_ips(client, instance.instance_id, current)) == {"RequestId"}
    ips = describe_security_ips(client, instance.instance_id)
    assert ips["SecurityIpGroups"]["SecurityIpGroup"][0]["SecurityIpList"] == current


TOOLS: Final = {
    "describe_security_ips": describe_security_ips,
    "describe_accounts": describe_accounts,
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_an_unknown_instance_is_not_found(client: NewClient, tool: str) -> None:
    with pytest.raises(ClientException) as info:
        TOOLS[tool](client, MADE_UP)
    assert sdk_error(info.value) == INSTANCE_NOT_FOUND
