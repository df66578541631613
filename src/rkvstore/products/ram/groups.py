"""RAM groups and their members: create a group, add and remove users, list a user's groups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from rkvstore.errors import ApiError
from rkvstore.products.ram import errors as ram_errors
from rkvstore.products.ram import shared, store
from rkvstore.products.ram.store import iso
from rkvstore.services.context import CallContext

MAX_GROUPS_PER_USER = 5


def create_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name = shared.user_name(params, "GroupName")
    comments = shared.check_text(params["Comments"], "Comments", 128)
    values = {"group_name": name, "group_id": shared.new_id(), "comments": comments}

    def create(conn: Connection) -> dict[str, Any]:
        if store.get_group(conn, ctx.account_id, name) is not None:
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_GROUP)
        store.insert_group(conn, ctx.account_id, values)
        return shared.require_group(conn, ctx, name)

    group = shared.change(ctx, create, ram_errors.ENTITY_ALREADY_EXISTS_GROUP)
    return {
        "Group": {
            "GroupId": group["group_id"],
            "GroupName": name,
            "Comments": comments,
            "CreateDate": iso(group["created_at"]),
        }
    }


def add_user_to_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    group = shared.user_name(params, "GroupName")
    user = shared.user_name(params)

    def add(conn: Connection) -> None:
        # The user's row is locked first (its memberships and their limit are the
        # user's); the errors come in the order of a lone call's checks.
        locked = store.lock_user(conn, ctx.account_id, user)
        shared.require_group(conn, ctx, group)
        if locked is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        joined = store.groups_of_user(conn, ctx.account_id, user)
        if any(g["group_name"] == group for g in joined):
            raise ApiError(ram_errors.ENTITY_ALREADY_EXISTS_USER_GROUP)
        if len(joined) >= MAX_GROUPS_PER_USER:
            raise ApiError(ram_errors.LIMIT_EXCEEDED_USER_GROUP)
        store.add_member(conn, ctx.account_id, group, user)

    shared.change(ctx, add, ram_errors.ENTITY_ALREADY_EXISTS_USER_GROUP)
    return {}


def remove_user_from_group(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    group = shared.user_name(params, "GroupName")
    user = shared.user_name(params)

    def remove(conn: Connection) -> None:
        locked = store.lock_user(conn, ctx.account_id, user)
        shared.require_group(conn, ctx, group)
        if locked is None:
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
        if not store.remove_member(conn, ctx.account_id, group, user):
            raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER_GROUP)

    shared.change(ctx, remove, ram_errors.ENTITY_NOT_EXIST_USER_GROUP)
    return {}


def list_groups_for_user(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    user = shared.user_name(params)
    with ctx.deps.engine.connect() as conn:
        shared.require_user(conn, ctx, user)
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
