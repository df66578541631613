"""``rkvstore secrets``: KMS Redis secrets (2016-01-20) from the command line.

Thin wrappers over CreateSecret, GetSecretValue, RotateSecret and ListSecrets,
signed with V3 like ``rkvstore call``. The group is built by ``secrets_group``
so that it takes ``cli.py``'s client options without importing ``cli.py``
(which runs as ``__main__`` under ``python -m rkvstore.cli``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import click

from rkvstore.config import Settings
from rkvstore.secret import Secret

KMS_VERSION: Final = "2016-01-20"
DUAL_PASSWORD: Final = "DualPassword"  # noqa: S105 - a mode, not a password
DOUBLE_USERS: Final = "DoubleUsers"
PRIVILEGES: Final = ("RoleReadOnly", "RoleReadWrite", "RoleRepl")
STAGES: Final = ("ACSCurrent", "ACSPrevious")
LIST_COLUMNS: Final = ("SecretName", "SecretType", "CreateTime", "UpdateTime", "PlannedDeleteTime")


def new_version_id() -> str:
    """A VersionId as rkvstore generates them: 32 lower-case hex digits."""
    return uuid.uuid4().hex


def extended_config(
    *,
    mode: str,
    instance_id: str,
    region: str,
    account: str,
    privilege: str | None,
    use_existing: bool,
    grace_period: str | None,
) -> dict[str, Any]:
    """CreateSecret's ExtendedConfig for a Redis secret (docs/kms.md §5)."""
    config: dict[str, Any] = {
        "SecretSubType": mode,
        "InstanceId": instance_id,
        "RegionId": region,
        "AccountName": account,
    }
    if mode == DOUBLE_USERS:
        if use_existing or grace_period is not None:
            raise click.UsageError("--use-existing and --grace-period need --mode DualPassword")
        config["CloneAccountName"] = account + "_clone"
    else:
        config["UseExistingAccount"] = use_existing
        if grace_period is not None:
            config["GracePeriod"] = grace_period
    # An adopted account keeps its privilege unless one is named; a new one needs one.
    if privilege is None and not use_existing:
        privilege = "RoleReadWrite"
    if privilege is not None:
        config["AccountPrivilege"] = privilege
    return config


