"""The RAM API (2015-05-01) on rkvstore's endpoint: users, AccessKeys, policies, groups.

Names and shapes are the official ``alibabacloud-ram20150501`` SDK's
(docs/ram-wire.md); errors are RAM's own codes and messages.

Every change runs in one transaction (``_change``) that first locks the row of
the entity it changes (``store.lock_*``), so concurrent calls on one user,
group or policy run one after the other and each is answered by the same checks
as a lone call: a duplicate gets ``EntityAlreadyExists.*``, a call on a user
deleted meanwhile ``EntityNotExist.User``, and the limits (2 keys, 5 groups per
user; 5 versions per policy) hold (issue 9).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from rkvstore import errors
from rkvstore.errors import ApiError, ErrorSpec
from rkvstore.iam.attached_policies import CUSTOM, GROUP, SYSTEM, USER
from rkvstore.iam.credentials import (
    ACTIVE,
    INACTIVE,
    add_access_key,
    new_access_key_id,
    new_access_key_secret,
)
from rkvstore.iam.policy import SYSTEM_POLICIES, validate_policy
from rkvstore.products.ram import errors as ram_errors
from rkvstore.products.ram import listing, store
from rkvstore.products.ram.store import iso
from rkvstore.services.context import CallContext

MAX_KEYS_PER_USER = 2
MAX_VERSIONS_PER_POLICY = 5
MAX_GROUPS_PER_USER = 5
ROTATE = "DeleteOldestNonDefaultVersionWhenLimitExceeded"

_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9._-]+")
_POLICY_NAME = re.compile(r"[A-Za-z0-9-]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"[0-9]{1,4}-[0-9]{4,20}")
T = TypeVar("T")


# --------------------------------------------------------------------------- checks


def _check_name(name: str, field: str, pattern: re.Pattern[str], max_length: int) -> None:
    if not 1 <= len(name) <= max_length:
        raise ApiError(ram_errors.INVALID_NAME_LENGTH, name=field)
    if not pattern.fullmatch(name):
        raise ApiError(ram_errors.INVALID_NAME_CHARS, name=field)


def _check_text(value: str | None, field: str, max_length: int) -> str:
    if value is None:
        return ""
    if len(value) > max_length:
        raise ApiError(ram_errors.INVALID_NAME_LENGTH, name=field)
    return value


def _check_format(value: str | None, field: str, pattern: re.Pattern[str]) -> str:
    if value is None or value == "":
        return ""
    if len(value) > 256 or not pattern.fullmatch(value):
        raise ApiError(ram_errors.INVALID_FORMAT, name=field)
    return value


def _user_name(params: dict[str, Any], field: str = "UserName") -> str:
    name: str = params[field]
    _check_name(name, field, _PRINCIPAL_NAME, 64)
    return name


def _policy_type(params: dict[str, Any]) -> str:
    policy_type = params["PolicyType"]
    if policy_type not in (SYSTEM, CUSTOM):
        raise ApiError(ram_errors.INVALID_POLICY_TYPE)
    return str(policy_type)


def _require_user(conn: Connection, ctx: CallContext, name: str) -> dict[str, Any]:
    user = store.get_user(conn, ctx.account_id, name)
    if user is None:
        raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
    return user


def _require_group(conn: Connection, ctx: CallContext, name: str) -> dict[str, Any]:
    group = store.get_group(conn, ctx.account_id, name)
    if group is None:
        raise ApiError(ram_errors.ENTITY_NOT_EXIST_GROUP)
    return group


def _require_policy(
    conn: Connection, ctx: CallContext, policy_type: str, name: str
) -> store.PolicyInfo:
    info = store.get_policy(conn, ctx.account_id, policy_type, name)
    if info is None:
        raise ApiError(ram_errors.ENTITY_NOT_EXIST_POLICY)
    return info


@contextmanager
def _unique(conflict: ErrorSpec) -> Iterator[None]:
    """A constraint that still fails: the caller gets RAM's ``conflict``, never a 500."""
    try:
        yield
    except IntegrityError as exc:
        raise ApiError(conflict) from exc


