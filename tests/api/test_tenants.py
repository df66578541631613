"""Tenants end to end: the operator's ``tenants create``, isolation, and the RAM CLI.

One server serves the module. Tenant A is the server's first tenant (its root
key comes from the environment); tenant B is made with ``rkvstore tenants
create`` on the running server's data dir. Each has one STAND_ALONE instance
with a custom account ``app``. Whatever B does to A's instance (and A to B's),
the answer must be exactly the answer for an instance that does not exist.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as KvClient
from alibabacloud_ram20150501 import models as ram_models

from tests.api.instances import STAND_ALONE, Instance, can_login, new_password, provision
from tests.api.ram_helpers import (
    ACCOUNT_ID,
    FORBIDDEN_RAM,
    INSTANCE_NOT_FOUND,
    MODULE,
    SECRETS_SEEN,
    Answer,
    Principal,
    attach_to_group,
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
    outcome,
    ram_server,
    root_of,
    run_cli,
    secrets_in_server_files,
    statement,
    unique,
)
from tests.conftest import LiveServer

ACCOUNT = "app"
MADE_UP = "r-" + "q7" * 9  # shaped like an instance ID; no tenant has it
TIMING_CALLS = 20
TIMING_BOUND = 3.0


# --------------------------------------------------------------------------- fixtures


@dataclass
class Tenant:
    root: Principal
    account_id: str
    instance: Instance
    password: str  # of its account "app"

    @property
    def instance_id(self) -> str:
        return self.instance.instance_id


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with ram_server(tmp_path_factory.mktemp("tenants")) as server:
        yield server


@pytest.fixture(scope="module")
def tenants(live_server: LiveServer) -> Iterator[tuple[Tenant, Tenant]]:
    root_a = root_of(live_server)
    root_b = create_tenant(live_server)
    account_a = discover_account_id(root_a)
    assert root_b.account_id is not None
    assert account_a != root_b.account_id
    with (
        provision(live_server, STAND_ALONE) as (instance_a,),
        provision(root_b.as_server(live_server), STAND_ALONE) as (instance_b,),
    ):
        made = []
        for root, account_id, instance in (
            (root_a, account_a, instance_a),
            (root_b, root_b.account_id, instance_b),
        ):
            password = new_password()
            create_account(root.kv(), instance.instance_id, ACCOUNT, password)
            made.append(Tenant(root, account_id, instance, password))
        yield made[0], made[1]


@pytest.fixture(params=["B-on-A", "A-on-B"])
def direction(
    request: pytest.FixtureRequest, tenants: tuple[Tenant, Tenant]
) -> tuple[Tenant, Tenant]:
    """(owner, intruder)."""
    a, b = tenants
    return (a, b) if request.param == "B-on-A" else (b, a)


# --------------------------------------------------------------------------- helpers


def key_works(principal: Principal) -> None:
    """The key authenticates: a root key can list its (empty or not) instances."""
    body = principal.kv().describe_instances(kv_models.DescribeInstancesRequest()).body
    assert isinstance(body.total_count, int)


Probe = Callable[[KvClient, str], Any]

PROBES: dict[str, Probe] = {
    "DescribeInstanceAttribute": lambda kv, i: kv.describe_instance_attribute(
        kv_models.DescribeInstanceAttributeRequest(instance_id=i)
    ),
    "DescribeAccounts": lambda kv, i: kv.describe_accounts(
        kv_models.DescribeAccountsRequest(instance_id=i)
    ),
    "ResetAccountPassword": lambda kv, i: kv.reset_account_password(
        kv_models.ResetAccountPasswordRequest(
            instance_id=i, account_name=ACCOUNT, account_password=new_password()
        )
    ),
    "ModifyAccountDescription": lambda kv, i: kv.modify_account_description(
        kv_models.ModifyAccountDescriptionRequest(
            instance_id=i, account_name=ACCOUNT, account_description="takenover"
        )
    ),
    "GrantAccountPrivilege": lambda kv, i: kv.grant_account_privilege(
        kv_models.GrantAccountPrivilegeRequest(
            instance_id=i, account_name=ACCOUNT, account_privilege="RoleReadOnly"
        )
    ),
    "CreateAccount": lambda kv, i: kv.create_account(
        kv_models.CreateAccountRequest(
            instance_id=i, account_name="intruder", account_password=new_password()
        )
    ),
    "DeleteAccount": lambda kv, i: kv.delete_account(
        kv_models.DeleteAccountRequest(instance_id=i, account_name=ACCOUNT)
    ),
    "DeleteInstance": lambda kv, i: kv.delete_instance(
        kv_models.DeleteInstanceRequest(instance_id=i)
    ),
}


def answers(kv: KvClient, real_id: str) -> dict[str, tuple[Answer | None, Answer | None]]:
    """For every probe: (the answer on ``real_id``, the answer on a made-up ID)."""
    found = {}
    for name, probe in PROBES.items():
        real = outcome(lambda p=probe: p(kv, real_id))
        found[name] = (real, outcome(lambda p=probe: p(kv, MADE_UP)))
    return found


def listed_ids(kv: KvClient, **filters: Any) -> tuple[int, set[str]]:
    body = kv.describe_instances(kv_models.DescribeInstancesRequest(**filters)).body
    return body.total_count, {i.instance_id for i in body.instances.kvstore_instance}


def assert_untouched(owner: Tenant) -> None:
    """The owner still sees its instance, its account, its password and nothing new."""
    kv = owner.root.kv()
    _, ids = listed_ids(kv)
    assert owner.instance_id in ids
    attribute = kv.describe_instance_attribute(
        kv_models.DescribeInstanceAttributeRequest(instance_id=owner.instance_id)
    ).body.instances.dbinstance_attribute
    assert attribute[0].instance_status == "Normal"
    accounts = {
        a.account_name: a for a in describe_accounts(kv, owner.instance_id).accounts.account
    }
    assert set(accounts) == {ACCOUNT, "default", owner.instance_id}
    app = accounts[ACCOUNT]
    assert app.account_description in ("", None)
    privileges = [p.account_privilege for p in app.database_privileges.database_privilege]
    assert privileges == ["RoleReadWrite"]
    assert can_login(owner.instance.port, ACCOUNT, owner.password)


# --------------------------------------------------------------------------- tenants create


def _check_json_output(live_server: LiveServer, stdout: str) -> Principal:
    out = json.loads(stdout)
    assert set(out) == {"AccountId", "AccessKeyId", "AccessKeySecret"}
    keep_secret(out["AccessKeySecret"])
    assert ACCOUNT_ID.match(out["AccountId"]), out["AccountId"]
    assert out["AccessKeyId"] and out["AccessKeySecret"]
    return Principal(
        live_server.endpoint, out["AccessKeyId"], out["AccessKeySecret"], None, out["AccountId"]
    )


def test_tenants_create_json_with_python_dash_m(live_server: LiveServer) -> None:
    """``python -m rkvstore.cli tenants create NAME --data-dir D --json`` works too.

    Fails while cli.py runs ``main()`` under ``if __name__ == "__main__"`` before the
    ``tenants`` and ``ram`` groups are defined (they are added further down the file).
    """
    name = unique("dash-m")
    done = run_cli(
        "tenants", "create", name, "--data-dir", str(live_server.data_dir), "--json", how=MODULE
    )
    assert done.returncode == 0, done.stderr
    key_works(_check_json_output(live_server, done.stdout))


def test_tenants_create_json_key_works_at_once(live_server: LiveServer) -> None:
    name = unique("json")
    done = run_cli("tenants", "create", name, "--data-dir", str(live_server.data_dir), "--json")
    assert done.returncode == 0, done.stderr
    tenant = _check_json_output(live_server, done.stdout)
    key_works(tenant)  # the running server knows it without a restart
    total, ids = listed_ids(tenant.kv())
    assert (total, ids) == (0, set())


def test_tenants_create_twice_fails_clearly(live_server: LiveServer) -> None:
    name = unique("twice")
    args = ("tenants", "create", name, "--data-dir", str(live_server.data_dir), "--json")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    keep_secret(json.loads(first.stdout)["AccessKeySecret"])
    second = run_cli(*args)
    assert second.returncode != 0
    assert f"a tenant named '{name}' exists already" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert "AccessKeySecret" not in second.stdout + second.stderr


def test_tenants_create_without_json_prints_the_key(live_server: LiveServer) -> None:
    name = unique("plain")
    done = run_cli("tenants", "create", name, "--data-dir", str(live_server.data_dir))
    assert done.returncode == 0, done.stderr
    fields: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in ("AccessKeyId", "AccessKeySecret"):
            fields[key] = value.strip()
    assert set(fields) == {"AccessKeyId", "AccessKeySecret"}, done.stdout
    keep_secret(fields["AccessKeySecret"])
    assert name in done.stdout
    account_ids = [w for w in done.stdout.split() if ACCOUNT_ID.match(w)]
    assert len(account_ids) == 1, done.stdout
    key_works(Principal(live_server.endpoint, fields["AccessKeyId"], fields["AccessKeySecret"]))


def test_the_bootstrap_tenant_and_a_new_one_differ(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    assert ACCOUNT_ID.match(a.account_id) and ACCOUNT_ID.match(b.account_id)
    assert a.account_id != b.account_id


# --------------------------------------------------------------------------- isolation


def test_another_tenants_instance_is_not_listed(direction: tuple[Tenant, Tenant]) -> None:
    owner, intruder = direction
    kv = intruder.root.kv()
    _, ids = listed_ids(kv)
    assert owner.instance_id not in ids
    assert intruder.instance_id in ids
    assert listed_ids(kv, instance_ids=owner.instance_id) == (0, set())
    assert listed_ids(kv, instance_ids=MADE_UP) == (0, set())
    assert listed_ids(kv, search_key=owner.instance_id) == (0, set())
    both = f"{owner.instance_id},{intruder.instance_id}"
    assert listed_ids(kv, instance_ids=both) == (1, {intruder.instance_id})


def test_the_root_of_another_tenant_gets_not_found_like_a_made_up_id(
    direction: tuple[Tenant, Tenant],
) -> None:
    owner, intruder = direction
    for name, (real, made_up) in answers(intruder.root.kv(), owner.instance_id).items():
        assert real is not None, f"{name} succeeded on another tenant's instance"
        assert real == made_up, name
        assert real.triple == INSTANCE_NOT_FOUND, (name, real)
        assert real.detail is None
    assert_untouched(owner)


def test_no_policy_of_another_tenant_reaches_an_instance(
    tenants: tuple[Tenant, Tenant],
) -> None:
    """B's RAM users (``kvstore:*`` on ``*``, or on A's account ID) never reach A's instance."""
    a, b = tenants
    everything = document(statement("kvstore:*"))
    on_a = document(
        statement(
            "kvstore:*",
            [instance_arn("*", a.account_id), instance_arn(a.instance_id, a.account_id)],
        )
    )
    star = make_user(b.root, b.account_id, documents=[everything])
    aimed = make_user(b.root, b.account_id, documents=[on_a])
    both = make_user(b.root, b.account_id, documents=[everything, on_a])

    for user in (star, both):
        kv = user.kv()
        _, ids = listed_ids(kv)
        assert a.instance_id not in ids and b.instance_id in ids
        assert listed_ids(kv, instance_ids=a.instance_id) == (0, set())
        for name, (real, made_up) in answers(kv, a.instance_id).items():
            assert real is not None, f"{name} succeeded on another tenant's instance"
            assert real == made_up, name
            assert real.triple == INSTANCE_NOT_FOUND, (name, real)

    kv = aimed.kv()
    # A's account ID in the ARN matches nothing: every call is an implicit deny, on
    # A's real instance exactly as on a made-up one (and on B's own instance too).
    expect_denied(lambda: listed_ids(kv), aimed, "kvstore:DescribeInstances")
    for name, (real, made_up) in answers(kv, a.instance_id).items():
        assert real is not None, f"{name} succeeded on another tenant's instance"
        assert real == made_up, name
        assert real.triple == FORBIDDEN_RAM, (name, real)
        assert real.detail is not None and real.detail["NoPermissionType"] == "ImplicitDeny"
        assert real.detail["AuthPrincipalOwnerId"] == b.account_id
        own = outcome(lambda n=name: PROBES[n](kv, b.instance_id))
        assert own is not None and own.triple == FORBIDDEN_RAM, (name, own)
    assert_untouched(a)
    assert_untouched(b)


