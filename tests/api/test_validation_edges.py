"""Every validation rule of api.md §3, at its edges, through the API of a live server.

Each case asserts the HTTP status, the code and the message. A value that is
valid is also shown to be *used*: the password logs in on every node of the
instance, the account exists on Redis. A value that is invalid is shown to
change nothing: the previous password still logs in, the candidate does not,
and ``ACL LIST`` on every node is what it was (read as the Super ``default``
account; rkvstore's management user's password is never known here).

Calls go through rkvstore's own ``RpcClient`` (V3 signing) for speed; the
official SDKs are exercised in test_accounts_sdk.py. The module has a server of
its own with throttling off, since it sends a few hundred requests in seconds.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from rkvstore.client import RpcClient
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    Instance,
    acl_snapshot,
    assert_wrongpass,
    can_login,
    connect,
    new_password,
    provision,
    rpc_client,
)
from tests.conftest import ARTIFACT_DIRS, LiveServer, remember_secret, start_server

Error = tuple[int, str, str]  # HTTP status, Code, Message

NAME_FORMAT: Final = (400, "InvalidAccountName.Format", "Specified AccountName is not valid.")
NAME_FORBID: Final = (400, "InvalidAccountName.Forbid", "Specified AccountName is a keyword.")
NAME_NOT_FOUND: Final = (
    404,
    "InvalidAccountName.NotFound",
    "Specified AccountName does not exist.",
)
PASSWORD_FORMAT: Final = (
    400,
    "InvalidAccountPassword.Format",
    "Specified AccountPassword is not valid.",
)
DESCRIPTION_FORMAT: Final = (
    400,
    "InvalidAccountDescription.Format",
    "Specified AccountDescription is not valid.",
)
PRIVILEGE_MALFORMED: Final = (
    400,
    "InvalidAccountPrivilege.Malformed",
    "Specified AccountPrivilege is not valid.",
)
PRIVILEGE_FORMAT: Final = (
    400,
    "InvalidAccountPrivilege.Format",
    "Specified AccountPrivilege is not valid.",
)


def invalid(name: str) -> Error:
    return (400, "InvalidParameter", f'The specified parameter "{name}" is not valid.')


def missing(name: str) -> Error:
    return (
        400,
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request '
        "is not supplied.",
    )


SPECIALS: Final = "!@#$%^&*()_+-="
CLASSES: Final = {
    "u": string.ascii_uppercase,
    "l": string.ascii_lowercase,
    "d": string.digits,
    "s": SPECIALS,
}
RESERVED: Final = (
    "default",
    "root",
    "admin",
    "administrator",
    "redis",
    "tair",
    "kvstore",
    "system",
    "sys",
    "replicator",
    "monitor",
    "rkvstore_mgmt",
)
_random = secrets.SystemRandom()


def password(length: int = 16, classes: str = "ulds", extra: str = "") -> str:
    """A random password of exactly ``length`` characters: one of each class in
    ``classes``, the characters of ``extra``, the rest from ``classes``; remembered."""
    chars = [secrets.choice(CLASSES[c]) for c in classes] + list(extra)
    pool = "".join(CLASSES[c] for c in classes)
    while len(chars) < length:
        chars.append(secrets.choice(pool))
    assert len(chars) == length, (length, classes, extra)
    # The extra characters go in the middle: first or last could hide encoding trouble.
    head, tail = chars[: len(classes)], chars[len(classes) :]
    _random.shuffle(tail)
    return remember_secret("".join(head[:1] + tail + head[1:]))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path: Path = tmp_path_factory.mktemp("validation")
    ARTIFACT_DIRS.append(path)
    live = start_server(path, extra_env={"RKVSTORE_RATE_LIMIT_PER_SECOND": "0"})
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def instances(server: LiveServer) -> Iterator[dict[str, Instance]]:
    with provision(server, STAND_ALONE, MASTER_SLAVE) as made:
        yield {i.node_type: i for i in made}


@pytest.fixture(scope="module")
def rpc(server: LiveServer) -> Iterator[RpcClient]:
    with rpc_client(server) as client:
        yield client


@pytest.fixture(scope="module")
def ms(instances: dict[str, Instance]) -> Instance:
    return instances[MASTER_SLAVE]


@dataclass
class Target:
    """An account on the MASTER_SLAVE instance, with its current password."""

    instance: Instance
    name: str
    password: str


@pytest.fixture(scope="module")
def target(rpc: RpcClient, ms: Instance) -> Target:
    first = new_password()
    ok(
        rpc,
        "CreateAccount",
        {"InstanceId": ms.instance_id, "AccountName": "target", "AccountPassword": first},
    )
    return Target(ms, "target", first)


# --------------------------------------------------------------------------- helpers


def ok(rpc: RpcClient, action: str, params: dict[str, Any]) -> dict[str, Any]:
    response = rpc.request(action, params)
    body: dict[str, Any] = response.json()
    assert response.status_code == 200, (action, body)
    return body


def expect(rpc: RpcClient, action: str, params: dict[str, Any], error: Error) -> None:
    response = rpc.request(action, params)
    body = response.json()
    got = (response.status_code, body.get("Code"), body.get("Message"))
    assert got == error, (action, {k: v for k, v in params.items() if "Password" not in k})


def reset(rpc: RpcClient, target: Target, new: str) -> Any:
    return rpc.request(
        "ResetAccountPassword",
        {
            "InstanceId": target.instance.instance_id,
            "AccountName": target.name,
            "AccountPassword": new,
        },
    )


def accepted(rpc: RpcClient, target: Target, new: str) -> None:
    """ResetAccountPassword takes ``new``, and every node logs the account in with it."""
    response = reset(rpc, target, new)
    assert response.status_code == 200, response.json()
    old, target.password = target.password, new
    for port in target.instance.node_ports:
        assert can_login(port, target.name, new), port
        assert_wrongpass(port, target.name, old)


def refused(rpc: RpcClient, target: Target, candidate: str, error: Error = PASSWORD_FORMAT) -> None:
    """ResetAccountPassword refuses ``candidate``; every node keeps the current password."""
    response = reset(rpc, target, candidate)
    body = response.json()
    assert (response.status_code, body["Code"], body["Message"]) == error
    for port in target.instance.node_ports:
        assert can_login(port, target.name, target.password), port
        assert_wrongpass(port, target.name, candidate)


def names(rpc: RpcClient, instance: Instance) -> list[str]:
    body = ok(rpc, "DescribeAccounts", {"InstanceId": instance.instance_id, "PageSize": 100})
    return [a["AccountName"] for a in body["Accounts"]["Account"]]


def create(instance: Instance, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "InstanceId": instance.instance_id,
        "AccountName": name,
        "AccountPassword": extra.pop("AccountPassword", None) or new_password(),
        **extra,
    }


def delete(rpc: RpcClient, instance: Instance, name: str) -> None:
    ok(rpc, "DeleteAccount", {"InstanceId": instance.instance_id, "AccountName": name})


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize("length", [8, 32])
def test_password_length_accepted(rpc: RpcClient, target: Target, length: int) -> None:
    accepted(rpc, target, password(length))


@pytest.mark.parametrize("length", [7, 33])
def test_password_length_refused(rpc: RpcClient, target: Target, length: int) -> None:
    refused(rpc, target, password(length))


@pytest.mark.parametrize("classes", ["ul", "ud", "us", "ld", "ls", "ds"])
def test_password_two_classes_refused(rpc: RpcClient, target: Target, classes: str) -> None:
    refused(rpc, target, password(12, classes))
    refused(rpc, target, password(32, classes))


@pytest.mark.parametrize("classes", ["uld", "uls", "uds", "lds", "ulds"])
def test_password_three_classes_accepted(rpc: RpcClient, target: Target, classes: str) -> None:
    accepted(rpc, target, password(8, classes))


@pytest.mark.parametrize("special", list(SPECIALS), ids=[f"0x{ord(c):02x}" for c in SPECIALS])
def test_each_special_counts_and_works(rpc: RpcClient, target: Target, special: str) -> None:
    # Upper, lower and this one special: the special is the third class.
    accepted(rpc, target, password(12, "ul", extra=special))
    # Only digits and this special: two classes, however many of it.
    refused(rpc, target, password(12, "d", extra=special * 3))


@pytest.mark.parametrize(
    "bad",
    [" ", ".", "~", "é", "\t", "\x01", "/", "?", '"', "'", "\\", ",", ":", ";", "<", "\uff21", "€"],
    ids=lambda c: f"0x{ord(c):02x}",
)
def test_password_other_characters_refused(rpc: RpcClient, target: Target, bad: str) -> None:
    refused(rpc, target, password(16, "ulds", extra=bad))


def test_password_rule_applies_to_every_password_parameter(
    rpc: RpcClient, server: LiveServer, target: Target, ms: Instance
) -> None:
    ms_id = ms.instance_id
    short, spaced = password(7), password(12, extra=" ")
    for bad in (short, spaced):
        expect(rpc, "CreateAccount", create(ms, "pwcheck", AccountPassword=bad), PASSWORD_FORMAT)
        expect(
            rpc,
            "ModifyAccountPassword",
            {
                "InstanceId": ms_id,
                "AccountName": target.name,
                "OldAccountPassword": target.password,
                "NewAccountPassword": bad,
            },
            PASSWORD_FORMAT,
        )
    assert "pwcheck" not in names(rpc, ms)
    for port in ms.node_ports:
        assert can_login(port, target.name, target.password)

    before = ok(rpc, "DescribeInstances", {"PageSize": 100})["TotalCount"]
    for bad in (short, spaced, password(33), password(12, "ul")):
        expect(
            rpc,
            "CreateInstance",
            {"NodeType": STAND_ALONE, "Password": bad},
            PASSWORD_FORMAT,
        )
    assert ok(rpc, "DescribeInstances", {"PageSize": 100})["TotalCount"] == before


# --------------------------------------------------------------------------- account names


@pytest.mark.parametrize("name", ["a", "a" * 100, "z9_", "a_b_c_1", "x" + "_" * 99])
def test_account_name_accepted(rpc: RpcClient, ms: Instance, name: str) -> None:
    pw = new_password()
    body = ok(rpc, "CreateAccount", create(ms, name, AccountPassword=pw))
    try:
        assert body["AccountName"] == name
        for port in ms.node_ports:
            assert can_login(port, name, pw)
    finally:
        delete(rpc, ms, name)


@pytest.mark.parametrize(
    "name",
    [
        "a" * 101,
        "Abc",
        "aBc",
        "ABC",
        "1abc",
        "9",
        "_abc",
        "-abc",
        "ab-c",
        "ab.c",
        "ab c",
        "ab@c",
        "é",
        "aé",
        "\uff41bc",
    ],
)
def test_account_name_refused(rpc: RpcClient, ms: Instance, target: Target, name: str) -> None:
    expect(rpc, "CreateAccount", create(ms, name), NAME_FORMAT)
    iid = ms.instance_id
    # The same rule for every action that names an account.
    expect(
        rpc,
        "ResetAccountPassword",
        {"InstanceId": iid, "AccountName": name, "AccountPassword": new_password()},
        NAME_FORMAT,
    )
    expect(
        rpc,
        "ModifyAccountDescription",
        {"InstanceId": iid, "AccountName": name, "AccountDescription": "words"},
        NAME_FORMAT,
    )
    expect(
        rpc,
        "GrantAccountPrivilege",
        {"InstanceId": iid, "AccountName": name, "AccountPrivilege": "RoleReadOnly"},
        NAME_FORMAT,
    )
    expect(rpc, "DeleteAccount", {"InstanceId": iid, "AccountName": name}, NAME_FORMAT)
    assert name not in names(rpc, ms)


def test_account_name_edges_for_existing_accounts(rpc: RpcClient, ms: Instance) -> None:
    """A well-formed name that exists nowhere is NotFound (404); one past the limit is Format."""
    iid = ms.instance_id
    params = {"InstanceId": iid, "AccountPassword": new_password()}
    expect(rpc, "ResetAccountPassword", {**params, "AccountName": "a" * 100}, NAME_NOT_FOUND)
    expect(rpc, "ResetAccountPassword", {**params, "AccountName": "a" * 101}, NAME_FORMAT)
    expect(rpc, "ResetAccountPassword", {**params, "AccountName": ""}, missing("AccountName"))
    expect(rpc, "CreateAccount", create(ms, ""), missing("AccountName"))


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_forbidden(rpc: RpcClient, ms: Instance, name: str) -> None:
    iid = ms.instance_id
    expect(rpc, "CreateAccount", create(ms, name), NAME_FORBID)
    if name != "default":  # the default account exists: its own test covers it
        expect(
            rpc,
            "GrantAccountPrivilege",
            {"InstanceId": iid, "AccountName": name, "AccountPrivilege": "RoleReadOnly"},
            NAME_FORBID,
        )
        expect(rpc, "DeleteAccount", {"InstanceId": iid, "AccountName": name}, NAME_FORBID)
    assert (name in names(rpc, ms)) == (name == "default")


def test_management_user_is_out_of_reach(rpc: RpcClient, ms: Instance) -> None:
    """rkvstore's own Redis user cannot be reset, modified, described or listed."""
    iid, mgmt = ms.instance_id, "rkvstore_mgmt"
    before = acl_snapshot(ms.node_ports, ms.password)
    pw = new_password()
    expect(
        rpc,
        "ResetAccountPassword",
        {"InstanceId": iid, "AccountName": mgmt, "AccountPassword": pw},
        NAME_NOT_FOUND,
    )
    expect(
        rpc,
        "ModifyAccountPassword",
        {
            "InstanceId": iid,
            "AccountName": mgmt,
            "OldAccountPassword": pw,
            "NewAccountPassword": new_password(),
        },
        NAME_NOT_FOUND,
    )
    expect(
        rpc,
        "ModifyAccountDescription",
        {"InstanceId": iid, "AccountName": mgmt, "AccountDescription": "mine"},
        NAME_NOT_FOUND,
    )
    body = ok(rpc, "DescribeAccounts", {"InstanceId": iid, "AccountName": mgmt})
    assert body["TotalCount"] == 0 and body["Accounts"]["Account"] == []
    assert mgmt not in names(rpc, ms)
    assert acl_snapshot(ms.node_ports, ms.password) == before
    for port in ms.node_ports:
        assert_wrongpass(port, mgmt, pw)