def _change(ctx: CallContext, change: Callable[[Connection], T], conflict: ErrorSpec) -> T:
    """``change`` in one transaction; a race answered with RAM's codes.

    ``change`` locks what it changes first, so the checks it makes hold until its
    commit. A unique or foreign key that fails all the same (two creates of one
    name: there is no row to lock yet) means another call's row has just been
    committed: ``change`` runs once more, and its checks now see that row and
    answer as for a lone call. Should it fail again, ``conflict``.
    """
    try:
        with ctx.deps.engine.begin() as conn:
            return change(conn)
    except IntegrityError:
        pass
    with _unique(conflict), ctx.deps.engine.begin() as conn:
        return change(conn)


def _new_id() -> str:
    return str(secrets.randbelow(9 * 10**15) + 10**15)


def _user_body(
    user: dict[str, Any], *, updated: bool = True, login: bool = False
) -> dict[str, Any]:
    body = {
        "UserId": user["user_id"],
        "UserName": user["user_name"],
        "DisplayName": user["display_name"],
        "Email": user["email"],
        "MobilePhone": user["mobile_phone"],
        "Comments": user["comments"],
        "CreateDate": iso(user["created_at"]),
    }
    if updated:
        body["UpdateDate"] = iso(user["updated_at"])
    if login:
        body["LastLoginDate"] = ""
    return body


def _page(
    params: dict[str, Any], read: Callable[[str, int], list[T]], key: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """One page after the request's ``Marker``, read by the database (``read(marker,
    limit)``: the items after the marker, in order), and the next page's marker (the
    page's last key), None when this page is the last."""
    limit = params["MaxItems"]
    found = read(params.get("Marker") or "", limit + 1)  # one more: is there a next page?
    shown = found[:limit]
    return shown, key(shown[-1]) if len(found) > limit else None


def _paged(
    plural: str, name: str, items: list[dict[str, Any]], marker: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"IsTruncated": marker is not None, plural: {name: items}}
    if marker is not None:
        body["Marker"] = marker
    return body


# --------------------------------------------------------------------------- users


def create_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_name(params)
    values = {
        "user_name": name,
        "user_id": _new_id(),
        "display_name": _check_text(params["DisplayName"], "DisplayName", 128),
        "email": _check_format(params["Email"], "Email", _EMAIL),
        "mobile_phone": _check_format(params["MobilePhone"], "MobilePhone", _PHONE),
        "comments": _check_text(params["Comments"], "Comments", 128),
    }

    def create(conn: Connection) -> dict[str, Any] | None:
        if store.get_user(conn, ctx.account_id, name) is not None:
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_USER)
        store.insert_user(conn, ctx.account_id, values)
        return store.get_user(conn, ctx.account_id, name)

    user = _change(ctx, create, ram_errors.ENTITY_ALREADY_EXISTS_USER)
    assert user is not None
    return {"User": _user_body(user, updated=False)}


def get_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_name(params)
    with ctx.deps.engine.connect() as conn:
        user = _require_user(conn, ctx, name)
    return {"User": _user_body(user, login=True)}


def list_users(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.deps.engine.connect() as conn:
        users, marker = _page(
            params,
            lambda after, limit: listing.users_after(conn, ctx.account_id, after, limit),
            lambda user: str(user["user_name"]),
        )
    return _paged("Users", "User", [_user_body(u) for u in users], marker)


def update_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_name(params)
    values: dict[str, Any] = {}
    if params["NewDisplayName"] is not None:
        values["display_name"] = _check_text(params["NewDisplayName"], "NewDisplayName", 128)
    if params["NewEmail"] is not None:
        values["email"] = _check_format(params["NewEmail"], "NewEmail", _EMAIL)
    if params["NewMobilePhone"] is not None:
        values["mobile_phone"] = _check_format(params["NewMobilePhone"], "NewMobilePhone", _PHONE)
    if params["NewComments"] is not None:
        values["comments"] = _check_text(params["NewComments"], "NewComments", 128)
    new_name = params["NewUserName"]
    if new_name is not None:
        _check_name(new_name, "NewUserName", _PRINCIPAL_NAME, 64)
    renamed = new_name is not None and new_name != name
    if renamed:
        values["user_name"] = new_name

    def update(conn: Connection) -> dict[str, Any] | None:
        if store.lock_user(conn, ctx.account_id, name) is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        if renamed and store.get_user(conn, ctx.account_id, new_name) is not None:
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_USER)
        store.update_user(conn, ctx.account_id, name, values)  # keys and groups follow
        if renamed:
            store.rename_user_attachments(conn, ctx.account_id, name, new_name)
        return store.get_user(conn, ctx.account_id, values.get("user_name", name))

    user = _change(ctx, update, ram_errors.ENTITY_ALREADY_EXISTS_USER)
    assert user is not None
    if renamed:  # the user's keys now name the new user
        ctx.deps.access_keys.forget()
    return {"User": _user_body(user)}


