"""RAM end to end through the official SDKs: who may reset what, and the RAM API itself.

A root key manages users, keys, policies and groups with ``alibabacloud-ram20150501``
(docs/ram-wire.md) against a live ``rkvstore serve``; the RAM users' keys then call
R-kvstore actions through the new SDK (V3) and, once, the legacy one. Every effect
on passwords is checked on the real Redis nodes with redis-py.

One server serves the module, with two STAND_ALONE instances (``a`` and ``b``),
each with a custom account ``app``. Users and policies get unique names, so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_ram20150501 import models as ram_models
from alibabacloud_ram20150501.client import Client as RamClient
from alibabacloud_tea_openapi import utils_models as open_api_models
from aliyunsdkcore.acs_exception.exceptions import ServerException as LegacyServerException
from aliyunsdkr_kvstore.request.v20150101.ResetAccountPasswordRequest import (
    ResetAccountPasswordRequest,
)
from darabonba.runtime import RuntimeOptions

from tests.api.instances import STAND_ALONE, Instance, can_login, new_password, provision
from tests.api.ram_helpers import (
    ACCOUNT_ID,
    DATE,
    FORBIDDEN_RAM,
    RAM_VERSION,
    SECRETS_SEEN,
    Principal,
    attach_to_group,
    attach_to_user,
    create_account,
    create_policy,
    create_tenant,
    describe_accounts,
    discover_account_id,
    document,
    expect_denied,
    expect_error,
    instance_arn,
    keep_secret,
    make_user,
    new_key,
    ram_server,
    reset,
    root_of,
    secrets_in_server_files,
    statement,
    unique,
)
from tests.api.sdk_clients import legacy_client, legacy_request, rpc_params
from tests.conftest import LiveServer

ACCOUNT = "app"  # the custom account on both instances

# RAM's own errors (docs/ram-wire.md §4; src/rkvstore/errors.py)
USER_NOT_EXIST = ("EntityNotExist.User", 404, "The user does not exist.")
USER_EXISTS = ("EntityAlreadyExists.User", 409, "The user does already EXIST.")
USER_HAS_KEY = (
    "DeleteConflict.User.AccessKey",
    409,
    "The user CAN NOT has any access key while deleting the user.",
)
USER_IN_GROUP = (
    "DeleteConflict.User.Group",
    409,
    "The user CAN NOT be in any group while deleting the user.",
)
USER_HAS_POLICY = (
    "DeleteConflict.User.Policy",
    409,
    "The user CAN NOT has any attached policy while deleting the user.",
)
KEY_LIMIT = (
    "LimitExceeded.User.AccessKey",
    409,
    "The access key count of the user access keys beyond the current limits.",
)
POLICY_NOT_EXIST = ("EntityNotExist.Policy", 404, "The policy does not exist.")
POLICY_EXISTS = ("EntityAlreadyExists.Policy", 409, "The policy does already EXIST.")
POLICY_TYPE = ("InvalidParameter.PolicyType", 400, 'The parameter - "PolicyType" is incorrect.')
GROUP_NOT_EXIST = ("EntityNotExist.Group", 404, "The group does not exist.")
GROUP_EXISTS = ("EntityAlreadyExists.Group", 409, "The group does already EXIST.")
ALREADY_JOINED = ("EntityAlreadyExists.User.Group", 409, "The user has already joined the group.")
NOT_JOINED = ("EntityNotExist.User.Group", 404, "The user has not joined the group.")
ALREADY_ATTACHED = (
    "EntityAlreadyExists.User.Policy",
    409,
    "The user has already been attached this policy.",
)
NOT_ATTACHED = (
    "EntityNotExist.User.Policy",
    404,
    "The indicate policy of the user does not exist.",
)
VERSION_LIMIT = (
    "LimitExceeded.Policy.Version",
    409,
    "The count of policy version beyond the current limits.",
)
POLICY_ON_USER = (
    "DeleteConflict.Policy.User",
    409,
    "The policy CAN NOT been attached to any user while deleting the policy.",
)
POLICY_ON_GROUP = (
    "DeleteConflict.Policy.Group",
    409,
    "The policy CAN NOT been attached to any group while deleting the policy.",
)
POLICY_HAS_VERSIONS = (
    "DeleteConflict.Policy.Version",
    409,
    "The policy CAN NOT has any version except the default version.",
)
NAME_CHARS = (
    "InvalidParameter.UserName.InvalidChars",
    400,
    'The parameter - "UserName" contains invalid chars.',
)
NAME_LENGTH = (
    "InvalidParameter.UserName.Length",
    400,
    'The parameter - "UserName" beyond the length limit.',
)
KEY_DISABLED = ("Forbidden.AccessKeyDisabled", 403, "The Access Key is disabled.")
KEY_NOT_FOUND = ("InvalidAccessKeyId.NotFound", 404, "Specified access key is not found.")
ROTATE = "DeleteOldestNonDefaultVersionWhenLimitExceeded"


def malformed(reason: str) -> tuple[str, int, str]:
    return ("MalformedPolicyDocument", 400, reason)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Target:
    """A shared instance and the current password of its custom account ``app``."""

    instance: Instance
    password: str

    @property
    def id(self) -> str:
        return self.instance.instance_id

    @property
    def port(self) -> int:
        return self.instance.port


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with ram_server(tmp_path_factory.mktemp("ram-sdk")) as server:
        yield server


@pytest.fixture(scope="module")
def root(live_server: LiveServer) -> Principal:
    return root_of(live_server)


@pytest.fixture(scope="module")
def account_id(root: Principal) -> str:
    return discover_account_id(root)


@pytest.fixture(scope="module")
def ram(root: Principal) -> RamClient:
    """The root's RAM client (V3 signing, the SDK's default)."""
    return root.ram()


@pytest.fixture(scope="module")
def targets(live_server: LiveServer, root: Principal) -> Iterator[tuple[Target, Target]]:
    with provision(live_server, STAND_ALONE, STAND_ALONE) as (a, b):
        made = []
        for instance in (a, b):
            password = new_password()
            create_account(root.kv(), instance.instance_id, ACCOUNT, password)
            assert can_login(instance.port, ACCOUNT, password)
            made.append(Target(instance, password))
        yield made[0], made[1]


@pytest.fixture(scope="module")
def one_instance_user(
    root: Principal, account_id: str, targets: tuple[Target, Target]
) -> Principal:
    """The issue's colleague: ResetAccountPassword and DescribeAccounts on instance a only."""
    a, _ = targets
    actions = ["kvstore:ResetAccountPassword", "kvstore:DescribeAccounts"]
    return make_user(root, account_id, documents=[document(statement(actions, instance_arn(a.id)))])


def user_with(
    root: Principal, account_id: str, *docs: str, system: tuple[str, ...] = ()
) -> Principal:
    return make_user(root, account_id, documents=docs, system=system)


def describe_instances(principal: Principal) -> Any:
    return principal.kv().describe_instances(kv_models.DescribeInstancesRequest()).body