@pytest.mark.parametrize(
    ("action", "field", "length", "error"),
    [
        ("CreateAccount", "AccountName", 257, NAME_FORMAT),
        ("ResetAccountPassword", "AccountName", 1000, NAME_FORMAT),
        ("CreateAccount", "AccountDescription", 1025, DESCRIPTION_FORMAT),
        ("ModifyAccountDescription", "AccountDescription", 1025, DESCRIPTION_FORMAT),
    ],
)
def test_far_too_long_values_get_the_rule_s_own_error(
    rpc: RpcClient, ms: Instance, target: Target, action: str, field: str, length: int, error: Error
) -> None:
    """api.md §3: a name longer than 100 characters is ``InvalidAccountName.Format``, a
    description longer than 256 ``InvalidAccountDescription.Format`` -- however long."""
    params: dict[str, Any] = {
        "InstanceId": ms.instance_id,
        "AccountName": "longish",
        "AccountPassword": new_password(),
        "AccountDescription": "fine",
    }
    if action in ("ResetAccountPassword", "ModifyAccountDescription"):
        params["AccountName"] = target.name
    if action == "ModifyAccountDescription":
        del params["AccountPassword"]
    params[field] = "a" * length
    expect(rpc, action, params, error)
    assert "longish" not in names(rpc, ms)