def delete_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_name(params)

    def delete(conn: Connection) -> None:
        if store.lock_user(conn, ctx.account_id, name) is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        if store.list_access_keys(conn, ctx.account_id, name):
            raise ApiError(ram_errors.DELETE_CONFLICT_USER_ACCESS_KEY)
        if store.groups_of_user(conn, ctx.account_id, name):
            raise ApiError(ram_errors.DELETE_CONFLICT_USER_GROUP)
        if store.attachments_of(conn, ctx.account_id, USER, name):
            raise ApiError(ram_errors.DELETE_CONFLICT_USER_POLICY)
        store.delete_user(conn, ctx.account_id, name)

    # A key or membership written since the checks fails the foreign key: the
    # checks run again and name it.
    _change(ctx, delete, ram_errors.DELETE_CONFLICT_USER_ACCESS_KEY)
    return {}


# --------------------------------------------------------------------------- access keys


def _key_owner(conn: Connection, ctx: CallContext, params: dict[str, Any]) -> str | None:
    """The named user, or (no UserName) the caller itself: a RAM user or the root."""
    if params["UserName"] is None:
        return ctx.caller.user_name
    name = _user_name(params)
    _require_user(conn, ctx, name)
    return name


def create_access_key(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = ctx.caller.user_name if params["UserName"] is None else _user_name(params)
    key_id, secret = new_access_key_id(), new_access_key_secret()

    def create(conn: Connection) -> dict[str, Any]:
        # The owner's row is locked before its keys are counted: the limit holds,
        # and a DeleteUser waits for this key (and then refuses) or comes first.
        if owner is None:
            store.lock_root(conn, ctx.account_id)
        elif store.lock_user(conn, ctx.account_id, owner) is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        if len(store.list_access_keys(conn, ctx.account_id, owner)) >= MAX_KEYS_PER_USER:
            raise ApiError(ram_errors.LIMIT_EXCEEDED_USER_ACCESS_KEY)
        add_access_key(conn, ctx.deps.box, ctx.account_id, owner, key_id, secret)
        return next(
            k
            for k in store.list_access_keys(conn, ctx.account_id, owner)
            if k["access_key_id"] == key_id
        )

    created = _change(ctx, create, ram_errors.ENTITY_NOT_EXIST_USER)
    return {
        "AccessKey": {
            "AccessKeyId": key_id,
            # The one place the secret is ever shown.
            "AccessKeySecret": secret.reveal(),
            "Status": ACTIVE,
            "CreateDate": iso(created["created_at"]),
        }
    }


def list_access_keys(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.deps.engine.connect() as conn:
        owner = _key_owner(conn, ctx, params)
        keys = store.list_access_keys(conn, ctx.account_id, owner)
    return {
        "AccessKeys": {
            "AccessKey": [
                {
                    "AccessKeyId": k["access_key_id"],
                    "Status": k["status"],
                    "CreateDate": iso(k["created_at"]),
                }
                for k in keys
            ]
        }
    }


def update_access_key(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    status = params["Status"]
    if status not in (ACTIVE, INACTIVE):
        raise ApiError(errors.INVALID_PARAMETER, name="Status")
    with ctx.deps.engine.begin() as conn:
        owner = _key_owner(conn, ctx, params)
        if not store.set_access_key_status(
            conn, ctx.account_id, owner, params["UserAccessKeyId"], status
        ):
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_ACCESS_KEY)
    ctx.deps.access_keys.forget(params["UserAccessKeyId"])  # this process: at once
    return {}


def delete_access_key(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.deps.engine.begin() as conn:
        owner = _key_owner(conn, ctx, params)
        if not store.delete_access_key(conn, ctx.account_id, owner, params["UserAccessKeyId"]):
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_ACCESS_KEY)
    ctx.deps.access_keys.forget(params["UserAccessKeyId"])
    return {}


# --------------------------------------------------------------------------- policies


def _policy_name(params: dict[str, Any]) -> str:
    name: str = params["PolicyName"]
    _check_name(name, "PolicyName", _POLICY_NAME, 128)
    return name


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
    description = _check_text(params["Description"], "Description", 1024)

    def create(conn: Connection) -> store.PolicyInfo:
        if name in SYSTEM_POLICIES or store.get_policy(conn, ctx.account_id, CUSTOM, name):
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_POLICY)
        store.insert_policy(conn, ctx.account_id, name, description, document)
        return _require_policy(conn, ctx, CUSTOM, name)

    info = _change(ctx, create, ram_errors.ENTITY_ALREADY_EXISTS_POLICY)
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
        info = _require_policy(conn, ctx, policy_type, name)
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
        policies, marker = _page(
            params,
            lambda after, limit: listing.policies_after(
                conn, ctx.account_id, policy_type, after, limit
            ),
            lambda p: f"{p.policy_type}:{p.name}",
        )
        counts = listing.attachment_counts(conn, ctx.account_id, policies)  # one query
    items = [_policy_item(p, counts[(p.policy_type, p.name)]) for p in policies]
    return _paged("Policies", "Policy", items, marker)


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

    _change(ctx, delete, ram_errors.ENTITY_NOT_EXIST_POLICY)
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
    created = _change(ctx, create, ram_errors.LIMIT_EXCEEDED_POLICY_VERSION)
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
    principal = _user_name(params, field)
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

    _change(ctx, change, already if attach else absent)


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
    return _list_policies_for(ctx, USER, _user_name(params))


def list_policies_for_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list_policies_for(ctx, GROUP, _user_name(params, "GroupName"))


def _list_policies_for(ctx: CallContext, principal_type: str, name: str) -> dict[str, Any]:
    with ctx.deps.engine.connect() as conn:
        if principal_type == USER:
            _require_user(conn, ctx, name)
        else:
            _require_group(conn, ctx, name)
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


# --------------------------------------------------------------------------- groups


def create_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = _user_name(params, "GroupName")
    comments = _check_text(params["Comments"], "Comments", 128)
    values = {"group_name": name, "group_id": _new_id(), "comments": comments}

    def create(conn: Connection) -> dict[str, Any]:
        if store.get_group(conn, ctx.account_id, name) is not None:
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_GROUP)
        store.insert_group(conn, ctx.account_id, values)
        return _require_group(conn, ctx, name)

    group = _change(ctx, create, ram_errors.ENTITY_ALREADY_EXISTS_GROUP)
    return {
        "Group": {
            "GroupId": group["group_id"],
            "GroupName": name,
            "Comments": comments,
            "CreateDate": iso(group["created_at"]),
        }
    }