def raw_ram_call(client: RamClient, action: str, query: dict[str, str]) -> dict[str, Any]:
    """A RAM action through the SDK's ``call_api``: the JSON body exactly as it came."""
    request = open_api_models.OpenApiRequest(query=query)
    result = client.call_api(rpc_params(action, RAM_VERSION), request, RuntimeOptions())
    assert result["statusCode"] == 200
    body: dict[str, Any] = result["body"]
    return body


def model_fields(model: Any) -> dict[str, Any]:
    """Every attribute the SDK model declares, with the value the server gave it."""
    return {k: v for k, v in vars(model).items() if not k.startswith("_")}


def assert_every_field(model: Any) -> None:
    missing = [k for k, v in model_fields(model).items() if v is None]
    assert not missing, f"{type(model).__name__} lacks {missing}"


# --------------------------------------------------------------------------- the scenario


def test_a_key_that_resets_on_one_instance_only(
    root: Principal, one_instance_user: Principal, targets: tuple[Target, Target]
) -> None:
    a, b = targets
    kv = one_instance_user.kv()

    old, new = a.password, new_password()
    reset(kv, a.id, ACCOUNT, new)
    assert can_login(a.port, ACCOUNT, new)
    assert not can_login(a.port, ACCOUNT, old)
    a.password = new
    names = [acc.account_name for acc in describe_accounts(kv, a.id).accounts.account]
    assert ACCOUNT in names

    user = one_instance_user
    expect_denied(
        lambda: reset(kv, b.id, ACCOUNT, new_password()), user, "kvstore:ResetAccountPassword"
    )
    assert can_login(b.port, ACCOUNT, b.password), "a denied reset changed the password"
    expect_denied(lambda: describe_accounts(kv, b.id), user, "kvstore:DescribeAccounts")
    for target in (a, b):
        expect_denied(
            lambda t=target: create_account(
                kv, t.id, unique("x").replace("-", "_"), new_password()
            ),
            user,
            "kvstore:CreateAccount",
        )
    expect_denied(lambda: describe_instances(user), user, "kvstore:DescribeInstances")
    for target in (a, b):  # the denied CreateAccount created nothing
        listed = describe_accounts(root.kv(), target.id).accounts.account
        assert {acc.account_name for acc in listed} == {ACCOUNT, "default", target.id}


def test_the_legacy_sdk_sees_the_same_denial(
    one_instance_user: Principal, targets: tuple[Target, Target]
) -> None:
    a, b = targets
    user = one_instance_user

    def legacy_reset(instance_id: str, password: str) -> dict[str, Any]:
        request = ResetAccountPasswordRequest()
        request.set_InstanceId(instance_id)
        request.set_AccountName(ACCOUNT)
        request.set_AccountPassword(password)
        client = legacy_client(user.access_key_id, user.access_key_secret)
        try:
            raw = client.do_action_with_exception(legacy_request(request, user.endpoint))
        finally:
            client.session.close()
        body: dict[str, Any] = json.loads(raw)
        return body

    new = new_password()
    assert "RequestId" in legacy_reset(a.id, new)
    assert can_login(a.port, ACCOUNT, new)
    a.password = new

    with pytest.raises(LegacyServerException) as info:
        legacy_reset(b.id, new_password())
    exc = info.value
    code, status, message = FORBIDDEN_RAM
    assert (exc.get_error_code(), exc.get_http_status(), exc.get_error_msg()) == (
        code,
        status,
        message,
    )
    assert can_login(b.port, ACCOUNT, b.password)


# --------------------------------------------------------------------------- evaluation, end to end


def test_an_explicit_deny_through_a_group_beats_an_allow_on_the_user(
    root: Principal, ram: RamClient, account_id: str, targets: tuple[Target, Target]
) -> None:
    a, b = targets
    user = user_with(root, account_id, document(statement("kvstore:DescribeAccounts")))
    group = unique("g")
    ram.create_group(ram_models.CreateGroupRequest(group_name=group))
    deny = document(statement("kvstore:DescribeAccounts", instance_arn(a.id), effect="Deny"))
    attach_to_group(ram, group, create_policy(ram, deny))
    kv = user.kv()
    describe_accounts(kv, a.id)  # allowed before joining

    ram.add_user_to_group(
        ram_models.AddUserToGroupRequest(group_name=group, user_name=user.user_name)
    )
    expect_denied(
        lambda: describe_accounts(kv, a.id), user, "kvstore:DescribeAccounts", "ExplicitDeny"
    )
    describe_accounts(kv, b.id)  # the Deny names instance a only

    ram.remove_user_from_group(
        ram_models.RemoveUserFromGroupRequest(group_name=group, user_name=user.user_name)
    )
    describe_accounts(kv, a.id)


CONDITIONS = [
    pytest.param(
        {"StringLike": {"acs:SourceIp": "127.0.0.*"}}, True, id="StringLike-SourceIp-match"
    ),
    pytest.param({"StringLike": {"acs:SourceIp": "10.*"}}, False, id="StringLike-SourceIp-other"),
    pytest.param({"IpAddress": {"acs:SourceIp": "127.0.0.0/8"}}, True, id="IpAddress-in-CIDR"),
    pytest.param({"IpAddress": {"acs:SourceIp": "10.0.0.0/8"}}, False, id="IpAddress-outside"),
    pytest.param(
        {"DateLessThan": {"acs:CurrentTime": "2999-01-01T00:00:00Z"}},
        True,
        id="DateLessThan-future",
    ),
    pytest.param(
        {"DateLessThan": {"acs:CurrentTime": "2001-01-01T00:00:00Z"}}, False, id="DateLessThan-past"
    ),
    pytest.param({"Bool": {"acs:SecureTransport": "false"}}, True, id="SecureTransport-false"),
    pytest.param({"Bool": {"acs:SecureTransport": "true"}}, False, id="SecureTransport-true"),
]


@pytest.mark.parametrize(("condition", "allowed"), CONDITIONS)
def test_conditions_decide(
    root: Principal,
    account_id: str,
    targets: tuple[Target, Target],
    condition: dict[str, Any],
    allowed: bool,
) -> None:
    a, _ = targets
    allow = statement("kvstore:DescribeAccounts", instance_arn(a.id), condition=condition)
    user = user_with(root, account_id, document(allow))
    if allowed:
        assert describe_accounts(user.kv(), a.id).accounts.account
    else:
        expect_denied(lambda: describe_accounts(user.kv(), a.id), user, "kvstore:DescribeAccounts")