# --------------------------------------------------------------------------- descriptions


VALID_DESCRIPTIONS: Final = [
    "ab",
    "a" * 256,
    "中文",
    "中文描述_with-ascii1",
    "Z_-9",
    "httpfoo",
    "http",
]
INVALID_DESCRIPTIONS: Final = [
    "a",
    "中",
    "a" * 257,
    "中" * 257,
    "http://example",
    "https://example",
    "HTTP://example",
    "1abc",
    "_abc",
    "-abc",
    "ab cd",
    "ab.cd",
    "ab/cd",
    "éabc",
    "abé",
    "\uff41bc",
]


@pytest.mark.parametrize("text", VALID_DESCRIPTIONS, ids=range(len(VALID_DESCRIPTIONS)))
def test_description_accepted(rpc: RpcClient, ms: Instance, target: Target, text: str) -> None:
    iid = ms.instance_id
    ok(
        rpc,
        "ModifyAccountDescription",
        {"InstanceId": iid, "AccountName": target.name, "AccountDescription": text},
    )
    body = ok(rpc, "DescribeAccounts", {"InstanceId": iid, "AccountName": target.name})
    assert body["Accounts"]["Account"][0]["AccountDescription"] == text
    ok(rpc, "CreateAccount", create(ms, "described", AccountDescription=text))
    try:
        body = ok(rpc, "DescribeAccounts", {"InstanceId": iid, "AccountName": "described"})
        assert body["Accounts"]["Account"][0]["AccountDescription"] == text
    finally:
        delete(rpc, ms, "described")


