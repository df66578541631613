"""CreateSecret (docs/kms.md §4, §5): the accounts made or adopted on every node, then recorded."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from rkvstore import errors
from rkvstore.engine.acl import UserChange
from rkvstore.engine.redis_engine import desired_user
from rkvstore.errors import ApiError
from rkvstore.iam.authorize import authorize
from rkvstore.products.kms import errors as kms_errors
from rkvstore.products.kms import rules, vault
from rkvstore.products.kms import store as kms_store
from rkvstore.products.kms.answers import arn, rotation_fields
from rkvstore.products.kms.rotation import new_version_id
from rkvstore.products.kms.rules import RedisConfig
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.products.kvstore.accounts import NORMAL, check_account_engine, refuse_existing_user
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext
from rkvstore.services.instance_nodes import (
    REGISTERED,
    apply_changes,
    load_instance,
    require_normal,
)
from rkvstore.services.task_slot import recording, task_slot
from rkvstore.store import repo
from rkvstore.store.repo import AccountRow, InstanceRow


def create_secret(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    name = rules.check_secret_name(params["SecretName"])
    rules.check_secret_type(params["SecretType"])
    if params["Policy"]:
        raise ApiError(kms_errors.POLICY_NOT_SUPPORTED)
    if params["SecretData"].reveal() != "$Auto":
        raise rules.invalid()
    version_id = rules.check_version_id(params["VersionId"])
    if params["SecretDataType"] not in (None, "text"):
        raise rules.invalid()
    config = rules.extended_config(params["ExtendedConfig"], ctx.region)
    enabled: bool = params["EnableAutomaticRotation"]
    interval = None
    if enabled:
        if params["RotationInterval"] is None:
            raise ApiError(errors.MISSING_PARAMETER, name="RotationInterval")
        interval = rules.rotation_interval(
            params["RotationInterval"], deps.settings.kms_min_rotation_seconds
        )
    description = rules.check_description(params["Description"])
    tags = rules.tags(params["Tags"])
    # Handing out an account's password is changing it: the caller must be
    # allowed that on the instance too (else kms:* alone would read any account).
    authorize(
        deps,
        ctx.caller,
        "kvstore:ResetAccountPassword" if config.use_existing else "kvstore:CreateAccount",
        [f"acs:kvstore:{ctx.region}:{ctx.account_id}:instance/{config.instance_id}"],
        ctx.condition_context(),
    )
    instance = load_instance(ctx, config.instance_id)
    check_account_engine(instance)
    require_normal(instance)
    _check_name_free(ctx, name)
    with task_slot(deps, instance.instance_id, "CreateSecret") as task:
        instance = load_instance(ctx, config.instance_id)
        require_normal(instance)
        _check_name_free(ctx, name)
        adopted = _check_accounts(ctx, instance, config)
        secret_id = uuid.uuid4().hex
        data_key = vault.new_data_key(deps.box)
        password = Secret(rules.new_password())
        now = time.time()
        sealed = vault.seal(deps.box, data_key, password)
        versions = [
            _version(secret_id, version_id, 2, rules.CURRENT, config.account_name, sealed, now)
        ]
        if config.clone_account_name:
            versions.append(
                _version(
                    secret_id,
                    new_version_id(),
                    1,
                    rules.PREVIOUS,
                    config.clone_account_name,
                    sealed,
                    now,
                )
            )
        digest = password.sha256_hex()
        previous: str | None = None
        if adopted is not None:
            previous = None if config.grace_period == 0 else adopted.password_sha256
            if previous is not None:  # the account's old password keeps its grace, unreadable
                grace_until = None if config.grace_period is None else now + config.grace_period
                versions.append(
                    _version(
                        secret_id, new_version_id(), 1, rules.PREVIOUS, adopted.name, None, now
                    )
                    | {"grace_until": grace_until}
                )
            user = desired_user(
                adopted.name,
                digest,
                adopted.privilege,
                instance.engine_version,
                previous_sha256=previous,
            )
            apply_changes(deps, instance, [UserChange(adopted.name, user)])
        else:
            assert config.privilege is not None
            with recording(deps, task, intent=True) as conn:
                for account in config.account_names:
                    repo.add_pending_user(conn, instance.instance_id, account)
            changes = [
                UserChange(a, desired_user(a, digest, config.privilege, instance.engine_version))
                for a in config.account_names
            ]
            apply_changes(deps, instance, changes)
        try:
            with recording(deps, task) as conn:
                # The name and the quota were checked outside any lock: a CreateSecret
                # of this name on another instance (another slot) may have been
                # recorded meanwhile. The tenant's lock makes this check and the
                # insert one step.
                repo.lock_tenant(conn, ctx.account_id)
                _refuse_taken(conn, ctx, name)
                if adopted is not None:
                    repo.set_account_passwords(
                        conn, instance.instance_id, adopted.name, digest, previous
                    )
                else:
                    for account in config.account_names:
                        repo.insert_account(
                            conn,
                            {
                                "instance_id": instance.instance_id,
                                "name": account,
                                "password_sha256": digest,
                                "privilege": config.privilege,
                                "account_type": NORMAL,
                                "description": "",
                            },
                        )
                    repo.drop_pending_users(conn, instance.instance_id, config.account_names)
                repo.set_account_managed_by(
                    conn, instance.instance_id, config.account_names, secret_id
                )
                kms_store.insert_secret(
                    conn,
                    {
                        "secret_id": secret_id,
                        "account_id": ctx.account_id,
                        "name": name,
                        "sub_type": config.sub_type,
                        "instance_id": instance.instance_id,
                        "extended_config": config.answered(),
                        "description": description,
                        "tags": _tags_json(tags),
                        "data_key": data_key,
                        "rotation_enabled": enabled,
                        "rotation_interval": interval,
                        "grace_period": config.grace_period,
                        "next_rotation_at": now + interval if interval else None,
                        "last_rotation_at": None,
                        "planned_delete_at": None,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                for version in versions:
                    kms_store.insert_version(conn, version)
        except (ApiError, IntegrityError) as exc:
            # The nodes changed, the record did not: the accounts go back to what
            # the database holds (a new account removed, an adopted one's password).
            for account in config.account_names:
                deps.reconciler.mark_dirty(instance.instance_id, account)
            if isinstance(exc, IntegrityError):  # a store without the lock's effect
                raise ApiError(kms_errors.EXISTS) from exc
            raise
    with deps.single.connect() as conn:
        secret = kms_store.get_secret_by_id(conn, secret_id)
    assert secret is not None
    return {
        "Arn": arn(ctx.region, ctx.account_id, name),
        "SecretName": name,
        "SecretType": "Redis",
        "VersionId": version_id,
        "AutomaticRotation": "Enabled" if enabled else "Disabled",
        "ExtendedConfig": secret.extended_config,
        **{k: v for k, v in rotation_fields(secret).items() if k != "LastRotationDate"},
    }


def _tags_json(tags: list[dict[str, str]]) -> str:
    return json.dumps(tags, separators=(",", ":"))


def _version(
    secret_id: str,
    version_id: str,
    seq: int,
    stage: str,
    account: str,
    sealed: str | None,
    now: float,
) -> dict[str, Any]:
    return {
        "secret_id": secret_id,
        "version_id": version_id,
        "seq": seq,
        "stage": stage,
        "account_name": account,
        "password_sealed": sealed,
        "grace_until": None,
        "created_at": now,
    }


def _check_name_free(ctx: CallContext, name: str) -> None:
    with ctx.deps.single.connect() as conn:
        _refuse_taken(conn, ctx, name)


def _refuse_taken(conn: Connection, ctx: CallContext, name: str) -> None:
    """``name`` taken by a secret of the tenant, or its quota of secrets reached."""
    existing = kms_store.get_secret(conn, ctx.account_id, name)
    count = kms_store.count_secrets(conn, ctx.account_id)
    if existing is not None:
        if existing.planned_delete_at is not None:
            raise ApiError(kms_errors.IN_DELETE_WINDOW)
        raise ApiError(kms_errors.EXISTS)
    if count >= ctx.deps.settings.kms_max_secrets:
        raise ApiError(kms_errors.LIMIT_EXCEEDED)


def _check_accounts(
    ctx: CallContext, instance: InstanceRow, config: RedisConfig
) -> AccountRow | None:
    """New accounts: none exists and they fit. Adoption: the account, not held by a secret."""
    deps = ctx.deps
    with deps.single.connect() as conn:
        found = {n: repo.get_account(conn, instance.instance_id, n) for n in config.account_names}
        count = repo.count_custom_accounts(conn, instance.instance_id)
    if config.use_existing:
        account = found[config.account_name]
        if account is None:
            raise ApiError(kms_errors.NOT_FOUND)
        if account.managed_by is not None:
            raise ApiError(kms_errors.EXISTS)
        if config.privilege is not None and config.privilege != account.privilege:
            raise rules.invalid()
        return account
    if any(a is not None for a in found.values()):
        raise ApiError(kms_errors.EXISTS)
    if count + len(config.account_names) > deps.settings.max_accounts:
        raise ApiError(kvstore_errors.ACCOUNT_LIMIT_EXCEEDED)
    if instance.provider == REGISTERED:
        for account_name in config.account_names:
            refuse_existing_user(ctx, instance, account_name)
    return None