def test_a_condition_on_a_deny_both_ways(
    root: Principal, account_id: str, targets: tuple[Target, Target]
) -> None:
    """A Deny applies only where its condition holds: the connection is not secure here."""
    a, _ = targets
    applies = {"Bool": {"acs:SecureTransport": "false"}}
    does_not = {"Bool": {"acs:SecureTransport": "true"}}
    allow = statement("kvstore:DescribeAccounts")
    for condition, denied in ((applies, True), (does_not, False)):
        deny = statement("kvstore:DescribeAccounts", effect="Deny", condition=condition)
        user = user_with(root, account_id, document(allow, deny))
        if denied:
            expect_denied(
                lambda u=user: describe_accounts(u.kv(), a.id),
                user,
                "kvstore:DescribeAccounts",
                "ExplicitDeny",
            )
        else:
            describe_accounts(user.kv(), a.id)


def test_not_resource_wildcards_and_action_case(
    root: Principal, account_id: str, targets: tuple[Target, Target]
) -> None:
    a, b = targets
    # NotResource: everything but instance a.
    not_a = {
        "Effect": "Allow",
        "Action": "kvstore:DescribeAccounts",
        "NotResource": instance_arn(a.id),
    }
    user = user_with(root, account_id, document(not_a))
    describe_accounts(user.kv(), b.id)
    expect_denied(lambda: describe_accounts(user.kv(), a.id), user, "kvstore:DescribeAccounts")
    # "?" stands for exactly one character; actions match whatever their case.
    one_char = instance_arn(a.id[:-1] + "?")
    user = user_with(root, account_id, document(statement("KVStore:describeACCOUNTS", one_char)))
    describe_accounts(user.kv(), a.id)
    if a.id[:-1] != b.id[:-1]:
        expect_denied(lambda: describe_accounts(user.kv(), b.id), user, "kvstore:DescribeAccounts")
    too_short = instance_arn(a.id[:-2] + "?")
    user = user_with(root, account_id, document(statement("kvstore:DescribeAccounts", too_short)))
    expect_denied(lambda: describe_accounts(user.kv(), a.id), user, "kvstore:DescribeAccounts")
    # NotAction: every kvstore action but the resets.
    allow_but_reset = {"Effect": "Allow", "NotAction": "kvstore:Reset*", "Resource": "*"}
    user = user_with(root, account_id, document(allow_but_reset))
    describe_accounts(user.kv(), a.id)
    expect_denied(
        lambda: reset(user.kv(), a.id, ACCOUNT, new_password()),
        user,
        "kvstore:ResetAccountPassword",
    )


# --------------------------------------------------------------------------- keys


def test_an_inactive_key_is_refused_until_active_and_a_deleted_one_is_unknown(
    root: Principal, ram: RamClient, account_id: str
) -> None:
    user = user_with(root, account_id, system=("AliyunKvstoreReadOnlyAccess",))
    describe_instances(user)

    def set_status(status: str) -> None:
        ram.update_access_key(
            ram_models.UpdateAccessKeyRequest(
                user_access_key_id=user.access_key_id, status=status, user_name=user.user_name
            )
        )

    set_status("Inactive")
    expect_error(lambda: describe_instances(user), KEY_DISABLED)
    expect_error(
        lambda: user.ram().list_access_keys(ram_models.ListAccessKeysRequest()), KEY_DISABLED
    )
    set_status("Active")
    describe_instances(user)

    ram.delete_access_key(
        ram_models.DeleteAccessKeyRequest(
            user_access_key_id=user.access_key_id, user_name=user.user_name
        )
    )
    expect_error(lambda: describe_instances(user), KEY_NOT_FOUND)


# ---------------------------------------------------------------- RAM needs RAM permission


def test_a_user_may_manage_its_own_keys_with_a_policy_on_itself(
    root: Principal, ram: RamClient, account_id: str
) -> None:
    """No UserName: the key actions act on the caller (and are authorized on its own ARN)."""
    user = make_user(root, account_id)
    own_keys = [
        "ram:CreateAccessKey",
        "ram:ListAccessKeys",
        "ram:UpdateAccessKey",
        "ram:DeleteAccessKey",
    ]
    arn = f"acs:ram:*:{account_id}:user/{user.user_name}"
    attach_to_user(ram, str(user.user_name), create_policy(ram, document(statement(own_keys, arn))))
    mine = user.ram()

    listed = mine.list_access_keys(ram_models.ListAccessKeysRequest()).body.access_keys.access_key
    assert [k.access_key_id for k in listed] == [user.access_key_id]
    second = mine.create_access_key(ram_models.CreateAccessKeyRequest()).body.access_key
    keep_secret(second.access_key_secret)
    owned = ram.list_access_keys(ram_models.ListAccessKeysRequest(user_name=user.user_name)).body
    assert {k.access_key_id for k in owned.access_keys.access_key} == {
        user.access_key_id,
        second.access_key_id,
    }
    expect_error(lambda: mine.create_access_key(ram_models.CreateAccessKeyRequest()), KEY_LIMIT)
    mine.delete_access_key(
        ram_models.DeleteAccessKeyRequest(user_access_key_id=second.access_key_id)
    )

    other = unique("other")
    ram.create_user(ram_models.CreateUserRequest(user_name=other))
    expect_denied(
        lambda: mine.list_access_keys(ram_models.ListAccessKeysRequest(user_name=other)),
        user,
        "ram:ListAccessKeys",
    )
    expect_denied(
        lambda: mine.create_access_key(ram_models.CreateAccessKeyRequest(user_name=other)),
        user,
        "ram:CreateAccessKey",
    )
    # The root's own keys are not the user's to list.
    root_keys = ram.list_access_keys(ram_models.ListAccessKeysRequest()).body.access_keys
    assert root.access_key_id in {k.access_key_id for k in root_keys.access_key}
    assert user.access_key_id not in {k.access_key_id for k in root_keys.access_key}


def test_full_kvstore_access_is_not_ram_access(
    root: Principal, ram: RamClient, account_id: str
) -> None:
    user = user_with(root, account_id, system=("AliyunKvstoreFullAccess",))
    describe_instances(user)
    name = unique("made-by-user")
    create = ram_models.CreateUserRequest(user_name=name)
    expect_denied(lambda: user.ram().create_user(create), user, "ram:CreateUser")
    expect_error(lambda: ram.get_user(ram_models.GetUserRequest(user_name=name)), USER_NOT_EXIST)

    attach_to_user(ram, str(user.user_name), create_policy(ram, document(statement("ram:*"))))
    made = user.ram().create_user(create).body.user
    assert made.user_name == name


def test_read_only_system_policy(
    root: Principal, account_id: str, targets: tuple[Target, Target]
) -> None:
    a, _ = targets
    user = user_with(root, account_id, system=("AliyunKvstoreReadOnlyAccess",))
    ids = {i.instance_id for i in describe_instances(user).instances.kvstore_instance}
    assert {a.id, targets[1].id} <= ids
    assert describe_accounts(user.kv(), a.id).accounts.account
    expect_denied(
        lambda: reset(user.kv(), a.id, ACCOUNT, new_password()),
        user,
        "kvstore:ResetAccountPassword",
    )
    assert can_login(a.port, ACCOUNT, a.password)


# --------------------------------------------------------------------------- RAM's own errors