@pytest.mark.parametrize("text", INVALID_DESCRIPTIONS, ids=range(len(INVALID_DESCRIPTIONS)))
def test_description_refused(rpc: RpcClient, ms: Instance, target: Target, text: str) -> None:
    iid = ms.instance_id
    ok(
        rpc,
        "ModifyAccountDescription",
        {"InstanceId": iid, "AccountName": target.name, "AccountDescription": "kept"},
    )
    expect(
        rpc,
        "ModifyAccountDescription",
        {"InstanceId": iid, "AccountName": target.name, "AccountDescription": text},
        DESCRIPTION_FORMAT,
    )
    body = ok(rpc, "DescribeAccounts", {"InstanceId": iid, "AccountName": target.name})
    assert body["Accounts"]["Account"][0]["AccountDescription"] == "kept"
    expect(
        rpc, "CreateAccount", create(ms, "described", AccountDescription=text), DESCRIPTION_FORMAT
    )
    assert "described" not in names(rpc, ms)


def test_description_is_required_by_modify(rpc: RpcClient, ms: Instance, target: Target) -> None:
    expect(
        rpc,
        "ModifyAccountDescription",
        {"InstanceId": ms.instance_id, "AccountName": target.name, "AccountDescription": ""},
        missing("AccountDescription"),
    )


