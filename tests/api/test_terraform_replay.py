"""terraform-provider-alicloud against rkvstore, replayed call for call (issue 11).

The provider binary cannot be downloaded here, so ``terraform_replay`` sends what it
sends: the tea-rpc wire (V1 signature over query and form body, ``ClientToken``) and the
Go SDK wire for the [go-sdk] calls, with the provider's retry rules (``TaskExists`` is
never retried), its waits (same loop shape, durations scaled by ``Pace``: 1/100 of the
provider's, so the account's 60 s create delay is 0.6 s and a 3 s poll 30 ms) and its
not-found rules. Terraform's default parallelism is 10: ten accounts of one instance are
created, updated and deleted at once, and all of them must succeed, because rkvstore's
task slot makes the second change wait for the first (api.md §6) instead of answering
``TaskExists``.

After every step the nodes are asked: the passwords log in (AUTH) on every node, the
old ones are refused, the privilege holds as ACL rules (the same on every node, and a
read-only account cannot write), and for the instance ``CONFIG GET`` on every node.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

import pytest
import redis
from alibabacloud_tea_openapi.utils import Utils as OpenApiUtils
from alibabacloud_tea_util.client import Client as TeaUtil

from rkvstore.domain.accounts import MANAGEMENT_USER
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    Instance,
    assert_wrongpass,
    can_login,
    connect,
    delete_instance,
    new_password,
    provision,
    replica_ports,
    rpc_client,
)
from tests.api.terraform_replay import (
    AccountConfig,
    AccountResource,
    GoServerError,
    InstanceConfig,
    InstanceResource,
    Provider,
    TeaSdkError,
    account_diff,
    account_id,
    go_form,
    instance_diff,
    kvstore_accounts_data_source,
    need_retry,
    no_code_regex_retry,
    v1_signature,
    v1_string_to_sign,
)
from tests.conftest import LiveServer
from tests.integration.test_cluster import management_password, node_files

REGION: Final = "cn-hangzhou"  # the live server's region (Settings default)
PARALLELISM: Final = 10  # terraform apply -parallelism default
ACCOUNT_NOT_FOUND: Final = (
    "InvalidAccountName.NotFound",
    404,
    "Specified AccountName does not exist.",
)
INSTANCE_NOT_FOUND: Final = (
    "InvalidInstanceId.NotFound",
    404,
    "The specified instance is not found.",
)
TEA_QUERY_KEYS: Final = {
    "Action",
    "Format",
    "Timestamp",
    "Version",
    "SignatureNonce",
    "SignatureMethod",
    "SignatureVersion",
    "AccessKeyId",
    "Signature",
}
# The provider's read of alicloud_kvstore_instance, in its order (PostPaid, IsSupportTDE false).
INSTANCE_READ: Final = [
    "DescribeInstanceAttribute",
    "DescribeDBInstanceNetInfo",
    "DescribeBackupPolicy",
    "DescribeSecurityGroupConfiguration",
    "DescribeInstanceSSL",
    "DescribeSecurityIps",
    "DescribeEngineVersion",
]

R = TypeVar("R")
A = TypeVar("A")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared(live_server: LiveServer) -> Iterator[dict[str, Instance]]:
    with provision(live_server, MASTER_SLAVE, STAND_ALONE) as made:
        yield {i.node_type: i for i in made}


@pytest.fixture
def provider(live_server: LiveServer) -> Iterator[Provider]:
    made = Provider.connect(
        live_server.endpoint, live_server.access_key_id, live_server.access_key_secret, REGION
    )
    try:
        yield made
    finally:
        made.close()


# --------------------------------------------------------------------------- helpers


def in_parallel(work: Callable[[A], R], items: Sequence[A]) -> list[R]:
    """``work`` on every item at once, as Terraform's walker does (10 at a time); the
    workers start together. The first exception is raised."""
    start = threading.Barrier(min(PARALLELISM, len(items)))

    def run(item: A) -> R:
        start.wait(timeout=30)
        return work(item)

    with ThreadPoolExecutor(max_workers=PARALLELISM) as pool:
        return list(pool.map(run, items))


def check_privilege(instance: Instance, name: str, password: str, privilege: str) -> None:
    """The privilege as Redis enforces it: what the account may do on the master, and the
    same ACL rules on every node."""
    key = f"{name}:probe"
    with connect(instance.port, name, password) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("maxmemory")  # an admin command: neither privilege has it
        if privilege == "RoleReadOnly":
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set(key, "x")
            assert client.get(key) is None
        else:
            assert privilege == "RoleReadWrite", privilege
            assert client.set(key, "x")
            assert client.delete(key) == 1
    rules = []
    for port in instance.node_ports:
        with connect(port, "default", instance.password) as admin:
            user = admin.execute_command("ACL", "GETUSER", name)
        rules.append({field: _tokens(user[field]) for field in ("flags", "commands", "keys")})
    assert all(r == rules[0] for r in rules), rules


def _tokens(value: Any) -> list[str]:
    if isinstance(value, list):
        return sorted(t for item in value for t in _tokens(item))
    return sorted(str(value).split())


def assert_only_password(instance: Instance, name: str, good: str, bad: str | None) -> None:
    for port in instance.node_ports:
        assert can_login(port, name, good), f"{name} refused on {port}"
        if bad is not None:
            assert_wrongpass(port, name, bad)


def tea_error(exc: TeaSdkError) -> tuple[str, int, str]:
    return exc.code, exc.status, exc.api_message


def form_of(request: Any) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def query_of(request: Any) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))


# --------------------------------------------------------------------------- the wire


def test_v1_signature_matches_the_worked_example_and_tea() -> None:
    """The replay's signer: wire-protocol.md's worked example, and the same signature as
    the Tea runtime's own V1 signer (tea-openapi's ``get_rpcsignature``, which tea-rpc's
    ``get_signature_v1`` equals) over query and form body; the form as Tea encodes it."""
    example = {
        "AccessKeyId": "testid",
        "AccountName": "demo",
        "AccountPassword": "P@ss w*1",
        "Action": "ResetAccountPassword",
        "Format": "json",
        "InstanceId": "r-1",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "n1",
        "SignatureVersion": "1.0",
        "Timestamp": "2025-01-01T00:00:00Z",
        "Version": "2015-01-01",
    }
    sts = v1_string_to_sign("POST", example)
    assert sts.startswith("POST&%2F&AccessKeyId%3Dtestid%26AccountName%3Ddemo%26")
    assert "AccountPassword%3DP%2540ss%2520w%252A1" in sts
    assert v1_signature("testsecret", sts) == "NI0i+iBUCXjm7bzoJUkGT54a13E="
    odd = {**example, "AccountDescription": "a b~c*d'e(f)g!h/ü漢", "Empty": ""}
    assert v1_signature("s3cr&t", v1_string_to_sign("POST", odd)) == (
        OpenApiUtils.get_rpcsignature(odd, "POST", "s3cr&t")
    )
    assert go_form(odd) == TeaUtil.to_form_string(odd)
    assert "AccountPassword=P%40ss+w%2A1" in go_form(odd)


def test_the_two_wires_as_sent(live_server: LiveServer, provider: Provider) -> None:
    """tea-rpc: the nine protocol parameters in the query, every API parameter in the form
    body; Go SDK: everything in the query (RegionId too), an empty body. rkvstore takes
    both; an unknown instance is a 404 the provider reads as not found."""
    missing = "r-" + "0" * 18
    with pytest.raises(TeaSdkError) as info:
        provider.tea.post("DescribeAccounts", {"InstanceId": missing, "RegionId": REGION})
    assert tea_error(info.value) == INSTANCE_NOT_FOUND
    assert info.value.message.startswith("code: 404, The specified instance is not found.")
    sent = provider.tea.sent[-1]
    assert sent.method == "POST" and sent.url.path == "/"
    assert set(query_of(sent)) == TEA_QUERY_KEYS
    assert query_of(sent)["Format"] == "json"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["x-acs-action"] == "DescribeAccounts"
    assert form_of(sent) == {"InstanceId": missing, "RegionId": REGION}
    assert len(provider.tea.sent) == 1  # a 4xx is not sent again

    response = provider.go.call("DescribeRegions", {})
    assert response["RegionIds"]["KVStoreRegion"][0]["RegionId"] == REGION
    sent = provider.go.sent[-1]
    query = query_of(sent)
    assert sent.content == b""
    assert query["RegionId"] == REGION and query["SignatureType"] == ""
    assert query["Format"] == "JSON" and query["Action"] == "DescribeRegions"


# ------------------------------------------------------------------ alicloud_kvstore_account


def _account_configs(instance: Instance, prefix: str) -> list[AccountConfig]:
    """Ten blocks that use every optional attribute somewhere, and leave each unset somewhere."""
    out = []
    for i in range(PARALLELISM):
        out.append(
            AccountConfig(
                instance_id=instance.instance_id,
                account_name=f"{prefix}_{i}",
                account_password=new_password("Tf_1"),
                account_privilege=("RoleReadOnly", "RoleReadWrite", None)[i % 3],
                description=f"tf_account-{i}" if i % 4 else None,
                account_type="Normal" if i % 2 else None,
            )
        )
    return out


def _changed(config: AccountConfig, i: int) -> AccountConfig:
    """The second apply: the privilege flipped, a new description and a new password."""
    privilege = "RoleReadWrite" if config.account_privilege == "RoleReadOnly" else "RoleReadOnly"
    return replace(
        config,
        account_privilege=privilege,
        description=f"changed_by_terraform-{i}",
        account_password=new_password("Tf_2"),
    )


@pytest.mark.parametrize("node_type", [MASTER_SLAVE, STAND_ALONE])
def test_kvstore_account_lifecycle(
    provider: Provider, shared: dict[str, Instance], node_type: str
) -> None:
    instance = shared[node_type]
    resource = AccountResource(provider)
    prefix = f"tf_{secrets.token_hex(3)}"
    configs = _account_configs(instance, prefix)
    ids = [account_id(c.instance_id, c.account_name) for c in configs]

    # ---- terraform apply: ten creates on one instance at once
    states = in_parallel(resource.create, configs)
    assert [s["id"] for s in states] == ids  # built from InstanceId and AcountName
    for config, state in zip(configs, states, strict=True):
        assert account_diff(config, state) == {}, state
        assert state["status"] == "Available"
        assert state["account_type"] == "Normal"
        assert state["account_privilege"] == (config.account_privilege or "RoleReadWrite")
    assert "TaskExists" not in provider.log.codes()
    creates = provider.log.of("CreateAccount")
    assert len(creates) == PARALLELISM, creates  # each succeeded at once: no retry
    assert provider.log.max_in_flight("CreateAccount") >= 2  # they did run together
    tokens = [
        form_of(r)["ClientToken"]
        for r in provider.tea.sent
        if r.headers["x-acs-action"] == "CreateAccount"
    ]
    assert len(set(tokens)) == PARALLELISM
    assert all(t.startswith("TF-CreateAccount-") and len(t) <= 64 for t in tokens), tokens
    for config in configs:
        assert_only_password(instance, config.account_name, config.account_password, None)
        check_privilege(
            instance,
            config.account_name,
            config.account_password,
            config.account_privilege or "RoleReadWrite",
        )

    # ---- terraform plan: a refresh of each, no diff
    refreshed = in_parallel(
        lambda c: resource.read(account_id(c.instance_id, c.account_name), c), configs
    )
    assert refreshed == states
    assert all(account_diff(c, s) == {} for c, s in zip(configs, refreshed, strict=True))

    # ---- the data source [go-sdk], with the fields the resource has
    listed = kvstore_accounts_data_source(provider, instance.instance_id, name_regex=f"^{prefix}_")
    assert sorted(listed["ids"]) == sorted(ids)
    by_id = {a["id"]: a for a in listed["accounts"]}
    for state in states:
        seen = by_id[state["id"]]
        for key in ("account_name", "account_type", "instance_id", "status", "account_privilege"):
            assert seen[key] == state[key], key
        assert (seen["description"] or "") == (state["description"] or "")
    one = kvstore_accounts_data_source(
        provider, instance.instance_id, account_name=configs[3].account_name
    )
    assert one["ids"] == [ids[3]]
    everyone = kvstore_accounts_data_source(provider, instance.instance_id)
    supers = {a["account_name"] for a in everyone["accounts"] if a["account_type"] == "Super"}
    assert supers == {"default", instance.instance_id}
    go_sent = provider.go.sent[-1]
    assert query_of(go_sent)["InstanceId"] == instance.instance_id and go_sent.content == b""

    # ---- the second apply: privilege, description and password of all ten at once
    changed = [_changed(c, i) for i, c in enumerate(configs)]
    updated = in_parallel(
        lambda pair: resource.update(account_id(pair[0].instance_id, pair[0].account_name), *pair),
        list(zip(configs, changed, strict=True)),
    )
    for config, state in zip(changed, updated, strict=True):
        assert state is not None
        assert account_diff(config, state) == {}, state
        assert state["status"] == "Available"
    for action in ("GrantAccountPrivilege", "ModifyAccountDescription", "ResetAccountPassword"):
        assert len(provider.log.of(action)) == PARALLELISM, action
    assert "TaskExists" not in provider.log.codes()
    for old, new in zip(configs, changed, strict=True):
        assert_only_password(instance, new.account_name, new.account_password, old.account_password)
        assert new.account_privilege is not None
        check_privilege(instance, new.account_name, new.account_password, new.account_privilege)

    # ---- terraform import: the id alone, then Read
    for rid, state in zip(ids, updated, strict=True):
        imported = resource.import_(rid)
        assert imported is not None
        assert state is not None
        ignore = {"account_password"}  # never read back (ImportStateVerifyIgnore)
        assert {k: v for k, v in imported.items() if k not in ignore} == {
            k: v for k, v in state.items() if k not in ignore
        }

    # ---- terraform destroy: ten deletes at once, each waits until DescribeAccounts is empty
    in_parallel(resource.delete, ids)
    assert resource.ignored_delete_errors == []
    assert "TaskExists" not in provider.log.codes()
    for config in changed:
        for port in instance.node_ports:
            assert_wrongpass(port, config.account_name, config.account_password)
    assert [resource.read(rid, None) for rid in ids] == [None] * PARALLELISM  # dropped
    gone = kvstore_accounts_data_source(provider, instance.instance_id, name_regex=f"^{prefix}_")
    assert gone == {"ids": [], "names": [], "accounts": []}

    # ---- destroy again (state out of date): the account is not found, which is success
    for rid in ids[:3]:
        resource.delete(rid)
    assert [tea_error(e) for e in resource.ignored_delete_errors] == [ACCOUNT_NOT_FOUND] * 3


def test_kvstore_account_of_a_deleted_instance(provider: Provider) -> None:
    """Destroying an account whose instance is gone: InvalidInstanceId.NotFound, success too;
    a refresh drops it from the state."""
    resource = AccountResource(provider)
    rid = account_id("r-" + "0" * 18, "tf_orphan")
    resource.delete(rid)
    assert [tea_error(e) for e in resource.ignored_delete_errors] == [INSTANCE_NOT_FOUND]
    assert resource.read(rid, None) is None


# ----------------------------------------------------------------- alicloud_kvstore_instance


def _config_on_nodes(server: LiveServer, instance_id: str, name: str) -> dict[int, str]:
    """``CONFIG GET name`` on every node of the instance, as rkvstore's management user."""
    mgmt = management_password(server, instance_id)
    out = {}
    for node in node_files(server, instance_id):
        with connect(node.port, MANAGEMENT_USER, mgmt) as client:
            out[node.port] = client.config_get(name)[name]
    return out