def test_user_errors(ram: RamClient) -> None:
    ghost = unique("ghost")
    expect_error(lambda: ram.get_user(ram_models.GetUserRequest(user_name=ghost)), USER_NOT_EXIST)
    expect_error(
        lambda: ram.create_access_key(ram_models.CreateAccessKeyRequest(user_name=ghost)),
        USER_NOT_EXIST,
    )
    expect_error(
        lambda: ram.delete_user(ram_models.DeleteUserRequest(user_name=ghost)), USER_NOT_EXIST
    )
    name = unique("dup")
    ram.create_user(ram_models.CreateUserRequest(user_name=name))
    expect_error(lambda: ram.create_user(ram_models.CreateUserRequest(user_name=name)), USER_EXISTS)
    other = unique("other")
    ram.create_user(ram_models.CreateUserRequest(user_name=other))
    expect_error(
        lambda: ram.update_user(ram_models.UpdateUserRequest(user_name=other, new_user_name=name)),
        USER_EXISTS,
    )


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("bad name", NAME_CHARS),
        ("bad/name", NAME_CHARS),
        ("名字", NAME_CHARS),
        ("x" * 65, NAME_LENGTH),
    ],
)
def test_user_name_rules(ram: RamClient, name: str, error: tuple[str, int, str]) -> None:
    expect_error(lambda: ram.create_user(ram_models.CreateUserRequest(user_name=name)), error)
    expect_error(lambda: ram.get_user(ram_models.GetUserRequest(user_name=name)), error)


def test_user_name_at_the_limit_is_fine(ram: RamClient) -> None:
    name = "x" * 56 + "-" + "._-aZ09"
    assert len(name) == 64
    made = ram.create_user(ram_models.CreateUserRequest(user_name=name)).body.user
    assert made.user_name == name


def test_delete_user_conflicts_in_order(ram: RamClient) -> None:
    name, group = unique("leaving"), unique("g")
    ram.create_user(ram_models.CreateUserRequest(user_name=name))
    key_id, _ = new_key(ram, name)
    ram.create_group(ram_models.CreateGroupRequest(group_name=group))
    ram.add_user_to_group(ram_models.AddUserToGroupRequest(group_name=group, user_name=name))
    attach_to_user(ram, name, "AliyunKvstoreReadOnlyAccess", "System")
    delete = ram_models.DeleteUserRequest(user_name=name)

    expect_error(lambda: ram.delete_user(delete), USER_HAS_KEY)
    ram.delete_access_key(
        ram_models.DeleteAccessKeyRequest(user_access_key_id=key_id, user_name=name)
    )
    expect_error(lambda: ram.delete_user(delete), USER_IN_GROUP)
    ram.remove_user_from_group(
        ram_models.RemoveUserFromGroupRequest(group_name=group, user_name=name)
    )
    expect_error(lambda: ram.delete_user(delete), USER_HAS_POLICY)
    ram.detach_policy_from_user(
        ram_models.DetachPolicyFromUserRequest(
            policy_type="System", policy_name="AliyunKvstoreReadOnlyAccess", user_name=name
        )
    )
    ram.delete_user(delete)
    expect_error(lambda: ram.get_user(ram_models.GetUserRequest(user_name=name)), USER_NOT_EXIST)


def test_two_keys_per_user(ram: RamClient) -> None:
    name = unique("keys")
    ram.create_user(ram_models.CreateUserRequest(user_name=name))
    first, _ = new_key(ram, name)
    new_key(ram, name)
    expect_error(
        lambda: ram.create_access_key(ram_models.CreateAccessKeyRequest(user_name=name)), KEY_LIMIT
    )
    ram.delete_access_key(
        ram_models.DeleteAccessKeyRequest(user_access_key_id=first, user_name=name)
    )
    new_key(ram, name)  # room again


MALFORMED = [
    pytest.param("{not json", "The policy document is not valid JSON.", id="not-json"),
    pytest.param(
        json.dumps({"Version": "1", "Statement": [{"Effect": "Allow", "Resource": "*"}]}),
        "Add an Action or NotAction element to the policy statement.",
        id="no-action",
    ),
    pytest.param(
        json.dumps(
            {"Version": "1", "Statement": [{"Effect": "allow", "Action": "*", "Resource": "*"}]}
        ),
        'The Effect element must be "Allow" or "Deny".',
        id="effect-case",
    ),
    pytest.param(
        json.dumps({"Version": "2", "Statement": [statement("*")]}),
        'The policy Version must be "1".',
        id="version",
    ),
    pytest.param(
        document(statement("*", condition={"IpAddress": {"acs:SourceIp": "not-an-ip"}})),
        'The IpAddress condition on "acs:SourceIp" has a value that is not'
        " an IP address or CIDR block.",
        id="bad-cidr",
    ),
    pytest.param(
        document(statement("*", condition={"StringLikeX": {"acs:SourceIp": "1"}})),
        'The condition operator "StringLikeX" is not supported.',
        id="operator",
    ),
]


@pytest.mark.parametrize(("doc", "reason"), MALFORMED)
def test_malformed_documents_are_refused_when_created(
    ram: RamClient, doc: str, reason: str
) -> None:
    name = unique("bad")
    expect_error(
        lambda: ram.create_policy(
            ram_models.CreatePolicyRequest(policy_name=name, policy_document=doc)
        ),
        malformed(reason),
    )
    expect_error(
        lambda: ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")),
        POLICY_NOT_EXIST,
    )
    good = create_policy(ram, document(statement("kvstore:Describe*")))
    expect_error(
        lambda: ram.create_policy_version(
            ram_models.CreatePolicyVersionRequest(
                policy_name=good, policy_document=doc, set_as_default=True
            )
        ),
        malformed(reason),
    )
    got = ram.get_policy(ram_models.GetPolicyRequest(policy_name=good, policy_type="Custom")).body
    assert got.policy.default_version == "v1"


def test_policy_errors(ram: RamClient) -> None:
    ghost = unique("ghost")
    for policy_type in ("Custom", "System"):
        expect_error(
            lambda t=policy_type: ram.get_policy(
                ram_models.GetPolicyRequest(policy_name=ghost, policy_type=t)
            ),
            POLICY_NOT_EXIST,
        )
    expect_error(
        lambda: ram.delete_policy(ram_models.DeletePolicyRequest(policy_name=ghost)),
        POLICY_NOT_EXIST,
    )
    expect_error(
        lambda: ram.create_policy_version(
            ram_models.CreatePolicyVersionRequest(
                policy_name=ghost, policy_document=document(statement("*"))
            )
        ),
        POLICY_NOT_EXIST,
    )
    user = unique("u")
    ram.create_user(ram_models.CreateUserRequest(user_name=user))
    expect_error(lambda: attach_to_user(ram, user, ghost), POLICY_NOT_EXIST)

    name = create_policy(ram, document(statement("kvstore:Describe*")))
    expect_error(lambda: create_policy(ram, document(statement("*")), name), POLICY_EXISTS)
    expect_error(
        lambda: create_policy(ram, document(statement("*")), "AliyunKvstoreFullAccess"),
        POLICY_EXISTS,
    )
    expect_error(
        lambda: ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Bogus")),
        POLICY_TYPE,
    )
    expect_error(lambda: attach_to_user(ram, user, name, "custom"), POLICY_TYPE)
    expect_error(
        lambda: ram.list_policies(ram_models.ListPoliciesRequest(policy_type="Everything")),
        POLICY_TYPE,
    )
    # A custom policy is not found as a system one.
    expect_error(
        lambda: ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="System")),
        POLICY_NOT_EXIST,
    )