# --------------------------------------------------------------------------- privileges, type


BAD_PRIVILEGES: Final = ["RoleAdmin", "roleReadOnly", "ROLEREADWRITE", "Super", "RoleReadOnly "]


@pytest.mark.parametrize("privilege", BAD_PRIVILEGES)
def test_privilege_refused(rpc: RpcClient, ms: Instance, target: Target, privilege: str) -> None:
    expect(
        rpc,
        "CreateAccount",
        create(ms, "privileged", AccountPrivilege=privilege),
        PRIVILEGE_MALFORMED,
    )
    assert "privileged" not in names(rpc, ms)
    expect(
        rpc,
        "GrantAccountPrivilege",
        {"InstanceId": ms.instance_id, "AccountName": target.name, "AccountPrivilege": privilege},
        PRIVILEGE_FORMAT,
    )
    body = ok(rpc, "DescribeAccounts", {"InstanceId": ms.instance_id, "AccountName": target.name})
    account = body["Accounts"]["Account"][0]
    assert account["DatabasePrivileges"]["DatabasePrivilege"][0]["AccountPrivilege"] == (
        "RoleReadWrite"
    )


@pytest.mark.parametrize("privilege", ["RoleReadOnly", "RoleReadWrite", "RoleRepl"])
def test_privilege_accepted(rpc: RpcClient, ms: Instance, privilege: str) -> None:
    iid = ms.instance_id
    ok(rpc, "CreateAccount", create(ms, "privileged", AccountPrivilege=privilege))
    try:
        for granted in ("RoleReadOnly", "RoleReadWrite", "RoleRepl"):
            ok(
                rpc,
                "GrantAccountPrivilege",
                {"InstanceId": iid, "AccountName": "privileged", "AccountPrivilege": granted},
            )
            body = ok(rpc, "DescribeAccounts", {"InstanceId": iid, "AccountName": "privileged"})
            shown = body["Accounts"]["Account"][0]["DatabasePrivileges"]["DatabasePrivilege"]
            assert shown == [{"AccountPrivilege": granted}]
    finally:
        delete(rpc, ms, "privileged")


@pytest.mark.parametrize("account_type", ["Super", "super", "normal", "Admin"])
def test_account_type_other_than_normal_refused(
    rpc: RpcClient, ms: Instance, account_type: str
) -> None:
    expect(
        rpc, "CreateAccount", create(ms, "typed", AccountType=account_type), invalid("AccountType")
    )
    assert "typed" not in names(rpc, ms)


def test_account_type_normal_accepted(rpc: RpcClient, ms: Instance) -> None:
    ok(rpc, "CreateAccount", create(ms, "typed", AccountType="Normal"))
    try:
        body = ok(rpc, "DescribeAccounts", {"InstanceId": ms.instance_id, "AccountName": "typed"})
        assert body["Accounts"]["Account"][0]["AccountType"] == "Normal"
    finally:
        delete(rpc, ms, "typed")


