"""What every RAM handler shares: name checks, lookups, one transaction, paging.

Names and shapes are the official ``alibabacloud-ram20150501`` SDK's
(docs/ram-wire.md); errors are RAM's own codes and messages.

Every change runs in one transaction (``change``) that first locks the row of
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

from rkvstore.errors import ApiError, ErrorSpec
from rkvstore.products.ram import errors as ram_errors
from rkvstore.products.ram import store
from rkvstore.services import audit
from rkvstore.services.context import CallContext

PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9._-]+")
T = TypeVar("T")


def check_name(name: str, field: str, pattern: re.Pattern[str], max_length: int) -> None:
    if not 1 <= len(name) <= max_length:
        raise ApiError(ram_errors.INVALID_NAME_LENGTH, name=field)
    if not pattern.fullmatch(name):
        raise ApiError(ram_errors.INVALID_NAME_CHARS, name=field)


def check_text(value: str | None, field: str, max_length: int) -> str:
    if value is None:
        return ""
    if len(value) > max_length:
        raise ApiError(ram_errors.INVALID_NAME_LENGTH, name=field)
    return value


def user_name(params: dict[str, Any], field: str = "UserName") -> str:
    name: str = params[field]
    check_name(name, field, PRINCIPAL_NAME, 64)
    return name


def require_user(conn: Connection, ctx: CallContext, name: str) -> dict[str, Any]:
    user = store.get_user(conn, ctx.account_id, name)
    if user is None:
        raise ApiError(ram_errors.ENTITY_NOT_EXIST_USER)
    return user


def require_group(conn: Connection, ctx: CallContext, name: str) -> dict[str, Any]:
    group = store.get_group(conn, ctx.account_id, name)
    if group is None:
        raise ApiError(ram_errors.ENTITY_NOT_EXIST_GROUP)
    return group


def require_policy(
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


def change(ctx: CallContext, change: Callable[[Connection], T], conflict: ErrorSpec) -> T:
    """``change`` in one transaction; a race answered with RAM's codes.

    ``change`` locks what it changes first, so the checks it makes hold until its
    commit. A unique or foreign key that fails all the same (two creates of one
    name: there is no row to lock yet) means another call's row has just been
    committed: ``change`` runs once more, and its checks now see that row and
    answer as for a lone call. Should it fail again, ``conflict``.
    """
    try:
        with ctx.deps.engine.begin() as conn:
            return _audited(change(conn), conn)
    except IntegrityError:
        audit.rolled_back()
    with _unique(conflict), ctx.deps.engine.begin() as conn:
        return _audited(change(conn), conn)


def _audited(result: T, conn: Connection) -> T:
    """The change's result, with the call's audit event in its transaction."""
    audit.write_in(conn)
    return result


def new_id() -> str:
    return str(secrets.randbelow(9 * 10**15) + 10**15)


def page(
    params: dict[str, Any], read: Callable[[str, int], list[T]], key: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """One page after the request's ``Marker``, read by the database (``read(marker,
    limit)``: the items after the marker, in order), and the next page's marker (the
    page's last key), None when this page is the last."""
    limit = params["MaxItems"]
    found = read(params.get("Marker") or "", limit + 1)  # one more: is there a next page?
    shown = found[:limit]
    return shown, key(shown[-1]) if len(found) > limit else None


def paged(
    plural: str, name: str, items: list[dict[str, Any]], marker: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"IsTruncated": marker is not None, plural: {name: items}}
    if marker is not None:
        body["Marker"] = marker
    return body
