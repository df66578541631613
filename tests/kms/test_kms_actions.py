"""KMS actions' answers and refusals (docs/kms.md), tenants and RAM, through the KMS SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_tea_openapi import utils_models as open_api_models
from darabonba.runtime import RuntimeOptions

from tests.api.instances import can_login, new_password, rpc_client
from tests.api.ram_helpers import (
    discover_account_id,
    document,
    expect_denied,
    expect_error,
    make_user,
    root_of,
    run_cli,
    statement,
)
from tests.api.sdk_clients import new_sdk_client, rpc_params
from tests.api.test_accounts_sdk import expect_error as expect_kv_error
from tests.conftest import ARTIFACT_DIRS, remember_secret
from tests.integration.test_resilience import own_deployment, wait_for
from tests.kms.kms_helpers import (
    DOUBLE_USERS,
    DUAL_PASSWORD,
    MASTER_SLAVE,
    STAND_ALONE,
    KmsDeployment,
    create_secret,
    kms_client,
    logs_in_everywhere,
    new_name,
    read_value,
    refused_everywhere,
    rotate,
)

INVALID = ("InvalidParameter", 400, "The specified parameter is not valid.")
NOT_FOUND = ("Forbidden.ResourceNotFound", 404, "The resource is not found.")
EXISTS = ("Rejected.ResourceExist", 409, "The resource already exists.")
IN_DELETE_WINDOW = ("Rejected.ResourceInDeleteWindow", 409, "The secret is planned to be deleted.")
TYPE_NOT_SUPPORTED = (
    "OperationDenied.SecretTypeNotSupported",
    403,
    "rkvstore manages only Redis secrets: SecretType must be Redis.",
)
POLICY_NOT_SUPPORTED = (
    "OperationDenied.SecretPolicyNotSupported",
    403,
    "rkvstore does not support secret policies: use RAM policies on kms:* actions.",
)
DRY_RUN = (
    "DryRunOperationError",
    400,
    "The request would succeed if the DryRun parameter were not configured.",
)
MANAGED = (
    "OperationDenied.AccountManagedBySecret",
    403,
    "The account is managed by a KMS secret: rotate or delete the secret instead.",
)


def _instance(deployment: KmsDeployment) -> str:
    return deployment.instances[STAND_ALONE]


def _create(deployment: KmsDeployment, **overrides: Any) -> Any:
    client = kms_client(deployment.server)
    return lambda: create_secret(
        client,
        overrides.pop("name", new_name()),
        overrides.pop("instance_id", _instance(deployment)),
        overrides.pop("account", new_name("a")),
        overrides.pop("mode", DUAL_PASSWORD),
        **overrides,
    )


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"secret_type": "Generic"}, TYPE_NOT_SUPPORTED),
        ({"secret_type": "Kerberos"}, INVALID),
        ({"policy": '{"Statement":[]}'}, POLICY_NOT_SUPPORTED),
        ({"secret_data": "hunter2hunter2"}, INVALID),
        ({"name": "acs/reserved"}, INVALID),
        ({"version_id": "bad version"}, INVALID),
        ({"config": {"SecretSubType": "Triple"}}, INVALID),
        ({"config": {"Typo": 1}}, INVALID),
        ({"config": {"RegionId": "cn-elsewhere"}}, INVALID),
        ({"mode": DOUBLE_USERS, "config": {"CloneAccountName": "other"}}, INVALID),
        ({"account": "Upper"}, INVALID),
        ({"account": "default"}, INVALID),
        ({"privilege": "RoleGod"}, INVALID),
        ({"config": {"GracePeriod": "1 hour"}}, INVALID),
        ({"enable_automatic_rotation": True, "rotation_interval": "7 days"}, INVALID),
        ({"enable_automatic_rotation": True, "rotation_interval": "0s"}, INVALID),
        ({"tags": "[" * 5000}, INVALID),
        ({"tags": "[" * 1000}, INVALID),
        ({"instance_id": "r-nosuchinstance0"}, NOT_FOUND),
        ({"config": {"UseExistingAccount": True}}, NOT_FOUND),
    ],
)
def test_create_secret_refuses_what_the_contract_refuses(
    deployment: KmsDeployment, overrides: dict[str, Any], error: tuple[str, int, str]
) -> None:
    expect_error(_create(deployment, **overrides), error)


def test_names_and_accounts_are_not_taken_twice(deployment: KmsDeployment) -> None:
    name, account = new_name(), new_name("a")
    _create(deployment, name=name, account=account)()
    expect_error(_create(deployment, name=name), EXISTS)
    expect_error(_create(deployment, account=account), EXISTS)  # held by the first secret
    # An account that exists is adopted only when asked to (UseExistingAccount).
    other = new_name("b")
    kv = new_sdk_client(*_keys(deployment))
    kv.create_account(
        kv_models.CreateAccountRequest(
            instance_id=_instance(deployment),
            account_name=other,
            account_password=remember_secret(new_password()),
        )
    )
    expect_error(_create(deployment, account=other), EXISTS)


def _keys(deployment: KmsDeployment) -> tuple[str, str, str]:
    server = deployment.server
    return server.endpoint, server.access_key_id, server.access_key_secret


def test_a_managed_account_is_changed_only_through_its_secret(deployment: KmsDeployment) -> None:
    name, account = new_name(), new_name("a")
    _create(deployment, name=name, account=account)()
    kv = new_sdk_client(*_keys(deployment))
    request = kv_models.ResetAccountPasswordRequest(
        instance_id=_instance(deployment), account_name=account, account_password=new_password()
    )
    expect_kv_error(lambda: kv.reset_account_password(request), MANAGED)


def test_reads_answer_what_the_models_describe(deployment: KmsDeployment) -> None:
    client = kms_client(deployment.server)
    name, account = new_name(), new_name("a")
    tags = json.dumps([{"TagKey": "team", "TagValue": "pay"}])
    _create(deployment, name=name, account=account, description="cache", tags=tags)()
    body = client.get_secret_value(
        kms_models.GetSecretValueRequest(secret_name=name, fetch_extended_config=True)
    ).body
    assert (body.secret_type, body.secret_data_type, body.version_stages.version_stage) == (
        "Redis",
        "text",
        ["ACSCurrent"],
    )
    assert json.loads(body.extended_config)["AccountName"] == account
    assert body.automatic_rotation == "Disabled"
    expect_error(
        lambda: client.get_secret_value(
            kms_models.GetSecretValueRequest(secret_name=name, version_stage="ACSPrevious")
        ),
        NOT_FOUND,  # DualPassword: no previous before the first rotation
    )
    expect_error(
        lambda: client.get_secret_value(
            kms_models.GetSecretValueRequest(secret_name=name, dry_run="true")
        ),
        DRY_RUN,
    )
    described = client.describe_secret(
        kms_models.DescribeSecretRequest(secret_name=name, fetch_tags="true")
    ).body
    assert described.description == "cache"
    assert described.arn.endswith(f":secret/{name}")
    assert [(t.tag_key, t.tag_value) for t in described.tags.tag] == [("team", "pay")]
    listed = client.list_secrets(
        kms_models.ListSecretsRequest(filters=json.dumps([{"Key": "SecretName", "Values": [name]}]))
    ).body
    assert (listed.total_count, [s.secret_name for s in listed.secret_list.secret]) == (1, [name])
    by_tag = client.list_secrets(
        kms_models.ListSecretsRequest(
            filters=json.dumps([{"Key": "TagValue", "Values": ["pay"]}]), page_size=100
        )
    ).body
    assert name in [s.secret_name for s in by_tag.secret_list.secret]
    rotate(client, name, "v2")
    versions = client.list_secret_version_ids(
        kms_models.ListSecretVersionIdsRequest(secret_name=name)
    ).body
    assert [
        (v.version_id, v.version_stages.version_stage) for v in versions.version_ids.version_id
    ] == [
        ("v2", ["ACSCurrent"]),
        ("v1", ["ACSPrevious"]),
    ]
    expect_error(
        lambda: client.get_secret_value(kms_models.GetSecretValueRequest(secret_name="nope")),
        NOT_FOUND,
    )
    # One more rotation deprecates v1: listed only when asked, paged by the database.
    rotate(client, name, "v3")
    pages = [
        client.list_secret_version_ids(
            kms_models.ListSecretVersionIdsRequest(
                secret_name=name, include_deprecated="true", page_size=2, page_number=n
            )
        ).body
        for n in (1, 2)
    ]
    assert [p.total_count for p in pages] == [3, 3]
    assert [
        (v.version_id, v.version_stages.version_stage)
        for p in pages
        for v in p.version_ids.version_id
    ] == [("v3", ["ACSCurrent"]), ("v2", ["ACSPrevious"]), ("v1", [])]


def test_an_existing_account_is_adopted_and_its_old_password_ends_with_the_grace(
    deployment: KmsDeployment,
) -> None:
    instance_id = _instance(deployment)
    ports = deployment.ports(instance_id)
    account, old = new_name("old"), remember_secret(new_password())
    kv = new_sdk_client(*_keys(deployment))
    kv.create_account(
        kv_models.CreateAccountRequest(
            instance_id=instance_id, account_name=account, account_password=old
        )
    )
    name = new_name()
    _create(
        deployment,
        name=name,
        account=account,
        privilege=None,
        config={"UseExistingAccount": True, "GracePeriod": "2s"},
    )()
    client = kms_client(deployment.server)
    current = read_value(client, name)
    assert current.account == account
    assert logs_in_everywhere(ports, current)
    assert all(can_login(p, account, old) for p in ports)  # running clients keep working
    wait_for("the grace ended", lambda: not any(can_login(p, account, old) for p in ports), 15)
    assert logs_in_everywhere(ports, current)


def test_deletion_waits_for_its_window_and_restore_cancels_it(deployment: KmsDeployment) -> None:
    client = kms_client(deployment.server)
    name, account = new_name(), new_name("a")
    _create(deployment, name=name, account=account)()
    creds = read_value(client, name)
    expect_error(
        lambda: client.delete_secret(
            kms_models.DeleteSecretRequest(secret_name=name, recovery_window_in_days="3")
        ),
        INVALID,
    )
    client.delete_secret(
        kms_models.DeleteSecretRequest(secret_name=name, recovery_window_in_days="7")
    )
    expect_error(lambda: read_value(client, name), IN_DELETE_WINDOW)
    expect_error(lambda: rotate(client, name, "later"), IN_DELETE_WINDOW)
    described = client.describe_secret(kms_models.DescribeSecretRequest(secret_name=name)).body
    assert described.planned_delete_time
    client.restore_secret(kms_models.RestoreSecretRequest(secret_name=name))
    assert read_value(client, name).password == creds.password

    # Forced: the secret is gone at once; the account stays, with its password,
    # and is an ordinary account again.
    client.delete_secret(
        kms_models.DeleteSecretRequest(secret_name=name, force_delete_without_recovery="true")
    )
    expect_error(lambda: read_value(client, name), NOT_FOUND)
    ports = deployment.ports(_instance(deployment))
    assert logs_in_everywhere(ports, creds)
    kv = new_sdk_client(*_keys(deployment))
    fresh = remember_secret(new_password())
    kv.reset_account_password(
        kv_models.ResetAccountPasswordRequest(
            instance_id=_instance(deployment), account_name=account, account_password=fresh
        )
    )
    assert refused_everywhere(ports, creds)


# --------------------------------------------------------------------------- tenants and RAM


def test_another_tenant_sees_no_secret_and_reaches_no_instance(deployment: KmsDeployment) -> None:
    name = new_name()
    _create(deployment, name=name)()
    done = run_cli(
        "tenants",
        "create",
        new_name("t"),
        "--data-dir",
        str(deployment.server.data_dir),
        "--json",
        env={"RKVSTORE_MASTER_KEY": deployment.master_key},  # the server's key, not a file's
    )
    assert done.returncode == 0, done.stderr
    other = json.loads(done.stdout)
    theirs = kms_client(
        deployment.server, key=(other["AccessKeyId"], remember_secret(other["AccessKeySecret"]))
    )
    expect_error(lambda: read_value(theirs, name), NOT_FOUND)
    expect_error(
        lambda: create_secret(
            theirs, new_name(), _instance(deployment), new_name("x"), DUAL_PASSWORD
        ),
        NOT_FOUND,
    )
    assert theirs.list_secrets(kms_models.ListSecretsRequest()).body.total_count == 0


@pytest.fixture(scope="module")
def account_id(deployment: KmsDeployment) -> str:
    return discover_account_id(root_of(deployment.server))


def test_ram_users_read_only_the_secrets_they_are_granted(
    deployment: KmsDeployment, account_id: str
) -> None:
    root = root_of(deployment.server)
    mine, other = new_name(), new_name()
    for secret in (mine, other):
        _create(deployment, name=secret)()
    kvstore_only = make_user(root, account_id, system=["AliyunKvstoreFullAccess"])
    as_kvstore = kms_client(
        deployment.server, key=(kvstore_only.access_key_id, kvstore_only.access_key_secret)
    )
    expect_denied(lambda: read_value(as_kvstore, mine), kvstore_only, "kms:GetSecretValue")
    one = make_user(
        root,
        account_id,
        documents=[document(statement("kms:GetSecretValue", f"acs:kms:*:*:secret/{mine}"))],
    )
    as_one = kms_client(deployment.server, key=(one.access_key_id, one.access_key_secret))
    assert read_value(as_one, mine).account
    expect_denied(lambda: read_value(as_one, other), one, "kms:GetSecretValue")
    # Creating a secret hands out an account's password: kms:CreateSecret alone is not enough.
    creator = make_user(root, account_id, documents=[document(statement("kms:CreateSecret"))])
    as_creator = kms_client(
        deployment.server, key=(creator.access_key_id, creator.access_key_secret)
    )
    expect_denied(
        lambda: create_secret(
            as_creator, new_name(), _instance(deployment), new_name("c"), DUAL_PASSWORD
        ),
        creator,
        "kvstore:CreateAccount",
    )


def test_rotate_again_with_the_same_version_is_a_no_op(deployment: KmsDeployment) -> None:
    client = kms_client(deployment.server)
    name = new_name()
    _create(deployment, name=name)()
    rotate(client, name, "v2")
    before = read_value(client, name)
    rotate(client, name, "v2")  # a retry: nothing rotates
    assert read_value(client, name) == before


def test_a_default_account_under_a_secret_keeps_its_password_from_new_password(
    deployment: KmsDeployment,
) -> None:
    """ModifyInstanceAttribute's NewPassword resets the default accounts: not one a secret holds."""
    instance_id = deployment.instances[MASTER_SLAVE]
    name = new_name()
    _create(
        deployment,
        name=name,
        instance_id=instance_id,
        account="default",
        privilege=None,
        config={"UseExistingAccount": True, "GracePeriod": "0s"},
    )()
    client = kms_client(deployment.server)
    creds = read_value(client, name)
    kv = new_sdk_client(*_keys(deployment))
    request = kv_models.ModifyInstanceAttributeRequest(
        instance_id=instance_id, new_password=remember_secret(new_password())
    )
    expect_kv_error(lambda: kv.modify_instance_attribute(request), MANAGED)
    assert logs_in_everywhere(deployment.ports(instance_id), creds)
    client.delete_secret(
        kms_models.DeleteSecretRequest(secret_name=name, force_delete_without_recovery="true")
    )


