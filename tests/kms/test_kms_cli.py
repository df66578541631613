"""``rkvstore secrets create|get|rotate|list`` as a subprocess against a live server."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest

from rkvstore.cli_secrets import LIST_COLUMNS
from tests.api.instances import can_login
from tests.api.test_cli import run_cli
from tests.kms.kms_helpers import (
    DOUBLE_USERS,
    STAND_ALONE,
    KmsDeployment,
    kms_deployment,
    new_name,
)

GENERATED_VERSION = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsDeployment]:
    """A server of this module's own: its accounts stay out of the shared instances' 18."""
    with kms_deployment(tmp_path_factory.mktemp("kmscli"), (STAND_ALONE,)) as made:
        yield made


@pytest.fixture(scope="module")
def port(deployment: KmsDeployment) -> int:
    (only,) = deployment.ports(deployment.instances[STAND_ALONE])
    return only


def secrets_cli(deployment: KmsDeployment, *args: str) -> subprocess.CompletedProcess[str]:
    server = deployment.server
    env = {
        "RKVSTORE_ENDPOINT": server.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": server.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": server.access_key_secret,
    }
    return run_cli("secrets", *args, env=env)


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    body: dict[str, object] = json.loads(result.stdout)
    return body


def get_creds(deployment: KmsDeployment, name: str, *args: str) -> dict[str, object]:
    return ok_json(secrets_cli(deployment, "get", name, "--json", *args))


def test_create_get_rotate_list_and_the_password_logs_in(
    deployment: KmsDeployment, port: int
) -> None:
    name, account = new_name(), new_name("acct")
    instance_id = deployment.instances[STAND_ALONE]
    created = ok_json(
        secrets_cli(
            deployment,
            *("create", name, "--instance-id", instance_id, "--account", account),
            *("--version-id", "v1"),
        )
    )
    assert (created["SecretName"], created["VersionId"]) == (name, "v1")
    assert json.loads(str(created["ExtendedConfig"]))["SecretSubType"] == "DualPassword"

    plain = secrets_cli(deployment, "get", name)
    assert plain.returncode == 0, plain.stderr
    lines = dict(line.split(":", 1) for line in plain.stdout.splitlines())
    first = lines["AccountPassword"].strip()
    assert lines["AccountName"].strip() == account
    assert lines["VersionId"].strip() == "v1 (ACSCurrent)"
    assert can_login(port, account, first)

    rotated = ok_json(secrets_cli(deployment, "rotate", name))
    assert rotated["SecretName"] == name
    assert GENERATED_VERSION.match(str(rotated["VersionId"]))
    current = get_creds(deployment, name)
    assert current["VersionId"] == rotated["VersionId"]
    assert current["VersionStages"] == ["ACSCurrent"]
    assert current["AccountPassword"] != first
    assert can_login(port, account, str(current["AccountPassword"]))
    previous = get_creds(deployment, name, "--stage", "ACSPrevious")
    assert (previous["VersionId"], previous["AccountPassword"]) == ("v1", first)
    assert can_login(port, account, first)  # no grace given: until the next rotation
    by_id = get_creds(deployment, name, "--version-id", "v1")
    assert (by_id["AccountPassword"], by_id["VersionStages"]) == (first, ["ACSPrevious"])

    table = secrets_cli(deployment, "list", "--page-size", "100")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert tuple(header.split()) == LIST_COLUMNS
    assert any(row.split()[:2] == [name, "Redis"] for row in rows)
    listed = ok_json(secrets_cli(deployment, "list", "--json", "--page-size", "100"))
    assert name in [s["SecretName"] for s in listed["SecretList"]["Secret"]]  # type: ignore[index]


def test_double_users_with_rotation_options(deployment: KmsDeployment, port: int) -> None:
    name, account = new_name(), new_name("acct")
    created = ok_json(
        secrets_cli(
            deployment,
            *("create", name, "--instance-id", deployment.instances[STAND_ALONE]),
            *("--account", account, "--mode", DOUBLE_USERS, "--privilege", "RoleReadOnly"),
            *("--rotation-interval", "1d"),
        )
    )
    assert GENERATED_VERSION.match(str(created["VersionId"]))
    assert (created["AutomaticRotation"], created["RotationInterval"]) == ("Enabled", "86400s")
    config = json.loads(str(created["ExtendedConfig"]))
    assert (config["CloneAccountName"], config["AccountPrivilege"]) == (
        account + "_clone",
        "RoleReadOnly",
    )
    current = get_creds(deployment, name)
    previous = get_creds(deployment, name, "--stage", "ACSPrevious")
    assert (current["AccountName"], previous["AccountName"]) == (account, account + "_clone")
    assert can_login(port, account, str(current["AccountPassword"]))


def test_grace_period_goes_into_the_extended_config(deployment: KmsDeployment) -> None:
    name, account = new_name(), new_name("acct")
    created = ok_json(
        secrets_cli(
            deployment,
            *("create", name, "--instance-id", deployment.instances[STAND_ALONE]),
            *("--account", account, "--grace-period", "1h"),
        )
    )
    config = json.loads(str(created["ExtendedConfig"]))
    assert (config["GracePeriod"], config["UseExistingAccount"]) == ("3600s", False)


def test_get_of_a_missing_secret_prints_code_and_message(deployment: KmsDeployment) -> None:
    result = secrets_cli(deployment, "get", new_name("missing"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: GetSecretValue: Forbidden.ResourceNotFound: The resource is not found.\n"
    )


def test_a_bad_value_prints_the_kms_error(deployment: KmsDeployment) -> None:
    result = secrets_cli(
        deployment,
        *("create", new_name(), "--instance-id", deployment.instances[STAND_ALONE]),
        *("--account", new_name("acct"), "--grace-period", "one hour"),
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: CreateSecret: InvalidParameter: The specified parameter is not valid.\n"
    )


def test_double_users_refuses_dual_password_options(deployment: KmsDeployment) -> None:
    result = secrets_cli(
        deployment,
        *("create", new_name(), "--instance-id", "r-x", "--account", "a"),
        *("--mode", DOUBLE_USERS, "--use-existing"),
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        "Error: --use-existing and --grace-period need --mode DualPassword\n"
    )
