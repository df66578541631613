"""The secret actions other than CreateSecret (docs/kms.md §4).

GetSecretValue, DescribeSecret and the listings read the database only: they
never wait for an instance's task slot or for Redis (the secrets client gives
up at the first error it gets).
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam import visibility
from rkvstore.iam.policy import decide_resource
from rkvstore.products.kms import errors as kms_errors
from rkvstore.products.kms import rules, vault
from rkvstore.products.kms import store as kms_store
from rkvstore.products.kms.answers import (
    arn,
    automatic_rotation,
    rotation_fields,
    tags_of,
    utc,
)
from rkvstore.products.kms.rotation import release, rotate
from rkvstore.products.kms.store import SecretRow, VersionRow
from rkvstore.services import audit
from rkvstore.services.context import CallContext
from rkvstore.store import repo
from rkvstore.store.tables import kms_secrets as secrets_table

DAY = 86400


def _named(ctx: CallContext, params: dict[str, Any]) -> SecretRow:
    name = rules.secret_name_of(params["SecretName"], ctx.region, ctx.account_id)
    with ctx.deps.single.connect() as conn:
        secret = kms_store.get_secret(conn, ctx.account_id, name)
    if secret is None:
        raise ApiError(kms_errors.NOT_FOUND)
    return secret


def _live(ctx: CallContext, params: dict[str, Any]) -> SecretRow:
    """A secret not pending deletion."""
    secret = _named(ctx, params)
    if secret.planned_delete_at is not None:
        raise ApiError(kms_errors.IN_DELETE_WINDOW)
    return secret


def _instance_exists(ctx: CallContext, secret: SecretRow) -> bool:
    with ctx.deps.single.connect() as conn:
        return repo.get_instance(conn, secret.account_id, secret.instance_id) is not None


# --------------------------------------------------------------------------- reads


def get_secret_value(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    stage: str | None = params["VersionStage"]
    version_id: str | None = params["VersionId"]
    if version_id is not None:
        rules.check_version_id(version_id)
    secret = _live(ctx, params)
    if params["DryRun"]:
        raise ApiError(kms_errors.DRY_RUN)
    with ctx.deps.single.connect() as conn:
        staged = kms_store.staged_versions(conn, secret.secret_id)
    version = _pick(staged, stage, version_id)
    if version is None or version.password_sealed is None:
        raise ApiError(kms_errors.NOT_FOUND)
    password = vault.open_sealed(ctx.deps.box, secret.data_key, version.password_sealed)
    body: dict[str, Any] = {
        "SecretName": secret.name,
        "SecretType": "Redis",
        "SecretDataType": "text",
        "SecretData": _secret_data(version.account_name, password.reveal()),
        "VersionId": version.version_id,
        "VersionStages": {"VersionStage": [version.stage]},
        "CreateTime": utc(version.created_at),
        "AutomaticRotation": automatic_rotation(secret, _instance_exists(ctx, secret)),
        **rotation_fields(secret),
    }
    if params["FetchExtendedConfig"]:
        body["ExtendedConfig"] = secret.extended_config
    return body


def _secret_data(account: str, password: str) -> str:
    return json.dumps({"AccountName": account, "AccountPassword": password}, separators=(",", ":"))


def _pick(staged: list[VersionRow], stage: str | None, version_id: str | None) -> VersionRow | None:
    readable = [v for v in staged if v.stage in (rules.CURRENT, rules.PREVIOUS)]
    if version_id is not None:
        found = [v for v in readable if v.version_id == version_id]
        if not found or (stage is not None and found[0].stage != stage):
            return None
        return found[0]
    wanted = stage or rules.CURRENT
    return next((v for v in readable if v.stage == wanted), None)


def describe_secret(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    secret = _named(ctx, params)
    body: dict[str, Any] = {
        "Arn": arn(ctx.region, ctx.account_id, secret.name),
        "SecretName": secret.name,
        "SecretType": "Redis",
        "Description": secret.description,
        "CreateTime": utc(secret.created_at),
        "UpdateTime": utc(secret.updated_at),
        "ExtendedConfig": secret.extended_config,
        "AutomaticRotation": automatic_rotation(secret, _instance_exists(ctx, secret)),
        **rotation_fields(secret),
    }
    if secret.planned_delete_at is not None:
        body["PlannedDeleteTime"] = utc(secret.planned_delete_at)
    if params["FetchTags"]:
        body["Tags"] = tags_of(secret)
    return body


def list_secrets(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    page, size = params["PageNumber"], params["PageSize"]
    wanted = rules.filters(params["Filters"])
    with ctx.deps.single.connect() as conn:
        total, rows = _visible_page(ctx, conn, wanted, (page - 1) * size, size)
    items = []
    for secret in rows:
        item: dict[str, Any] = {
            "SecretName": secret.name,
            "SecretType": "Redis",
            "CreateTime": utc(secret.created_at),
            "UpdateTime": utc(secret.updated_at),
        }
        if secret.planned_delete_at is not None:
            item["PlannedDeleteTime"] = utc(secret.planned_delete_at)
        if params["FetchTags"]:
            item["Tags"] = tags_of(secret)
        items.append(item)
    return {
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": total,
        "SecretList": {"Secret": items},
    }


def _visible_page(
    ctx: CallContext, conn: Connection, wanted: dict[str, list[str]], offset: int, limit: int
) -> tuple[int, list[SecretRow]]:
    """As DescribeInstances: a RAM user lists only the secrets ``kms:ListSecrets`` is
    allowed on by their own ARN (a Deny on one hides it); as one SQL condition on the
    name where the policies allow, else name by name."""
    if ctx.caller.is_root:
        return kms_store.page_secrets(conn, ctx.account_id, wanted, offset, limit)
    granted = visibility.caller_rules(conn, ctx.caller, "kms:ListSecrets", ctx.condition_context())
    prefix = arn(ctx.region, ctx.account_id, "")
    condition = visibility.id_condition(granted, prefix, secrets_table.c.name, conn.dialect.name)
    if condition is True:
        return kms_store.page_secrets(conn, ctx.account_id, wanted, offset, limit)
    if condition is False:
        return 0, []
    if condition is not None:
        return kms_store.page_secrets(conn, ctx.account_id, wanted, offset, limit, also=condition)
    names = [
        n
        for n in kms_store.secret_names(conn, ctx.account_id)
        if decide_resource(granted, prefix + n) == "Allow"
    ]
    return kms_store.page_secrets(conn, ctx.account_id, wanted, offset, limit, names=names)


def list_secret_version_ids(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    secret = _named(ctx, params)
    page, size = params["PageNumber"], params["PageSize"]
    with ctx.deps.single.connect() as conn:  # paged by the database: versions accumulate
        total, shown = kms_store.page_versions(
            conn, secret.secret_id, params["IncludeDeprecated"], (page - 1) * size, size
        )
    items = [
        {
            "VersionId": v.version_id,
            "CreateTime": utc(v.created_at),
            "VersionStages": {"VersionStage": [v.stage] if v.stage else []},
        }
        for v in shown
    ]
    return {
        "SecretName": secret.name,
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": total,
        "VersionIds": {"VersionId": items},
    }


# --------------------------------------------------------------------------- changes


def rotate_secret(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    version_id = rules.check_version_id(params["VersionId"])
    secret = _live(ctx, params)
    deps = ctx.deps
    with deps.single.connect() as conn:
        retried = kms_store.version_exists(conn, secret.secret_id, version_id)
        recent = kms_store.rotations_since(conn, secret.secret_id, time.time() - 3600)
    if not retried:
        if recent >= deps.settings.kms_max_rotations_per_hour:
            raise ApiError(kms_errors.THROTTLING)
        rotate(deps, secret.secret_id, version_id, time.time)
    return {
        "Arn": arn(ctx.region, ctx.account_id, secret.name),
        "SecretName": secret.name,
        "VersionId": version_id,
    }


def update_secret_rotation_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    secret = _live(ctx, params)
    enabled: bool = params["EnableAutomaticRotation"]
    values: dict[str, Any] = {"rotation_enabled": enabled, "updated_at": time.time()}
    if enabled:
        if params["RotationInterval"] is None:
            raise ApiError(errors.MISSING_PARAMETER, name="RotationInterval")
        interval = rules.rotation_interval(
            params["RotationInterval"], ctx.deps.settings.kms_min_rotation_seconds
        )
        last = secret.last_rotation_at or secret.created_at
        values["rotation_interval"] = interval
        values["next_rotation_at"] = max(last + interval, time.time())
    else:
        values["next_rotation_at"] = None
    if params["GracePeriod"] is not None:
        if secret.sub_type != rules.DUAL_PASSWORD:
            raise rules.invalid()
        values["grace_period"] = rules.grace_period(params["GracePeriod"])
    with ctx.deps.engine.begin() as conn:
        kms_store.update_secret(conn, secret.secret_id, **values)
        audit.write_in(conn)
    return {"SecretName": secret.name}


def delete_secret(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    secret = _named(ctx, params)
    force: bool = params["ForceDeleteWithoutRecovery"]
    now = time.time()
    if secret.planned_delete_at is not None and not force:
        raise ApiError(kms_errors.IN_DELETE_WINDOW)
    days = params["RecoveryWindowInDays"]
    if not force and not 7 <= days <= 30:
        raise rules.invalid()
    planned = now if force else now + days * DAY
    with ctx.deps.engine.begin() as conn:
        kms_store.update_secret(conn, secret.secret_id, planned_delete_at=planned, updated_at=now)
        audit.write_in(conn)
    if force:
        release(ctx.deps, secret.secret_id, now)
    return {"SecretName": secret.name, "PlannedDeleteTime": utc(planned)}


def restore_secret(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    secret = _named(ctx, params)
    if secret.planned_delete_at is not None:
        with ctx.deps.engine.begin() as conn:
            kms_store.update_secret(
                conn, secret.secret_id, planned_delete_at=None, updated_at=time.time()
            )
            audit.write_in(conn)
    return {"SecretName": secret.name}