def _last_read(provider: Provider, before: int) -> list[str]:
    """The actions sent since call ``before``, repeated polls of one action folded."""
    out: list[str] = []
    for call in provider.log.calls[before:]:
        if not out or out[-1] != call.action:
            out.append(call.action)
    return out


def _instance_config(prefix: str, **settings: Any) -> InstanceConfig:
    """A new master-replica instance's block, named ``prefix`` and a random suffix."""
    return InstanceConfig(
        db_instance_name=f"{prefix}-{secrets.token_hex(3)}",
        password=new_password("Tf_1"),
        instance_class="redis.master.small.default",
        engine_version="7.0",
        zone_id=f"{REGION}-h",
        node_type=MASTER_SLAVE,
        **settings,
    )


def test_kvstore_instance_lifecycle(live_server: LiveServer, provider: Provider) -> None:
    resource = InstanceResource(provider)
    config = _instance_config("tf-replay", config={"maxmemory-policy": "volatile-lru"})
    iid: str | None = None
    try:
        # ---- terraform apply: CreateInstance, wait Normal, the config it sets, then Read
        state = resource.create(config)
        iid = state["id"]
        create = form_of(
            next(r for r in provider.tea.sent if r.headers["x-acs-action"] == "CreateInstance")
        )
        assert create["NetworkType"] == "CLASSIC" and create["Token"].startswith(
            "TF-CreateInstance-"
        )
        assert (create["AutoUseCoupon"], create["GlobalInstance"]) == ("false", "false")
        assert instance_diff(config, state) == {}, state
        assert state["status"] == "Normal"
        assert state["instance_class"] == config.instance_class  # from RealInstanceClass
        assert state["config"] == {"maxmemory-policy": "volatile-lru"}
        assert state["payment_type"] == "PostPaid"
        assert isinstance(state["end_time"], str)
        assert set(_config_on_nodes(live_server, iid, "maxmemory-policy").values()) == {
            "volatile-lru"
        }
        assert len(node_files(live_server, iid)) == 2
        master = int(resource.describe(iid)["Port"])
        nodes = [master, *replica_ports(master, config.password, 1)]

        # ---- terraform plan: the whole read again, in the provider's order, no diff
        before = len(provider.log.calls)
        again = resource.read(iid, config)
        assert _last_read(provider, before) == INSTANCE_READ
        assert again == state
        assert again is not None and instance_diff(config, again) == {}

        # ---- the second apply: name, password and one parameter
        changed = replace(
            config,
            db_instance_name=config.db_instance_name + "-2",
            password=new_password("Tf_2"),
            config={"maxmemory-policy": "allkeys-lru"},
        )
        updated = resource.update(iid, config, changed)
        assert updated is not None and instance_diff(changed, updated) == {}, updated
        assert updated["db_instance_name"] == changed.db_instance_name
        assert set(_config_on_nodes(live_server, iid, "maxmemory-policy").values()) == {
            "allkeys-lru"
        }
        for port in nodes:
            assert can_login(port, "default", changed.password)
            assert_wrongpass(port, "default", config.password)

        # ---- terraform import: the id alone, then Read (config: every parameter)
        imported = resource.import_(iid)
        assert imported is not None
        assert imported["config"]["maxmemory-policy"] == "allkeys-lru"
        ignore = {"password", "auto_renew_period", "config"}
        assert {k: v for k, v in imported.items() if k not in ignore} == {
            k: v for k, v in updated.items() if k not in ignore
        }

        # ---- terraform destroy: DeleteInstance, then wait until it is not found
        resource.delete(iid)
        assert resource.read(iid, None) is None
        with pytest.raises(TeaSdkError) as info:
            provider.tea.post("DeleteInstance", {"InstanceId": iid, "RegionId": REGION})
        assert tea_error(info.value) == INSTANCE_NOT_FOUND  # the provider's success
        resource.delete(iid)  # destroy again: not found first, nothing sent but the describe
        iid = None
    finally:
        if iid is not None:
            with rpc_client(live_server) as client:
                delete_instance(client, iid)