def test_attachment_errors(ram: RamClient) -> None:
    user = unique("u")
    ram.create_user(ram_models.CreateUserRequest(user_name=user))
    policy = create_policy(ram, document(statement("kvstore:Describe*")))
    detach = ram_models.DetachPolicyFromUserRequest(
        policy_type="Custom", policy_name=policy, user_name=user
    )
    expect_error(lambda: ram.detach_policy_from_user(detach), NOT_ATTACHED)
    attach_to_user(ram, user, policy)
    expect_error(lambda: attach_to_user(ram, user, policy), ALREADY_ATTACHED)
    ram.detach_policy_from_user(detach)
    expect_error(lambda: ram.detach_policy_from_user(detach), NOT_ATTACHED)
    expect_error(lambda: attach_to_user(ram, unique("ghost"), policy), USER_NOT_EXIST)


def test_group_errors(ram: RamClient) -> None:
    user, group, ghost = unique("u"), unique("g"), unique("ghost")
    ram.create_user(ram_models.CreateUserRequest(user_name=user))
    ram.create_group(ram_models.CreateGroupRequest(group_name=group))
    expect_error(
        lambda: ram.create_group(ram_models.CreateGroupRequest(group_name=group)), GROUP_EXISTS
    )
    expect_error(
        lambda: ram.add_user_to_group(
            ram_models.AddUserToGroupRequest(group_name=ghost, user_name=user)
        ),
        GROUP_NOT_EXIST,
    )
    expect_error(
        lambda: ram.remove_user_from_group(
            ram_models.RemoveUserFromGroupRequest(group_name=ghost, user_name=user)
        ),
        GROUP_NOT_EXIST,
    )
    expect_error(
        lambda: attach_to_group(ram, ghost, "AliyunKvstoreFullAccess", "System"), GROUP_NOT_EXIST
    )
    expect_error(
        lambda: ram.add_user_to_group(
            ram_models.AddUserToGroupRequest(group_name=group, user_name=ghost)
        ),
        USER_NOT_EXIST,
    )
    remove = ram_models.RemoveUserFromGroupRequest(group_name=group, user_name=user)
    expect_error(lambda: ram.remove_user_from_group(remove), NOT_JOINED)
    ram.add_user_to_group(ram_models.AddUserToGroupRequest(group_name=group, user_name=user))
    expect_error(
        lambda: ram.add_user_to_group(
            ram_models.AddUserToGroupRequest(group_name=group, user_name=user)
        ),
        ALREADY_JOINED,
    )
    ram.remove_user_from_group(remove)
    expect_error(lambda: ram.remove_user_from_group(remove), NOT_JOINED)


def test_policy_versions_limit_and_rotation(ram: RamClient) -> None:
    name = create_policy(ram, document(statement("kvstore:DescribeInstances")))

    def add(rotate: str | None = None) -> Any:
        request = ram_models.CreatePolicyVersionRequest(
            policy_name=name,
            policy_document=document(statement("kvstore:DescribeAccounts")),
            rotate_strategy=rotate,
        )
        return ram.create_policy_version(request).body.policy_version

    assert [add().version_id for _ in range(4)] == ["v2", "v3", "v4", "v5"]
    expect_error(add, VERSION_LIMIT)
    expect_error(lambda: add("None"), VERSION_LIMIT)
    rotated = add(ROTATE)
    assert rotated.version_id == "v6"
    assert rotated.is_default_version is False
    expect_error(add, VERSION_LIMIT)  # still five: the rotation removed one
    assert add(ROTATE).version_id == "v7"
    got = ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")).body
    assert got.policy.default_version == "v1"  # the default is never rotated away
    assert got.default_policy_version.policy_document == document(
        statement("kvstore:DescribeInstances")
    )
    expect_error(
        lambda: ram.create_policy_version(
            ram_models.CreatePolicyVersionRequest(
                policy_name=name, policy_document=document(statement("*")), rotate_strategy="Oldest"
            )
        ),
        ("InvalidParameter", 400, 'The specified parameter "RotateStrategy" is not valid.'),
    )


def test_delete_policy_conflicts(ram: RamClient) -> None:
    user, group = unique("u"), unique("g")
    ram.create_user(ram_models.CreateUserRequest(user_name=user))
    ram.create_group(ram_models.CreateGroupRequest(group_name=group))
    name = create_policy(ram, document(statement("kvstore:DescribeInstances")))
    plain = ram_models.DeletePolicyRequest(policy_name=name)

    attach_to_user(ram, user, name)
    expect_error(lambda: ram.delete_policy(plain), POLICY_ON_USER)
    ram.detach_policy_from_user(
        ram_models.DetachPolicyFromUserRequest(
            policy_type="Custom", policy_name=name, user_name=user
        )
    )
    attach_to_group(ram, group, name)
    expect_error(lambda: ram.delete_policy(plain), POLICY_ON_GROUP)
    ram.detach_policy_from_group(
        ram_models.DetachPolicyFromGroupRequest(
            policy_type="Custom", policy_name=name, group_name=group
        )
    )
    ram.create_policy_version(
        ram_models.CreatePolicyVersionRequest(
            policy_name=name, policy_document=document(statement("kvstore:DescribeAccounts"))
        )
    )
    expect_error(lambda: ram.delete_policy(plain), POLICY_HAS_VERSIONS)
    expect_error(
        lambda: ram.delete_policy(
            ram_models.DeletePolicyRequest(policy_name=name, cascading_delete=False)
        ),
        POLICY_HAS_VERSIONS,
    )
    ram.delete_policy(ram_models.DeletePolicyRequest(policy_name=name, cascading_delete=True))
    expect_error(
        lambda: ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")),
        POLICY_NOT_EXIST,
    )
    # The name is free again, and the new policy starts over at v1.
    again = ram.create_policy(
        ram_models.CreatePolicyRequest(policy_name=name, policy_document=document(statement("*")))
    ).body.policy
    assert again.default_version == "v1"
    ram.delete_policy(plain)  # only the default version: no cascade needed