def test_a_registered_deployment_rotates_on_every_node(
    deployment: KmsDeployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A master and a replica the test runs itself, registered: both modes rotate on both."""
    root = tmp_path_factory.mktemp("kms-own")
    ARTIFACT_DIRS.append(root)
    with own_deployment(root) as own, rpc_client(deployment.server) as rpc:
        instance_id = rpc.call(
            "RegisterInstance",
            {
                "Endpoint": f"127.0.0.1:{own.master.port}",
                "AdminUserName": "admin",
                "AdminPassword": own.admin_password,
            },
        )["InstanceId"]
        try:
            ports = [node.port for node in own.nodes]
            client = kms_client(deployment.server)
            for mode in (DOUBLE_USERS, DUAL_PASSWORD):
                name = new_name()
                _create(deployment, name=name, instance_id=instance_id, mode=mode)()
                first = read_value(client, name)
                rotate(client, name, "v2")
                rotate(client, name, "v3")
                assert logs_in_everywhere(ports, read_value(client, name))
                assert logs_in_everywhere(ports, read_value(client, name, "ACSPrevious"))
                assert refused_everywhere(ports, first)
        finally:
            rpc.call("DeleteInstance", {"InstanceId": instance_id})


def test_a_deny_on_one_secret_hides_it_from_list_secrets(
    deployment: KmsDeployment, account_id: str
) -> None:
    """As DescribeInstances: ListSecrets on secret/*, and each secret listed must be allowed."""
    root = root_of(deployment.server)
    shown, hidden = new_name("shown"), new_name("hidden")
    for secret in (shown, hidden):
        _create(deployment, name=secret)()
    user = make_user(
        root,
        account_id,
        documents=[
            document(
                statement("kms:ListSecrets"),
                statement("kms:ListSecrets", f"acs:kms:*:*:secret/{hidden}", effect="Deny"),
            )
        ],
    )
    client = kms_client(deployment.server, key=(user.access_key_id, user.access_key_secret))
    listed = client.list_secrets(kms_models.ListSecretsRequest(page_size=100)).body
    names = [s.secret_name for s in listed.secret_list.secret]
    assert shown in names and hidden not in names
    assert listed.total_count == len(names)
    everything = kms_client(deployment.server).list_secrets(
        kms_models.ListSecretsRequest(page_size=100)
    )
    assert hidden in [s.secret_name for s in everything.body.secret_list.secret]


def test_a_deny_on_a_secret_holds_when_the_call_names_it_by_its_arn(
    deployment: KmsDeployment, account_id: str
) -> None:
    """RAM, the audit trail and the handler see one name, whichever way the call gives it."""
    root = root_of(deployment.server)
    guarded = new_name("guarded")
    _create(deployment, name=guarded)()
    user = make_user(
        root,
        account_id,
        documents=[
            document(
                statement("kms:*", "acs:kms:*:*:secret/*"),
                statement(
                    "kms:*", f"acs:kms:cn-hangzhou:{account_id}:secret/{guarded}", effect="Deny"
                ),
            )
        ],
    )
    client = kms_client(deployment.server, key=(user.access_key_id, user.access_key_secret))
    as_arn = f"acs:kms:cn-hangzhou:{account_id}:secret/{guarded}"
    for name in (guarded, as_arn):
        expect_denied(
            lambda name=name: read_value(client, name),
            user,
            "kms:GetSecretValue",
            kind="ExplicitDeny",
        )
        expect_denied(
            lambda name=name: client.describe_secret(
                kms_models.DescribeSecretRequest(secret_name=name)
            ),
            user,
            "kms:DescribeSecret",
            kind="ExplicitDeny",
        )
    # The root reads it by either name; another account's ARN is not found.
    root_client = kms_client(deployment.server)
    assert read_value(root_client, as_arn).account == read_value(root_client, guarded).account
    expect_error(
        lambda: read_value(root_client, f"acs:kms:cn-hangzhou:1111111111111111:secret/{guarded}"),
        NOT_FOUND,
    )


@pytest.mark.parametrize("text", ["[" * 1000, "[" * 9000, '[{"Key":"SecretName","Values":1}]'])
def test_list_secrets_refuses_malformed_filters(deployment: KmsDeployment, text: str) -> None:
    client = kms_client(deployment.server)
    expect_error(lambda: client.list_secrets(kms_models.ListSecretsRequest(filters=text)), INVALID)


def test_an_extended_config_nested_deep_is_refused(deployment: KmsDeployment) -> None:
    """``[`` a thousand times fits ExtendedConfig's 1,024 characters: a 400, not a 500."""
    client = kms_client(deployment.server)
    query = {"SecretName": new_name(), "SecretType": "Redis", "VersionId": "v1"}
    request = open_api_models.OpenApiRequest(
        query={**query, "ExtendedConfig": "[" * 1000}, body={"SecretData": "$Auto"}
    )
    expect_error(
        lambda: client.call_api(
            rpc_params("CreateSecret", "2016-01-20"), request, RuntimeOptions()
        ),
        INVALID,
    )