# --------------------------------------------------------------------------- nothing changes


def _invalid_batch(
    instance: Instance, account: str, current: str
) -> list[tuple[str, dict[str, Any]]]:
    """Requests that must each be refused, on ``instance`` with its account ``account``."""
    iid = instance.instance_id
    reset = {"InstanceId": iid, "AccountName": account}
    batch: list[tuple[str, dict[str, Any]]] = []
    for bad in (password(7), password(33), password(12, "ul"), password(12, extra=" ")):
        batch.append(("ResetAccountPassword", {**reset, "AccountPassword": bad}))
        batch.append(("CreateAccount", create(instance, "ghost", AccountPassword=bad)))
        batch.append(
            (
                "ModifyAccountPassword",
                {**reset, "OldAccountPassword": current, "NewAccountPassword": bad},
            )
        )
    batch += [
        (
            "ModifyAccountPassword",
            {**reset, "OldAccountPassword": new_password(), "NewAccountPassword": new_password()},
        ),
        ("CreateAccount", create(instance, "Ghost")),
        ("CreateAccount", create(instance, "g" * 101)),
        ("CreateAccount", create(instance, "ghost", AccountPrivilege="RoleAdmin")),
        ("CreateAccount", create(instance, "ghost", AccountType="Super")),
        ("CreateAccount", create(instance, "ghost", AccountDescription="1bad")),
        ("CreateAccount", create(instance, account)),  # duplicate
        ("GrantAccountPrivilege", {**reset, "AccountPrivilege": "RoleAdmin"}),
        (
            "GrantAccountPrivilege",
            {"InstanceId": iid, "AccountName": "default", "AccountPrivilege": "RoleReadOnly"},
        ),
        (
            "GrantAccountPrivilege",
            {"InstanceId": iid, "AccountName": "ghost", "AccountPrivilege": "RoleReadOnly"},
        ),
        ("DeleteAccount", {"InstanceId": iid, "AccountName": "default"}),
        ("DeleteAccount", {"InstanceId": iid, "AccountName": iid}),
        ("DeleteAccount", {"InstanceId": iid, "AccountName": "rkvstore_mgmt"}),
        ("DeleteAccount", {"InstanceId": iid, "AccountName": "ghost"}),
        (
            "ResetAccountPassword",
            {**reset, "AccountName": "rkvstore_mgmt", "AccountPassword": new_password()},
        ),
        (
            "ResetAccountPassword",
            {**reset, "AccountName": "ghost", "AccountPassword": new_password()},
        ),
        (
            "ResetAccountPassword",
            {
                "InstanceId": iid,
                "AccountName": "default",
                "AccountPassword": password(12, extra="~"),
            },
        ),
    ]
    batch += [("CreateAccount", create(instance, name)) for name in RESERVED]
    return batch


def test_invalid_input_changes_nothing_on_redis(
    rpc: RpcClient, instances: dict[str, Instance], target: Target
) -> None:
    # The STAND_ALONE instance gets an account of its own for the batch.
    sa = instances[STAND_ALONE]
    sa_password = new_password()
    ok(rpc, "CreateAccount", create(sa, "target", AccountPassword=sa_password))
    try:
        subjects = [(target.instance, target.password), (sa, sa_password)]
        before = {
            i.instance_id: (acl_snapshot(i.node_ports, i.password), names(rpc, i))
            for i, _ in subjects
        }
        for instance, current in subjects:
            for action, params in _invalid_batch(instance, "target", current):
                response = rpc.request(action, params)
                assert 400 <= response.status_code < 500, (action, response.json())
        for instance, current in subjects:
            after = (acl_snapshot(instance.node_ports, instance.password), names(rpc, instance))
            assert after == before[instance.instance_id]
            for port in instance.node_ports:
                assert can_login(port, "target", current)
                assert can_login(port, "default", instance.password)
    finally:
        delete(rpc, sa, "target")


def test_the_shared_default_password_still_works(instances: dict[str, Instance]) -> None:
    """Nothing in this module changed the instances' default accounts."""
    for instance in instances.values():
        for port in instance.node_ports:
            with connect(port, "default", instance.password) as client:
                assert client.ping()