def test_system_policies_cannot_be_deleted_or_versioned(ram: RamClient) -> None:
    for call in (
        lambda: ram.delete_policy(
            ram_models.DeletePolicyRequest(policy_name="AliyunKvstoreFullAccess")
        ),
        lambda: ram.create_policy_version(
            ram_models.CreatePolicyVersionRequest(
                policy_name="AliyunKvstoreFullAccess", policy_document=document(statement("*"))
            )
        ),
    ):
        expect_error(call, POLICY_NOT_EXIST)


def test_attaching_a_policy_needs_permission_on_that_policy(
    root: Principal, ram: RamClient, account_id: str
) -> None:
    """ram:AttachPolicyToUser is on the user *and* the policy (docs/ram-wire.md §4, [A]).

    A delegate allowed to attach only AliyunKvstoreReadOnlyAccess must not be able
    to hand out (or take) AliyunKvstoreFullAccess.
    """
    delegate_doc = document(
        statement(
            "ram:AttachPolicyToUser",
            [
                f"acs:ram:*:{account_id}:user/*",
                f"acs:ram:*:{account_id}:policy/AliyunKvstoreReadOnlyAccess",
            ],
        )
    )
    delegate = user_with(root, account_id, delegate_doc)
    target = unique("target")
    ram.create_user(ram_models.CreateUserRequest(user_name=target))
    attach_to_user(delegate.ram(), target, "AliyunKvstoreReadOnlyAccess", "System")
    expect_denied(
        lambda: attach_to_user(delegate.ram(), target, "AliyunKvstoreFullAccess", "System"),
        delegate,
        "ram:AttachPolicyToUser",
    )
    expect_denied(
        lambda: attach_to_user(
            delegate.ram(), str(delegate.user_name), "AliyunKvstoreFullAccess", "System"
        ),
        delegate,
        "ram:AttachPolicyToUser",
    )


def test_a_policy_document_of_the_longest_length_travels_in_the_url(ram: RamClient) -> None:
    """6,144 characters that nearly all need percent-encoding: an ~18 KB query string."""
    patterns: list[str] = []
    while len(document(statement("kvstore:DescribeAccounts", [*patterns, "*/*"]))) <= 6144:
        patterns.append("*/*")
    longest = document(statement("kvstore:DescribeAccounts", patterns))
    assert 6100 < len(longest) <= 6144
    name = create_policy(ram, longest)
    got = ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")).body
    assert got.default_policy_version.policy_document == longest

    too_long = document(statement("kvstore:DescribeAccounts", [*patterns, "*/*"]))
    assert len(too_long) > 6144
    expect_error(
        lambda: create_policy(ram, too_long),
        malformed("The policy document is longer than 6144 characters."),
    )


# --------------------------------------------------------------------------- response models


def test_users_models(ram: RamClient) -> None:
    name = unique("alice")
    fields = {
        "display_name": "Alice A",
        "email": "alice@example.com",
        "mobile_phone": "86-18600008888",
        "comments": "colleague on call",
    }
    created = ram.create_user(ram_models.CreateUserRequest(user_name=name, **fields)).body
    assert created.request_id
    user = created.user
    assert_every_field(user)
    assert user.user_name == name
    assert ACCOUNT_ID.match(user.user_id), user.user_id
    assert DATE.match(user.create_date), user.create_date
    for key, value in fields.items():
        assert getattr(user, key) == value

    got = ram.get_user(ram_models.GetUserRequest(user_name=name)).body.user
    assert_every_field(got)
    assert (got.user_id, got.user_name, got.create_date) == (
        user.user_id,
        name,
        user.create_date,
    )
    assert DATE.match(got.update_date), got.update_date
    assert isinstance(got.last_login_date, str)
    for key, value in fields.items():
        assert getattr(got, key) == value

    listed = ram.list_users(ram_models.ListUsersRequest(max_items=1000)).body
    assert listed.is_truncated is False
    assert listed.marker is None
    mine = [u for u in listed.users.user if u.user_name == name]
    assert len(mine) == 1
    assert_every_field(mine[0])
    assert mine[0].user_id == user.user_id
    assert mine[0].email == fields["email"]


def test_list_users_pages_with_max_items_and_marker(ram: RamClient) -> None:
    for _ in range(3):
        ram.create_user(ram_models.CreateUserRequest(user_name=unique("pager")))
    everyone = [
        u.user_name
        for u in ram.list_users(ram_models.ListUsersRequest(max_items=1000)).body.users.user
    ]
    assert len(everyone) >= 3
    assert everyone == sorted(everyone)

    seen: list[str] = []
    marker = None
    for _ in range(len(everyone) + 1):
        page = ram.list_users(ram_models.ListUsersRequest(max_items=2, marker=marker)).body
        names = [u.user_name for u in page.users.user]
        assert 1 <= len(names) <= 2, page.to_map()
        seen += names
        assert isinstance(page.is_truncated, bool)
        if not page.is_truncated:
            assert page.marker is None
            break
        assert len(names) == 2
        assert page.marker
        marker = page.marker
    else:
        raise AssertionError("ListUsers kept saying IsTruncated")
    assert seen == everyone

    expect_error(
        lambda: ram.list_users(ram_models.ListUsersRequest(max_items=0)),
        ("InvalidParameter", 400, 'The specified parameter "MaxItems" is not valid.'),
    )
    expect_error(
        lambda: ram.list_users(ram_models.ListUsersRequest(max_items=1001)),
        ("InvalidParameter", 400, 'The specified parameter "MaxItems" is not valid.'),
    )


def test_rename_keeps_keys_policies_and_groups(
    root: Principal, ram: RamClient, account_id: str, targets: tuple[Target, Target]
) -> None:
    a, _ = targets
    user = user_with(
        root, account_id, document(statement("kvstore:DescribeAccounts", instance_arn(a.id)))
    )
    old = str(user.user_name)
    group = unique("g")
    ram.create_group(ram_models.CreateGroupRequest(group_name=group))
    attach_to_group(
        ram, group, create_policy(ram, document(statement("kvstore:DescribeInstances")))
    )
    ram.add_user_to_group(ram_models.AddUserToGroupRequest(group_name=group, user_name=old))
    before = ram.get_user(ram_models.GetUserRequest(user_name=old)).body.user

    new = unique("renamed")
    updated = ram.update_user(
        ram_models.UpdateUserRequest(
            user_name=old,
            new_user_name=new,
            new_display_name="Renamed",
            new_email="renamed@example.com",
            new_mobile_phone="1-5550100",
            new_comments="moved teams",
        )
    ).body.user
    assert_every_field(updated)
    assert (updated.user_name, updated.user_id, updated.create_date) == (
        new,
        before.user_id,
        before.create_date,
    )
    assert (updated.display_name, updated.email, updated.mobile_phone, updated.comments) == (
        "Renamed",
        "renamed@example.com",
        "1-5550100",
        "moved teams",
    )
    assert DATE.match(updated.update_date)
    expect_error(lambda: ram.get_user(ram_models.GetUserRequest(user_name=old)), USER_NOT_EXIST)

    renamed = Principal(user.endpoint, user.access_key_id, user.access_key_secret, new, account_id)
    assert describe_accounts(renamed.kv(), a.id).accounts.account  # direct policy
    describe_instances(renamed)  # the group's policy
    expect_denied(
        lambda: reset(renamed.kv(), a.id, ACCOUNT, new_password()),
        renamed,
        "kvstore:ResetAccountPassword",
    )
    keys = ram.list_access_keys(ram_models.ListAccessKeysRequest(user_name=new)).body
    assert [k.access_key_id for k in keys.access_keys.access_key] == [user.access_key_id]
    policies = ram.list_policies_for_user(ram_models.ListPoliciesForUserRequest(user_name=new))
    assert len(policies.body.policies.policy) == 1
    groups = ram.list_groups_for_user(ram_models.ListGroupsForUserRequest(user_name=new))
    assert [g.group_name for g in groups.body.groups.group] == [group]
    # Only the new name is in use now: the old one can be taken by someone else.
    ram.create_user(ram_models.CreateUserRequest(user_name=old))
    assert (
        ram.list_groups_for_user(
            ram_models.ListGroupsForUserRequest(user_name=old)
        ).body.groups.group
        == []
    )


