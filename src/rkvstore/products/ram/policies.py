"""RAM policies, their versions, and their attachments to users and groups."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam.attached_policies import CUSTOM, GROUP, SYSTEM, USER
from rkvstore.iam.policy import validate_policy
from rkvstore.iam.system_policies import SYSTEM_POLICIES
from rkvstore.products.ram import errors as ram_errors
from rkvstore.products.ram import listing, shared, store
from rkvstore.products.ram.store import iso
from rkvstore.services.context import CallContext

MAX_VERSIONS_PER_POLICY = 5
ROTATE = "DeleteOldestNonDefaultVersionWhenLimitExceeded"

_POLICY_NAME = re.compile(r"[A-Za-z0-9-]+")


# --------------------------------------------------------------------------- policies


def _policy_name(params: dict[str, Any]) -> str:
    name: str = params["PolicyName"]
    shared.check_name(name, "PolicyName", _POLICY_NAME, 128)
    return name


def _policy_type(params: dict[str, Any]) -> str:
    policy_type = params["PolicyType"]
    if policy_type not in (SYSTEM, CUSTOM):
        raise ApiError(ram_errors.INVALID_POLICY_TYPE)
    return str(policy_type)


def _policy_item(info: store.PolicyInfo, attachments: int) -> dict[str, Any]:
    return {
        "PolicyName": info.name,
        "PolicyType": info.policy_type,
        "Description": info.description,
        "DefaultVersion": info.default_version,
        "CreateDate": iso(info.created_at),
        "UpdateDate": iso(info.updated_at),
        "AttachmentCount": attachments,
    }


def create_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _policy_name(params)
    document: str = params["PolicyDocument"]
    validate_policy(document)  # MalformedPolicyDocument now, never at evaluation time
    description = shared.check_text(params["Description"], "Description", 1024)

    def create(conn: Connection) -> store.PolicyInfo:
        if name in SYSTEM_POLICIES or store.get_policy(conn, ctx.account_id, CUSTOM, name):
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_POLICY)
        store.insert_policy(conn, ctx.account_id, name, description, document)
        return shared.require_policy(conn, ctx, CUSTOM, name)

    info = shared.change(ctx, create, ram_errors.ENTITY_ALREADY_EXISTS_POLICY)
    return {
        "Policy": {
            "PolicyName": name,
            "PolicyType": CUSTOM,
            "Description": description,
            "DefaultVersion": info.default_version,
            "CreateDate": iso(info.created_at),
        }
    }


def get_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _policy_name(params)
    policy_type = _policy_type(params)
    with ctx.deps.engine.connect() as conn:
        info = shared.require_policy(conn, ctx, policy_type, name)
        document = (
            store.policy_document(conn, ctx.account_id, policy_type, name, info.default_version)
            or ""
        )
        item = _policy_item(
            info, store.attachment_count(conn, ctx.account_id, info.policy_type, info.name)
        )
        versions = (
            {v["version_id"]: v for v in store.policy_versions(conn, ctx.account_id, name)}
            if policy_type == CUSTOM
            else {}
        )
    created = versions.get(info.default_version, {}).get("created_at", info.created_at)
    return {
        "Policy": {**item, "PolicyDocument": document},
        "DefaultPolicyVersion": {
            "VersionId": info.default_version,
            "IsDefaultVersion": True,
            "PolicyDocument": document,
            "CreateDate": iso(created),
        },
    }


def list_policies(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    policy_type = params["PolicyType"]
    if policy_type is not None:
        policy_type = _policy_type(params)
    with ctx.deps.engine.connect() as conn:
        policies, marker = shared.page(
            params,
            lambda after, limit: listing.policies_after(
                conn, ctx.account_id, policy_type, after, limit
            ),
            lambda p: f"{p.policy_type}:{p.name}",
        )
        counts = listing.attachment_counts(conn, ctx.account_id, policies)  # one query
    items = [_policy_item(p, counts[(p.policy_type, p.name)]) for p in policies]
    return shared.paged("Policies", "Policy", items, marker)


def delete_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _policy_name(params)

    def delete(conn: Connection) -> None:
        # Attachments of the policy (share_policy) wait for this, or this for them.
        policy = store.lock_policy(conn, ctx.account_id, name)
        if policy is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_POLICY)
        if store.attachment_count(conn, ctx.account_id, CUSTOM, name, USER):
            raise ApiError(ram_errors.DELETE_CONFLICT_POLICY_USER)
        if store.attachment_count(conn, ctx.account_id, CUSTOM, name, GROUP):
            raise ApiError(ram_errors.DELETE_CONFLICT_POLICY_GROUP)
        others = [
            v
            for v in store.policy_versions(conn, ctx.account_id, name)
            if v["version_id"] != policy["default_version"]
        ]
        if others and not params["CascadingDelete"]:
            raise ApiError(ram_errors.DELETE_CONFLICT_POLICY_VERSION)
        store.delete_policy(conn, ctx.account_id, name)

    shared.change(ctx, delete, ram_errors.ENTITY_NOT_EXIST_POLICY)
    return {}


def create_policy_version(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _policy_name(params)
    document: str = params["PolicyDocument"]
    validate_policy(document)
    rotate = params["RotateStrategy"] or "None"
    if rotate not in ("None", ROTATE):
        raise ApiError(errors.INVALID_PARAMETER, name="RotateStrategy")

    def create(conn: Connection) -> dict[str, Any]:
        # Locked first: the count, the rotation and the version number are this
        # transaction's alone until it commits.
        policy = store.lock_policy(conn, ctx.account_id, name)
        if policy is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_POLICY)
        versions = store.policy_versions(conn, ctx.account_id, name)
        if len(versions) >= MAX_VERSIONS_PER_POLICY:
            if rotate != ROTATE:
                raise ApiError(ram_errors.LIMIT_EXCEEDED_POLICY_VERSION)
            oldest = next(v for v in versions if v["version_id"] != policy["default_version"])
            store.delete_version(conn, ctx.account_id, name, oldest["version_id"])
        number = int(policy["next_version"])
        version = f"v{number}"
        store.insert_version(conn, ctx.account_id, name, version, document)
        values: dict[str, Any] = {"next_version": number + 1}
        if params["SetAsDefault"]:
            values["default_version"] = version
        store.update_policy(conn, ctx.account_id, name, values)
        return next(
            v
            for v in store.policy_versions(conn, ctx.account_id, name)
            if v["version_id"] == version
        )

    # A version number taken twice cannot happen under the lock; were it to, the
    # second run numbers the version afresh.
    created = shared.change(ctx, create, ram_errors.LIMIT_EXCEEDED_POLICY_VERSION)
    return {
        "PolicyVersion": {
            "VersionId": created["version_id"],
            "IsDefaultVersion": bool(params["SetAsDefault"]),
            "PolicyDocument": document,
            "CreateDate": iso(created["created_at"]),
        }
    }


# --------------------------------------------------------------------------- attachments


def _attach(ctx: CallContext, params: dict[str, Any], principal_type: str, attach: bool) -> None:
    policy_type = _policy_type(params)
    policy = _policy_name(params)
    field = "UserName" if principal_type == USER else "GroupName"
    principal = shared.user_name(params, field)
    if principal_type == USER:
        lock, missing = store.lock_user, ram_errors.ENTITY_NOT_EXIST_USER
        already = ram_errors.ENTITY_ALREADY_EXISTS_USER_POLICY
        absent = ram_errors.ENTITY_NOT_EXIST_USER_POLICY
    else:
        lock, missing = store.lock_group, ram_errors.ENTITY_NOT_EXIST_GROUP
        already = ram_errors.ENTITY_ALREADY_EXISTS_GROUP_POLICY
        absent = ram_errors.ENTITY_NOT_EXIST_GROUP_POLICY

    def change(conn: Connection) -> None:
        # The principal's row, then the policy's: a DeleteUser or DeletePolicy waits
        # for this attachment and then refuses, or comes first and this answers
        # EntityNotExist.*; a duplicate waits, then finds the policy attached.
        if lock(conn, ctx.account_id, principal) is None:
            raise ApiError(missing)
        if policy_type == CUSTOM:
            if not store.share_policy(conn, ctx.account_id, policy):
                raise ApiError(ram_errors.ENTITY_NOT_EXIST_POLICY)
        elif policy not in SYSTEM_POLICIES:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_POLICY)
        attached = any(
            a["policy_type"] == policy_type and a["policy_name"] == policy
            for a in store.attachments_of(conn, ctx.account_id, principal_type, principal)
        )
        if attach:
            if attached:
                raise ApiError(already)
            store.attach(conn, ctx.account_id, principal_type, principal, policy_type, policy)
        elif not store.detach(conn, ctx.account_id, principal_type, principal, policy_type, policy):
            raise ApiError(absent)

    shared.change(ctx, change, already if attach else absent)


def attach_policy_to_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _attach(ctx, params, USER, attach=True)
    return {}


def detach_policy_from_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _attach(ctx, params, USER, attach=False)
    return {}


def attach_policy_to_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _attach(ctx, params, GROUP, attach=True)
    return {}


def detach_policy_from_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _attach(ctx, params, GROUP, attach=False)
    return {}


def list_policies_for_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list_policies_for(ctx, USER, shared.user_name(params))


def list_policies_for_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list_policies_for(ctx, GROUP, shared.user_name(params, "GroupName"))


def _list_policies_for(ctx: CallContext, principal_type: str, name: str) -> dict[str, Any]:
    with ctx.deps.engine.connect() as conn:
        if principal_type == USER:
            shared.require_user(conn, ctx, name)
        else:
            shared.require_group(conn, ctx, name)
        attached = listing.attached_policies(conn, ctx.account_id, principal_type, name)
    items = [
        {
            "PolicyName": a.policy.name,
            "PolicyType": a.policy.policy_type,
            "Description": a.policy.description,
            "DefaultVersion": a.policy.default_version,
            "AttachDate": iso(a.attached_at),
        }
        for a in attached
    ]
    return {"Policies": {"Policy": items}}