# ------------------------------------------- alicloud_kvstore_instance: what rkvstore refuses
#
# Each setting of issue 11 item 3, sent as the provider sends it (Update's call, its wire,
# its parameters), is answered with a 403 the provider does not retry, ends the apply
# before any wait, and leaves the instance as it was: the read is the same and so are the
# nodes' settings.

GO_QUERY_KEYS: Final = {
    "Version",
    "Action",
    "Format",
    "Timestamp",
    "SignatureMethod",
    "SignatureType",
    "SignatureVersion",
    "SignatureNonce",
    "AccessKeyId",
    "Signature",
}
VPC_REFUSED: Final = (
    "OperationDenied.VpcNotSupported",
    403,
    "rkvstore instances are on the classic network only: NetworkType VPC, VpcId and "
    "VSwitchId are not supported.",
)
NODE_SETTINGS: Final = ("bind", "tls-port", "save", "appendonly")


@dataclass(frozen=True)
class Refusal:
    change: dict[str, Any]  # the new value in the configuration
    action: str
    wire: str  # "go-sdk" or "tea-rpc"
    params: Callable[[str], dict[str, str]]  # the API parameters sent, by instance id
    code: str
    message: str  # "{current}": the whitelist the read answered


REFUSALS: Final = [
    Refusal(
        {"security_group_id": "sg-bp1tf0replay"},
        "ModifySecurityGroupConfiguration",
        "go-sdk",
        lambda iid: {"DBInstanceId": iid, "SecurityGroupId": "sg-bp1tf0replay"},
        "OperationDenied.SecurityGroupNotSupported",
        "rkvstore has no ECS security groups: none can be bound to an instance.",
    ),
    Refusal(
        {"ssl_enable": "Enable"},
        "ModifyInstanceSSL",
        "go-sdk",
        lambda iid: {"InstanceId": iid, "SSLEnabled": "Enable"},
        "OperationDenied.SSLNotSupported",
        "rkvstore does not set up TLS on an instance's nodes: SSL cannot be enabled or updated.",
    ),
    Refusal(
        {"backup_period": ("Tuesday", "Wednesday"), "backup_time": "10:00Z-11:00Z"},
        "ModifyBackupPolicy",
        "go-sdk",
        lambda iid: {
            "InstanceId": iid,
            "PreferredBackupPeriod": "Tuesday,Wednesday",
            "PreferredBackupTime": "10:00Z-11:00Z",
        },
        "OperationDenied.BackupNotSupported",
        "rkvstore runs no backups: a backup policy cannot be set.",
    ),
    Refusal(
        {"security_ips": ("10.23.12.24",)},
        "ModifySecurityIps",
        "go-sdk",
        lambda iid: {"InstanceId": iid, "ModifyMode": "Cover", "SecurityIps": "10.23.12.24"},
        "OperationDenied.SecurityIps",
        "rkvstore cannot filter clients by address (Redis has no such setting): the whitelist "
        "of the instance is {current}, as its nodes' bind address makes it, and cannot be "
        "changed.",
    ),
    Refusal(
        {"tde_status": "Enabled"},
        "ModifyInstanceTDE",
        "tea-rpc",
        lambda iid: {"InstanceId": iid, "TDEStatus": "Enabled"},
        "OperationDenied.TDENotSupported",
        "rkvstore does not encrypt data at rest: TDE cannot be enabled.",
    ),
]


