"""RAM users and their AccessKeys: create, read, list, update, delete."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam.attached_policies import USER
from rkvstore.iam.credentials import (
    ACTIVE,
    INACTIVE,
    add_access_key,
    new_access_key_id,
    new_access_key_secret,
)
from rkvstore.products.ram import errors as ram_errors
from rkvstore.products.ram import listing, shared, store
from rkvstore.products.ram.store import iso
from rkvstore.services import audit
from rkvstore.services.context import CallContext

MAX_KEYS_PER_USER = 2

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"[0-9]{1,4}-[0-9]{4,20}")


def _check_format(value: str | None, field: str, pattern: re.Pattern[str]) -> str:
    if value is None or value == "":
        return ""
    if len(value) > 256 or not pattern.fullmatch(value):
        raise ApiError(ram_errors.INVALID_FORMAT, name=field)
    return value


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


# --------------------------------------------------------------------------- users


def create_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = shared.user_name(params)
    values = {
        "user_name": name,
        "user_id": shared.new_id(),
        "display_name": shared.check_text(params["DisplayName"], "DisplayName", 128),
        "email": _check_format(params["Email"], "Email", _EMAIL),
        "mobile_phone": _check_format(params["MobilePhone"], "MobilePhone", _PHONE),
        "comments": shared.check_text(params["Comments"], "Comments", 128),
    }

    def create(conn: Connection) -> dict[str, Any] | None:
        if store.get_user(conn, ctx.account_id, name) is not None:
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_USER)
        store.insert_user(conn, ctx.account_id, values)
        return store.get_user(conn, ctx.account_id, name)

    user = shared.change(ctx, create, ram_errors.ENTITY_ALREADY_EXISTS_USER)
    assert user is not None
    return {"User": _user_body(user, updated=False)}


def get_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = shared.user_name(params)
    with ctx.deps.engine.connect() as conn:
        user = shared.require_user(conn, ctx, name)
    return {"User": _user_body(user, login=True)}


def list_users(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.deps.engine.connect() as conn:
        users, marker = shared.page(
            params,
            lambda after, limit: listing.users_after(conn, ctx.account_id, after, limit),
            lambda user: str(user["user_name"]),
        )
    return shared.paged("Users", "User", [_user_body(u) for u in users], marker)


def update_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = shared.user_name(params)
    values: dict[str, Any] = {}
    if params["NewDisplayName"] is not None:
        values["display_name"] = shared.check_text(params["NewDisplayName"], "NewDisplayName", 128)
    if params["NewEmail"] is not None:
        values["email"] = _check_format(params["NewEmail"], "NewEmail", _EMAIL)
    if params["NewMobilePhone"] is not None:
        values["mobile_phone"] = _check_format(params["NewMobilePhone"], "NewMobilePhone", _PHONE)
    if params["NewComments"] is not None:
        values["comments"] = shared.check_text(params["NewComments"], "NewComments", 128)
    new_name = params["NewUserName"]
    if new_name is not None:
        shared.check_name(new_name, "NewUserName", shared.PRINCIPAL_NAME, 64)
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

    user = shared.change(ctx, update, ram_errors.ENTITY_ALREADY_EXISTS_USER)
    assert user is not None
    if renamed:  # the user's keys now name the new user
        ctx.deps.access_keys.forget()
    return {"User": _user_body(user)}


def delete_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = shared.user_name(params)

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
    shared.change(ctx, delete, ram_errors.DELETE_CONFLICT_USER_ACCESS_KEY)
    return {}


# --------------------------------------------------------------------------- access keys


def _key_owner(conn: Connection, ctx: CallContext, params: dict[str, Any]) -> str | None:
    """The named user, or (no UserName) the caller itself: a RAM user or the root."""
    if params["UserName"] is None:
        return ctx.caller.user_name
    name = shared.user_name(params)
    shared.require_user(conn, ctx, name)
    return name


def create_access_key(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = ctx.caller.user_name if params["UserName"] is None else shared.user_name(params)
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

    created = shared.change(ctx, create, ram_errors.ENTITY_NOT_EXIST_USER)
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
        audit.write_in(conn)  # rolled back with the change if it is refused
        owner = _key_owner(conn, ctx, params)
        if not store.set_access_key_status(
            conn, ctx.account_id, owner, params["UserAccessKeyId"], status
        ):
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_ACCESS_KEY)
    ctx.deps.access_keys.forget(params["UserAccessKeyId"])  # this process: at once
    return {}


def delete_access_key(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.deps.engine.begin() as conn:
        audit.write_in(conn)  # rolled back with the change if it is refused
        owner = _key_owner(conn, ctx, params)
        if not store.delete_access_key(conn, ctx.account_id, owner, params["UserAccessKeyId"]):
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_ACCESS_KEY)
    ctx.deps.access_keys.forget(params["UserAccessKeyId"])
    return {}