def test_not_found_takes_the_same_time_for_a_real_foreign_id(
    tenants: tuple[Tenant, Tenant],
) -> None:
    a, b = tenants
    kv = b.root.kv()
    probe = PROBES["DescribeInstanceAttribute"]

    def timed(instance_id: str) -> float:
        started = time.perf_counter()
        answer = outcome(lambda: probe(kv, instance_id))
        elapsed = time.perf_counter() - started
        assert answer is not None and answer.triple == INSTANCE_NOT_FOUND
        return elapsed

    for _ in range(3):  # warm up connections and caches for both
        timed(a.instance_id)
        timed(MADE_UP)
    real, made_up = [], []
    for _ in range(TIMING_CALLS):  # interleaved, so drift hits both alike
        real.append(timed(a.instance_id))
        made_up.append(timed(MADE_UP))
    median_real, median_made_up = statistics.median(real), statistics.median(made_up)
    ratio = max(median_real, median_made_up) / min(median_real, median_made_up)
    print(
        f"\nnot-found median over {TIMING_CALLS} calls: other tenant's real id "
        f"{median_real * 1000:.2f} ms, made-up id {median_made_up * 1000:.2f} ms, ratio {ratio:.2f}"
    )
    assert ratio < TIMING_BOUND


def test_ram_entities_belong_to_one_tenant(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    user_a = make_user(a.root, a.account_id, system=("AliyunKvstoreReadOnlyAccess",))
    name = str(user_a.user_name)
    policy_a = create_policy(a.root.ram(), document(statement("kvstore:DescribeInstances")))
    ram_b = b.root.ram()

    user_missing = ("EntityNotExist.User", 404, "The user does not exist.")
    expect_error(lambda: ram_b.get_user(ram_models.GetUserRequest(user_name=name)), user_missing)
    expect_error(
        lambda: ram_b.list_access_keys(ram_models.ListAccessKeysRequest(user_name=name)),
        user_missing,
    )
    expect_error(
        lambda: ram_b.get_policy(
            ram_models.GetPolicyRequest(policy_name=policy_a, policy_type="Custom")
        ),
        ("EntityNotExist.Policy", 404, "The policy does not exist."),
    )
    listed = ram_b.list_users(ram_models.ListUsersRequest(max_items=1000)).body.users.user
    assert name not in {u.user_name for u in listed}

    # The same names are free in B, and B's twin cannot touch A's user's key.
    ram_b.create_user(ram_models.CreateUserRequest(user_name=name))
    create_policy(ram_b, document(statement("kvstore:DescribeInstances")), policy_a)
    key_missing = ("EntityNotExist.User.AccessKey", 404, "The user access key does not exist.")
    for user_name in (name, None):
        expect_error(
            lambda u=user_name: ram_b.update_access_key(
                ram_models.UpdateAccessKeyRequest(
                    user_access_key_id=user_a.access_key_id, status="Inactive", user_name=u
                )
            ),
            key_missing,
        )
        expect_error(
            lambda u=user_name: ram_b.delete_access_key(
                ram_models.DeleteAccessKeyRequest(
                    user_access_key_id=user_a.access_key_id, user_name=u
                )
            ),
            key_missing,
        )
    assert (
        ram_b.list_access_keys(
            ram_models.ListAccessKeysRequest(user_name=name)
        ).body.access_keys.access_key
        == []
    )
    listed_ids(user_a.kv())  # A's user and its key are as they were


# --------------------------------------------------------------------------- the RAM CLI


def test_cli_daily_tasks(
    tenants: tuple[Tenant, Tenant], live_server: LiveServer, tmp_path: Path
) -> None:
    a, _ = tenants
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": a.root.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": a.root.access_key_secret,
        "RKVSTORE_ENDPOINT": f"http://{live_server.endpoint}",
    }
    name = unique("colleague")

    done = run_cli("ram", "create-user", name, "--with-key", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    keep_secret(out["AccessKey"]["AccessKeySecret"])
    assert out["User"]["UserName"] == name
    assert out["AccessKey"]["Status"] == "Active"
    user = Principal(
        live_server.endpoint,
        out["AccessKey"]["AccessKeyId"],
        out["AccessKey"]["AccessKeySecret"],
        name,
        a.account_id,
    )
    # The key authenticates as the new user, who may do nothing yet.
    expect_denied(
        lambda: describe_accounts(user.kv(), a.instance_id), user, "kvstore:DescribeAccounts"
    )

    again = run_cli("ram", "create-user", name, env=env)
    assert again.returncode != 0
    assert "EntityAlreadyExists.User" in again.stderr, again.stderr

    policy, arn = unique("reset-one"), instance_arn(a.instance_id)
    policy_file = tmp_path / "policy.json"
    actions = ["kvstore:ResetAccountPassword", "kvstore:DescribeAccounts"]
    policy_file.write_text(document(statement(actions, arn)))
    done = run_cli(
        "ram", "attach-policy", name, "--policy-name", policy, "--file", str(policy_file), env=env
    )
    assert done.returncode == 0, done.stderr
    assert f"attached {policy} to {name}" in done.stdout
    assert describe_accounts(user.kv(), a.instance_id).accounts.account
    listed = (
        a.root.ram()
        .list_policies_for_user(ram_models.ListPoliciesForUserRequest(user_name=name))
        .body.policies.policy
    )
    assert [(p.policy_name, p.policy_type) for p in listed] == [(policy, "Custom")]

    done = run_cli(
        "ram",
        "attach-policy",
        name,
        "--policy-name",
        "AliyunKvstoreReadOnlyAccess",
        "--system",
        env=env,
    )
    assert done.returncode == 0, done.stderr

    ram = a.root.ram()
    group, group_policy = unique("oncall"), unique("deny-delete")
    ram.create_group(ram_models.CreateGroupRequest(group_name=group))
    deny = statement(
        "kvstore:Delete*",
        "*",
        effect="Deny",
        condition={"IpAddress": {"acs:SourceIp": "127.0.0.0/8"}},
    )
    attach_to_group(ram, group, create_policy(ram, document(deny), group_policy))
    ram.add_user_to_group(ram_models.AddUserToGroupRequest(group_name=group, user_name=name))

    done = run_cli("ram", "who-can", "--user", name, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{name}:"
    body = [line.strip() for line in lines[1:]]
    expected = [
        f"Allow kvstore:ResetAccountPassword, kvstore:DescribeAccounts on {arn}"
        f"   [Custom {policy}, via user]",
        "Allow kvstore:Describe* on *   [System AliyunKvstoreReadOnlyAccess, via user]",
        f"Deny  kvstore:Delete* on * if IpAddress acs:SourceIp ['127.0.0.0/8']"
        f"   [Custom {group_policy}, via group {group}]",
    ]
    assert sorted(body) == sorted(expected), done.stdout

    everyone = run_cli("ram", "who-can", env=env)
    assert everyone.returncode == 0, everyone.stderr
    assert f"{name}:" in everyone.stdout.splitlines()
    assert f"[Custom {group_policy}, via group {group}]" in everyone.stdout

    # What who-can says is what is enforced.
    new = new_password()
    user.kv().reset_account_password(
        kv_models.ResetAccountPasswordRequest(
            instance_id=a.instance_id, account_name=ACCOUNT, account_password=new
        )
    )
    assert can_login(a.instance.port, ACCOUNT, new)
    a.password = new
    expect_denied(
        lambda: user.kv().delete_account(
            kv_models.DeleteAccountRequest(instance_id=a.instance_id, account_name=ACCOUNT)
        ),
        user,
        "kvstore:DeleteAccount",
        "ExplicitDeny",
    )


def test_cli_without_credentials_is_a_usage_error(live_server: LiveServer) -> None:
    done = run_cli(
        "ram",
        "who-can",
        env={
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "",
            "RKVSTORE_ENDPOINT": f"http://{live_server.endpoint}",
        },
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "access-key" in done.stderr.lower()


# --------------------------------------------------------------------------- secrets at rest (last)


def test_zz_no_access_key_secret_in_the_servers_log_or_database(live_server: LiveServer) -> None:
    assert SECRETS_SEEN, "no secret was received: the scan would prove nothing"
    assert (live_server.data_dir / "rkvstore.log").is_file()
    assert list(live_server.data_dir.glob("rkvstore.db*"))
    found = secrets_in_server_files(live_server.data_dir, SECRETS_SEEN)
    assert not found, found