def test_access_key_models(ram: RamClient) -> None:
    name = unique("keys")
    ram.create_user(ram_models.CreateUserRequest(user_name=name))
    created = ram.create_access_key(ram_models.CreateAccessKeyRequest(user_name=name)).body
    key = created.access_key
    keep_secret(key.access_key_secret)
    assert_every_field(key)
    assert key.status == "Active"
    assert key.access_key_id.startswith("LTAI")
    assert len(key.access_key_secret) >= 16
    assert DATE.match(key.create_date)

    listed = ram.list_access_keys(ram_models.ListAccessKeysRequest(user_name=name)).body
    (item,) = listed.access_keys.access_key
    assert_every_field(item)
    assert (item.access_key_id, item.status, item.create_date) == (
        key.access_key_id,
        "Active",
        key.create_date,
    )
    raw = raw_ram_call(ram, "ListAccessKeys", {"UserName": name})
    assert key.access_key_secret not in json.dumps(raw)
    assert set(raw["AccessKeys"]["AccessKey"][0]) == {"AccessKeyId", "Status", "CreateDate"}

    ram.update_access_key(
        ram_models.UpdateAccessKeyRequest(
            user_access_key_id=key.access_key_id, status="Inactive", user_name=name
        )
    )
    listed = ram.list_access_keys(ram_models.ListAccessKeysRequest(user_name=name)).body
    assert [k.status for k in listed.access_keys.access_key] == ["Inactive"]
    expect_error(
        lambda: ram.update_access_key(
            ram_models.UpdateAccessKeyRequest(
                user_access_key_id=key.access_key_id, status="Disabled", user_name=name
            )
        ),
        ("InvalidParameter", 400, 'The specified parameter "Status" is not valid.'),
    )
    expect_error(
        lambda: ram.update_access_key(
            ram_models.UpdateAccessKeyRequest(
                user_access_key_id="LTAInotakey", status="Active", user_name=name
            )
        ),
        ("EntityNotExist.User.AccessKey", 404, "The user access key does not exist."),
    )
    ram.delete_access_key(
        ram_models.DeleteAccessKeyRequest(user_access_key_id=key.access_key_id, user_name=name)
    )
    listed = ram.list_access_keys(ram_models.ListAccessKeysRequest(user_name=name)).body
    assert listed.access_keys.access_key == []
    expect_error(
        lambda: ram.delete_access_key(
            ram_models.DeleteAccessKeyRequest(user_access_key_id=key.access_key_id, user_name=name)
        ),
        ("EntityNotExist.User.AccessKey", 404, "The user access key does not exist."),
    )


def test_policy_models_and_attachments(ram: RamClient) -> None:
    user, group = unique("u"), unique("g")
    ram.create_user(ram_models.CreateUserRequest(user_name=user))
    made_group = ram.create_group(
        ram_models.CreateGroupRequest(group_name=group, comments="on call")
    ).body.group
    assert_every_field(made_group)
    assert (made_group.group_name, made_group.comments) == (group, "on call")
    assert ACCOUNT_ID.match(made_group.group_id)
    assert DATE.match(made_group.create_date)

    doc = document(statement(["kvstore:DescribeInstances", "kvstore:DescribeAccounts"]))
    name = unique("p")
    created = ram.create_policy(
        ram_models.CreatePolicyRequest(policy_name=name, policy_document=doc, description="reads")
    ).body.policy
    assert_every_field(created)
    assert (created.policy_name, created.policy_type, created.description) == (
        name,
        "Custom",
        "reads",
    )
    assert created.default_version == "v1"
    assert DATE.match(created.create_date)

    def get() -> Any:
        request = ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")
        return ram.get_policy(request).body

    got = get()
    assert_every_field(got.policy)
    assert_every_field(got.default_policy_version)
    assert got.policy.attachment_count == 0
    assert isinstance(got.policy.attachment_count, int)
    version = got.default_policy_version
    assert (version.version_id, version.is_default_version, version.policy_document) == (
        "v1",
        True,
        doc,
    )
    assert DATE.match(version.create_date)

    attach_to_user(ram, user, name)
    attach_to_group(ram, group, name)
    assert get().policy.attachment_count == 2

    for_user = ram.list_policies_for_user(
        ram_models.ListPoliciesForUserRequest(user_name=user)
    ).body.policies.policy
    (item,) = for_user
    assert_every_field(item)
    assert (item.policy_name, item.policy_type, item.description, item.default_version) == (
        name,
        "Custom",
        "reads",
        "v1",
    )
    assert DATE.match(item.attach_date)
    for_group = ram.list_policies_for_group(
        ram_models.ListPoliciesForGroupRequest(group_name=group)
    ).body.policies.policy
    assert [(p.policy_name, p.policy_type) for p in for_group] == [(name, "Custom")]
    assert_every_field(for_group[0])

    ram.add_user_to_group(ram_models.AddUserToGroupRequest(group_name=group, user_name=user))
    joined = ram.list_groups_for_user(
        ram_models.ListGroupsForUserRequest(user_name=user)
    ).body.groups.group
    (membership,) = joined
    assert_every_field(membership)
    assert (membership.group_id, membership.group_name, membership.comments) == (
        made_group.group_id,
        group,
        "on call",
    )
    assert DATE.match(membership.join_date)

    ram.detach_policy_from_user(
        ram_models.DetachPolicyFromUserRequest(
            policy_type="Custom", policy_name=name, user_name=user
        )
    )
    ram.detach_policy_from_group(
        ram_models.DetachPolicyFromGroupRequest(
            policy_type="Custom", policy_name=name, group_name=group
        )
    )
    assert get().policy.attachment_count == 0
    assert (
        ram.list_policies_for_user(
            ram_models.ListPoliciesForUserRequest(user_name=user)
        ).body.policies.policy
        == []
    )
    assert (
        ram.list_policies_for_group(
            ram_models.ListPoliciesForGroupRequest(group_name=group)
        ).body.policies.policy
        == []
    )
    ram.remove_user_from_group(
        ram_models.RemoveUserFromGroupRequest(group_name=group, user_name=user)
    )
    assert (
        ram.list_groups_for_user(
            ram_models.ListGroupsForUserRequest(user_name=user)
        ).body.groups.group
        == []
    )
    ram.delete_policy(ram_models.DeletePolicyRequest(policy_name=name))