def _config_of(state: Mapping[str, Any], password: str) -> InstanceConfig:
    """The configuration an imported instance is written down with: what it reads as."""
    return InstanceConfig(
        db_instance_name=state["db_instance_name"],
        password=password,
        instance_class=state["instance_class"],
        engine_version=state["engine_version"],
        zone_id=state["zone_id"],
        node_type=state["node_type"],
    )


def _node_settings(server: LiveServer, instance_id: str) -> dict[int, dict[str, str | None]]:
    mgmt = management_password(server, instance_id)
    out: dict[int, dict[str, str | None]] = {}
    for node in node_files(server, instance_id):
        with connect(node.port, MANAGEMENT_USER, mgmt) as client:
            out[node.port] = {n: client.config_get(n).get(n) for n in NODE_SETTINGS}
    return out


def _api_params(provider: Provider, wire: str) -> dict[str, str]:
    """The API parameters of the last request on ``wire``, after checking the protocol
    parameters are where that wire puts them."""
    if wire == "tea-rpc":
        sent = provider.tea.sent[-1]
        assert set(query_of(sent)) == TEA_QUERY_KEYS
        return form_of(sent)
    sent = provider.go.sent[-1]
    assert sent.content == b""
    query = query_of(sent)
    assert set(query) >= GO_QUERY_KEYS and query.pop("RegionId") == REGION
    return {k: v for k, v in query.items() if k not in GO_QUERY_KEYS}


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.action)
def test_kvstore_instance_refusals(
    live_server: LiveServer, provider: Provider, shared: dict[str, Instance], case: Refusal
) -> None:
    instance = shared[MASTER_SLAVE]
    iid = instance.instance_id
    resource = InstanceResource(provider)
    imported = resource.import_(iid)  # terraform import, then the configuration written for it
    assert imported is not None
    config = _config_of(imported, instance.password)
    before = resource.read(iid, config)
    assert before is not None and instance_diff(config, before) == {}, before
    nodes = _node_settings(live_server, iid)
    assert len(nodes) == 2
    first = len(provider.log.calls)

    # ---- terraform apply with the one setting changed
    with pytest.raises((GoServerError, TeaSdkError)) as info:
        resource.update(iid, config, replace(config, **case.change))
    error = info.value
    assert isinstance(error, GoServerError | TeaSdkError)
    current = ",".join(before["security_ips"])
    assert (error.code, error.status, error.api_message) == (
        case.code,
        403,
        case.message.format(current=current),
    )
    # sent once as the provider sends it; not retried (a 4xx), no wait for Normal after it
    assert [c.action for c in provider.log.calls[first:]] == [case.action]
    assert provider.log.calls[-1].wire == case.wire
    assert not need_retry(error) and not no_code_regex_retry(error)
    assert _api_params(provider, case.wire) == case.params(iid)

    # ---- nothing changed: the next plan reads the same, the nodes kept their settings
    assert resource.read(iid, config) == before
    assert _node_settings(live_server, iid) == nodes