def add_user_to_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    group = _user_name(params, "GroupName")
    user = _user_name(params)

    def add(conn: Connection) -> None:
        # The user's row is locked first (its memberships and their limit are the
        # user's); the errors come in the order of a lone call's checks.
        locked = store.lock_user(conn, ctx.account_id, user)
        _require_group(conn, ctx, group)
        if locked is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        joined = store.groups_of_user(conn, ctx.account_id, user)
        if any(g["group_name"] == group for g in joined):
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_USER_GROUP)
        if len(joined) >= MAX_GROUPS_PER_USER:
            raise ApiError(ram_errors.LIMIT_EXCEEDED_USER_GROUP)
        store.add_member(conn, ctx.account_id, group, user)

    _change(ctx, add, ram_errors.ENTITY_ALREADY_EXISTS_USER_GROUP)
    return {}


def remove_user_from_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    group = _user_name(params, "GroupName")
    user = _user_name(params)

    def remove(conn: Connection) -> None:
        locked = store.lock_user(conn, ctx.account_id, user)
        _require_group(conn, ctx, group)
        if locked is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        if not store.remove_member(conn, ctx.account_id, group, user):
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER_GROUP)

    _change(ctx, remove, ram_errors.ENTITY_NOT_EXIST_USER_GROUP)
    return {}


def list_groups_for_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    user = _user_name(params)
    with ctx.deps.engine.connect() as conn:
        _require_user(conn, ctx, user)
        groups = store.groups_of_user(conn, ctx.account_id, user)
    return {
        "Groups": {
            "Group": [
                {
                    "GroupId": g["group_id"],
                    "GroupName": g["group_name"],
                    "Comments": g["comments"],
                    "JoinDate": iso(g["joined_at"]),
                }
                for g in groups
            ]
        }
    }