def secrets_group(client_options: Callable[[Any], Any]) -> click.Group:
    """The ``secrets`` group; ``client_options`` adds --endpoint, --access-key-id and the
    AccessKey secret options (``cli._client_options``)."""

    @click.group()
    def secrets() -> None:
        """KMS Redis secrets (API 2016-01-20, with your AccessKey)."""

    region_option = click.option(
        "--region",
        envvar="RKVSTORE_REGION",
        default=Settings.model_fields["region"].default,
        show_default=True,
        help="The instance's RegionId [RKVSTORE_REGION].",
    )

    @secrets.command("create")
    @click.argument("name")
    @click.option("--instance-id", required=True)
    @click.option("--account", required=True, help="The Redis account the secret manages.")
    @click.option(
        "--mode",
        type=click.Choice([DUAL_PASSWORD, DOUBLE_USERS]),
        default=DUAL_PASSWORD,
        show_default=True,
        help="DualPassword: one account, two passwords during a grace; "
        "DoubleUsers: the account and ACCOUNT_clone, alternately.",
    )
    @click.option(
        "--privilege",
        type=click.Choice(PRIVILEGES),
        help="[RoleReadWrite for a new account; an adopted one keeps its own]",
    )
    @click.option("--use-existing", is_flag=True, help="Adopt an existing account (DualPassword).")
    @click.option(
        "--grace-period",
        help="How long the previous password keeps working, e.g. 1h or 0s (DualPassword) "
        "[until the next rotation].",
    )
    @click.option(
        "--rotation-interval", help="Rotate automatically this often, e.g. 1d [no rotation]."
    )
    @click.option("--version-id", help="The first version's VersionId [generated].")
    @click.option("--description")
    @region_option
    @client_options
    def create(
        name: str,
        instance_id: str,
        account: str,
        mode: str,
        privilege: str | None,
        use_existing: bool,
        grace_period: str | None,
        rotation_interval: str | None,
        version_id: str | None,
        description: str | None,
        region: str,
        **client: Any,
    ) -> None:
        """Create secret NAME for a Redis account; its password is generated (SecretData=$Auto)."""
        config = extended_config(
            mode=mode,
            instance_id=instance_id,
            region=region,
            account=account,
            privilege=privilege,
            use_existing=use_existing,
            grace_period=grace_period,
        )
        params = {
            "SecretName": name,
            "SecretType": "Redis",
            "SecretData": "$Auto",
            "VersionId": version_id or new_version_id(),
            "ExtendedConfig": json.dumps(config, separators=(",", ":")),
            "EnableAutomaticRotation": rotation_interval is not None,
            "RotationInterval": rotation_interval,
            "Description": description,
        }
        echo_json(kms_call(client, "CreateSecret", params))

    @secrets.command("get")
    @click.argument("name")
    @click.option("--stage", type=click.Choice(STAGES), help="[ACSCurrent]")
    @click.option(
        "--version-id", help="A version that still holds a stage (alone, or the --stage's)."
    )
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print AccountName, AccountPassword, VersionId, VersionStages as JSON.",
    )
    @client_options
    def get(
        name: str,
        stage: str | None,
        version_id: str | None,
        as_json: bool,
        **client: Any,
    ) -> None:
        """Print the account and password of secret NAME (on stdout only)."""
        if stage is None and version_id is None:
            stage = "ACSCurrent"
        body = kms_call(
            client,
            "GetSecretValue",
            {"SecretName": name, "VersionStage": stage, "VersionId": version_id},
        )
        data = json.loads(body["SecretData"])
        out = {
            "AccountName": data["AccountName"],
            "AccountPassword": data["AccountPassword"],
            "VersionId": body["VersionId"],
            "VersionStages": body["VersionStages"]["VersionStage"],
        }
        if as_json:
            echo_json(out)
            return
        click.echo(f"AccountName:     {out['AccountName']}")
        click.echo(f"AccountPassword: {out['AccountPassword']}")
        click.echo(f"VersionId:       {out['VersionId']} ({', '.join(out['VersionStages'])})")

    @secrets.command("rotate")
    @click.argument("name")
    @click.option("--version-id", help="The new ACSCurrent version's VersionId [generated].")
    @client_options
    def rotate(name: str, version_id: str | None, **client: Any) -> None:
        """Rotate secret NAME now: a new password on every node of its instance."""
        params = {"SecretName": name, "VersionId": version_id or new_version_id()}
        echo_json(kms_call(client, "RotateSecret", params))

    @secrets.command("list")
    @click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--page-size", type=click.IntRange(1, 100), default=10, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
    @client_options
    def list_(page: int, page_size: int, as_json: bool, **client: Any) -> None:
        """List the secrets, one page at a time."""
        body = kms_call(client, "ListSecrets", {"PageNumber": page, "PageSize": page_size})
        if as_json:
            echo_json(body)
            return
        rows = [[s.get(c, "") for c in LIST_COLUMNS] for s in body["SecretList"]["Secret"]]
        click.echo(format_table(LIST_COLUMNS, rows))
        last = max(1, -(-body["TotalCount"] // body["PageSize"]))
        click.echo(f"page {body['PageNumber']} of {last}, {body['TotalCount']} secrets")

    return secrets


def kms_call(client: Mapping[str, Any], action: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """One signed KMS call; an error answer (or no answer) ends the command with exit 1."""
    import httpx

    from rkvstore.client import RpcClient, RpcError

    secret: Secret = client["access_key_secret"]
    with RpcClient(client["endpoint"], client["access_key_id"], secret, version=KMS_VERSION) as rpc:
        try:
            return rpc.call(action, params)
        except RpcError as exc:
            raise click.ClickException(f"{action}: {exc.code}: {exc.message}") from None
        except httpx.HTTPError as exc:
            raise click.ClickException(f"{action}: cannot reach {rpc.endpoint}: {exc}") from None
        except ValueError:
            raise click.ClickException(f"{action}: the answer is not JSON") from None


def echo_json(body: Mapping[str, Any]) -> None:
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def format_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