def test_system_policies_in_every_tenant(live_server: LiveServer, ram: RamClient) -> None:
    custom = create_policy(ram, document(statement("kvstore:DescribeInstances")))
    fresh = create_tenant(live_server)
    for client, mine in ((ram, custom), (fresh.ram(), None)):
        every = client.list_policies(ram_models.ListPoliciesRequest(max_items=1000)).body
        assert every.is_truncated is False
        by_name = {p.policy_name: p for p in every.policies.policy}
        for system in ("AliyunKvstoreFullAccess", "AliyunKvstoreReadOnlyAccess"):
            policy = by_name[system]
            assert policy.policy_type == "System"
            assert isinstance(policy.attachment_count, int)
            assert policy.default_version == "v1"
            assert policy.description
        if mine is None:  # the other tenant's custom policies are not listed
            assert custom not in by_name
            assert {p.policy_type for p in every.policies.policy} == {"System"}
        else:
            assert by_name[mine].policy_type == "Custom"

        systems = client.list_policies(ram_models.ListPoliciesRequest(policy_type="System")).body
        assert {p.policy_type for p in systems.policies.policy} == {"System"}
        assert {"AliyunKvstoreFullAccess", "AliyunKvstoreReadOnlyAccess"} <= {
            p.policy_name for p in systems.policies.policy
        }
        customs = client.list_policies(ram_models.ListPoliciesRequest(policy_type="Custom")).body
        assert {p.policy_type for p in customs.policies.policy} <= {"Custom"}
        assert (mine in {p.policy_name for p in customs.policies.policy}) == (mine is not None)

        full = client.get_policy(
            ram_models.GetPolicyRequest(policy_name="AliyunKvstoreFullAccess", policy_type="System")
        ).body
        statements = json.loads(full.default_policy_version.policy_document)["Statement"]
        assert statements == [{"Effect": "Allow", "Action": "kvstore:*", "Resource": "*"}]
        read_only = client.get_policy(
            ram_models.GetPolicyRequest(
                policy_name="AliyunKvstoreReadOnlyAccess", policy_type="System"
            )
        ).body
        assert json.loads(read_only.default_policy_version.policy_document)["Statement"] == [
            {"Effect": "Allow", "Action": "kvstore:Describe*", "Resource": "*"}
        ]


def test_list_policies_pages(ram: RamClient) -> None:
    for _ in range(3):
        create_policy(ram, document(statement("kvstore:DescribeInstances")))
    everyone = [
        (p.policy_type, p.policy_name)
        for p in ram.list_policies(
            ram_models.ListPoliciesRequest(max_items=1000)
        ).body.policies.policy
    ]
    seen: list[tuple[str, str]] = []
    marker = None
    for _ in range(len(everyone) + 1):
        page = ram.list_policies(ram_models.ListPoliciesRequest(max_items=2, marker=marker)).body
        seen += [(p.policy_type, p.policy_name) for p in page.policies.policy]
        assert isinstance(page.is_truncated, bool)
        if not page.is_truncated:
            break
        marker = page.marker
    assert seen == everyone


def test_a_new_default_version_is_enforced_at_once(
    root: Principal, ram: RamClient, account_id: str, targets: tuple[Target, Target]
) -> None:
    a, b = targets
    only = ["kvstore:DescribeAccounts"]
    name = create_policy(ram, document(statement(only, instance_arn(a.id))))
    user = make_user(root, account_id)
    attach_to_user(ram, str(user.user_name), name)
    kv = user.kv()
    describe_accounts(kv, a.id)
    expect_denied(lambda: describe_accounts(kv, b.id), user, "kvstore:DescribeAccounts")

    def new_version(instance_id: str, default: bool) -> Any:
        request = ram_models.CreatePolicyVersionRequest(
            policy_name=name,
            policy_document=document(statement(only, instance_arn(instance_id))),
            set_as_default=default,
        )
        return ram.create_policy_version(request).body.policy_version

    staged = new_version(b.id, default=False)
    assert_every_field(staged)
    assert (staged.version_id, staged.is_default_version) == ("v2", False)
    assert DATE.match(staged.create_date)
    describe_accounts(kv, a.id)  # a version that is not the default changes nothing
    expect_denied(lambda: describe_accounts(kv, b.id), user, "kvstore:DescribeAccounts")

    live = new_version(b.id, default=True)
    assert (live.version_id, live.is_default_version) == ("v3", True)
    assert live.policy_document == document(statement(only, instance_arn(b.id)))
    describe_accounts(kv, b.id)
    expect_denied(lambda: describe_accounts(kv, a.id), user, "kvstore:DescribeAccounts")
    got = ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")).body
    assert got.policy.default_version == "v3"
    assert got.default_policy_version.version_id == "v3"
    assert got.default_policy_version.policy_document == live.policy_document


def test_ram_sdk_with_v1_signatures(root: Principal) -> None:
    name = unique("v1")
    client = root.ram(signature_algorithm="v2")
    made = client.create_user(
        ram_models.CreateUserRequest(user_name=name, display_name="V one")
    ).body
    assert made.user.display_name == "V one"
    got = client.get_user(ram_models.GetUserRequest(user_name=name)).body.user
    assert got.user_name == name


# --------------------------------------------------------------------------- secrets at rest (last)


def test_zz_no_access_key_secret_in_the_servers_log_or_database(
    live_server: LiveServer,
) -> None:
    assert SECRETS_SEEN, "no secret was received: the scan would prove nothing"
    assert (live_server.data_dir / "rkvstore.log").is_file()
    found = secrets_in_server_files(live_server.data_dir, SECRETS_SEEN)
    assert not found, found


def test_a_deny_on_one_instance_hides_it_from_describe_instances(
    root: Principal, account_id: str, targets: tuple[Target, Target]
) -> None:
    """DescribeInstances is authorized on instance/*, and each instance listed must be allowed."""
    a, b = targets
    user = user_with(
        root,
        account_id,
        document(
            statement("kvstore:DescribeInstances"),
            statement("kvstore:DescribeInstances", instance_arn(a.id), effect="Deny"),
        ),
    )
    listed = {i.instance_id for i in describe_instances(user).instances.kvstore_instance}
    assert b.id in listed
    assert a.id not in listed
    everything = {i.instance_id for i in describe_instances(root).instances.kvstore_instance}
    assert {a.id, b.id} <= everything