def test_kvstore_instance_in_a_vpc_is_refused(live_server: LiveServer, provider: Provider) -> None:
    """``vswitch_id`` set: the provider asks the VPC API for the VSwitch's VPC, then sends
    CreateInstance with NetworkType=VPC, VpcId and VSwitchId. Refused, once, and no
    instance is created (not a classic one in its place)."""
    config = _instance_config("tf-vpc", vswitch_id="vsw-bp1tf0replay", vpc_id="vpc-bp1tf0replay")
    with rpc_client(live_server) as client:
        listed = client.call("DescribeInstances", {"PageSize": 50})
    before = {i["InstanceId"] for i in listed["Instances"]["KVStoreInstance"]}

    with pytest.raises(TeaSdkError) as info:
        InstanceResource(provider).create(config)
    assert tea_error(info.value) == VPC_REFUSED
    assert info.value.message.startswith("code: 403, rkvstore instances are on the classic")
    assert not no_code_regex_retry(info.value)  # CreateInstance's retry rule
    assert [c.action for c in provider.log.calls] == ["CreateInstance"]
    sent = form_of(provider.tea.sent[-1])
    assert (sent["NetworkType"], sent["VpcId"], sent["VSwitchId"]) == (
        "VPC",
        "vpc-bp1tf0replay",
        "vsw-bp1tf0replay",
    )
    assert sent["InstanceName"] == config.db_instance_name
    assert sent["Token"].startswith("TF-CreateInstance-")

    with rpc_client(live_server) as client:
        listed = client.call("DescribeInstances", {"PageSize": 50})
    after = listed["Instances"]["KVStoreInstance"]
    assert {i["InstanceId"] for i in after} == before
    assert config.db_instance_name not in {i.get("InstanceName") for i in after}
