"""The account actions (api.md §3): validate, take the task slot, change every node, record."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from sqlalchemy import Connection

from rkvstore import errors
from rkvstore.engine import bounded
from rkvstore.engine.acl import NodeFailure, UserChange
from rkvstore.engine.redis_engine import desired_user
from rkvstore.errors import ApiError
from rkvstore.faults import crash_point
from rkvstore.products.kvstore import account_rules as rules
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext
from rkvstore.services.instance_nodes import (
    REGISTERED,
    apply_changes,
    instance_addresses,
    instance_nodes,
    is_legacy,
    load_instance,
    pending_passwords,
    require_normal,
)
from rkvstore.services.reconcile import in_line_from
from rkvstore.services.task_slot import recording, slot_again, task_slot
from rkvstore.services.tasks import RECONCILE, Task, TaskLost
from rkvstore.store import line_state, listing, repo
from rkvstore.store.repo import AccountRow, InstanceRow, NodeRow

log = logging.getLogger("rkvstore.accounts")

NORMAL = "Normal"
SUPER = "Super"
DEFAULT_PRIVILEGE = "RoleReadWrite"


def check_account_engine(instance: InstanceRow) -> None:
    """Custom accounts need ACLs: Redis 6.0 or later (api.md §3)."""
    if is_legacy(instance):
        raise ApiError(kvstore_errors.ENGINE_VERSION_FORMAT)


def _load_account(ctx: CallContext, instance: InstanceRow, name: str) -> AccountRow:
    with ctx.deps.engine.connect() as conn:
        account = repo.get_account(conn, instance.instance_id, name)
    if account is None:
        raise ApiError(kvstore_errors.ACCOUNT_NAME_NOT_FOUND)
    return account


def _refuse_managed(account: AccountRow) -> None:
    """An account under a KMS secret changes only through the secret (kms.md §5)."""
    if account.managed_by is not None:
        raise ApiError(kvstore_errors.ACCOUNT_MANAGED_BY_SECRET)


def _reload(ctx: CallContext, instance: InstanceRow) -> InstanceRow:
    """The instance as it is now that the slot is ours (it may have been deleted or rotated)."""
    fresh = load_instance(ctx, instance.instance_id)
    require_normal(fresh)
    return fresh


def refuse_existing_user(ctx: CallContext, instance: InstanceRow, name: str) -> None:
    """On a registered deployment, a user rkvstore did not create is not ours to take over."""
    if name == instance.admin_user:
        raise ApiError(kvstore_errors.ACCOUNT_NAME_FORBID)
    with ctx.deps.engine.connect() as conn:
        ours = name in repo.pending_user_names(conn, instance.instance_id)
    nodes = instance_nodes(ctx.deps, instance)
    for users in ctx.deps.redis.fanout.read_users(nodes).values():
        if isinstance(users, str):  # a node that cannot say
            raise ApiError(errors.SERVICE_UNAVAILABLE)
        if name in users and not ours:  # a failed create of ours may have left it
            raise ApiError(kvstore_errors.ACCOUNT_NAME_DUPLICATE)


def _set_user(
    ctx: CallContext,
    instance: InstanceRow,
    name: str,
    password_sha256: str,
    privilege: str,
    node_rows: list[NodeRow] | None = None,
    previous_sha256: str | None = None,
) -> None:
    user = desired_user(name, password_sha256, privilege, instance.engine_version, previous_sha256)
    apply_changes(ctx.deps, instance, [UserChange(name, user)], node_rows)


def _account_instance(ctx: CallContext, params: dict[str, Any]) -> InstanceRow:
    instance = load_instance(ctx, params["InstanceId"])
    check_account_engine(instance)
    return instance


# --------------------------------------------------------------------------- actions


def create_account(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = _account_instance(ctx, params)
    name: str = params["AccountName"]
    password: Secret = params["AccountPassword"]
    rules.check_creatable_name(name, instance.instance_id)
    rules.check_password(password)
    privilege = params["AccountPrivilege"] or DEFAULT_PRIVILEGE
    rules.check_privilege_for_create(privilege)
    if params["AccountType"] not in (None, NORMAL):
        raise ApiError(errors.INVALID_PARAMETER, name="AccountType")
    description = params["AccountDescription"]
    if description is not None:
        rules.check_description(description)
    require_normal(instance)
    with task_slot(ctx.deps, instance.instance_id, "CreateAccount", name) as task:
        instance = _reload(ctx, instance)
        with ctx.deps.engine.connect() as conn:
            if repo.get_account(conn, instance.instance_id, name) is not None:
                raise ApiError(kvstore_errors.ACCOUNT_NAME_DUPLICATE)
            count = repo.count_custom_accounts(conn, instance.instance_id)
        if count >= ctx.deps.settings.max_accounts:
            raise ApiError(kvstore_errors.ACCOUNT_LIMIT_EXCEEDED)
        digest = password.sha256_hex()
        with bounded.exchange(ctx.deps.settings.node_timeout_seconds):  # all its node work
            if instance.provider == REGISTERED:
                refuse_existing_user(ctx, instance, name)
            # Recorded before any node gets the user: should the change fail with a
            # node in doubt, the reconciler takes the user off every node.
            with recording(ctx.deps, task, intent=True) as conn:
                repo.add_pending_user(conn, instance.instance_id, name)
            _set_user(ctx, instance, name, digest, privilege)
        crash_point("nodes-changed")
        try:
            with recording(ctx.deps, task) as conn:
                repo.insert_account(
                    conn,
                    {
                        "instance_id": instance.instance_id,
                        "name": name,
                        "password_sha256": digest,
                        "privilege": privilege,
                        "account_type": NORMAL,
                        "description": description or "",
                    },
                )
                repo.drop_pending_users(conn, instance.instance_id, [name])
        except ApiError as exc:
            # Taken over while stalled: take the user back under the slot again.
            # The database away: the slot is still ours, and the pending note
            # (committed before any node got the user) has the reconciler do it.
            if isinstance(exc.__cause__, TaskLost):
                _take_back_unrecorded_user(ctx, instance, name)
            raise
    return {"InstanceId": instance.instance_id, "AccountName": name, "AcountName": name}


def _take_back_unrecorded_user(ctx: CallContext, instance: InstanceRow, name: str) -> None:
    """A user created on the nodes but not recorded (the task was taken over) is removed.

    On a registered deployment the reconciler leaves users it does not know
    alone, so nothing else would; under the slot again, and only if the
    database does not have the account by now (the taker may have created it).
    """
    deps = ctx.deps
    try:
        with slot_again(deps, instance.instance_id, "CreateAccount") as fresh:
            if fresh is None:
                return
            with deps.engine.connect() as conn:
                if repo.get_account(conn, instance.instance_id, name) is not None:
                    return
            # The fresh row: the taker may have rotated the management login.
            deps.redis.apply(instance_nodes(deps, fresh), [UserChange(name, None)])
    except (ApiError, NodeFailure) as exc:
        log.warning(
            "request %s: user %s created on %s but not recorded, and left there: %s",
            ctx.request_id,
            name,
            instance.instance_id,
            exc,
        )


def _password_checks(instance: InstanceRow, name: str, password: Secret) -> None:
    """Before 6.0 the instance ID's account (``requirepass``) is the one that exists."""
    if not (is_legacy(instance) and name == instance.instance_id):
        check_account_engine(instance)
    rules.check_addressable_name(name, instance.instance_id)
    rules.check_password(password)


def _plausible(instance_id: str, name: str, password: Secret) -> bool:
    """The checks that need no instance pass."""
    try:
        rules.check_addressable_name(name, instance_id)
        rules.check_password(password)
    except ApiError:
        return False
    return True


def reset_account_password(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    _change_password(ctx, params, params["AccountPassword"], "ResetAccountPassword", old=None)
    return {}


def modify_account_password(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    new: Secret = params["NewAccountPassword"]
    old: Secret = params["OldAccountPassword"]
    _change_password(ctx, params, new, "ModifyAccountPassword", old=old)
    return {}


def _change_password(
    ctx: CallContext,
    params: dict[str, Any],
    password: Secret,
    action: str,
    *,
    old: Secret | None,
) -> None:
    instance_id: str = params["InstanceId"]
    name: str = params["AccountName"]
    deps = ctx.deps

    def read(conn: Connection) -> repo.ChangeView | None:
        return repo.change_view(conn, instance_id, name)

    # Mostly the slot is free: it is taken, and what the change starts from read,
    # in one transaction, if the instance is the caller's and Normal; the checks
    # follow. Else (or when the parameters are wrong: the errors keep their
    # order) the instance is looked at first and the slot waited for.
    taken = None
    if _plausible(instance_id, name, password):
        taken = deps.slots.try_take(
            instance_id, action, account=name, tenant=ctx.account_id, read=read
        )
    if taken is None:
        instance = load_instance(ctx, instance_id)
        _password_checks(instance, name, password)
        require_normal(instance)
    with task_slot(deps, instance_id, action, name, read=read, taken=taken) as task:
        view: repo.ChangeView | None = task.seen
        if task.took_over:  # read again after the takeover's pass
            with deps.single.connect() as conn:
                view = read(conn)
        if view is None:  # deleted while we waited for the slot
            raise ApiError(errors.INSTANCE_NOT_FOUND)
        instance = view.instance
        if taken is not None:
            _password_checks(instance, name, password)
        require_normal(instance)
        crash_point("task-acquired")
        account = view.account
        if account is None:
            raise ApiError(kvstore_errors.ACCOUNT_NAME_NOT_FOUND)
        _refuse_managed(account)
        if old is not None and not hmac.compare_digest(
            old.sha256_hex().encode(), account.password_sha256.encode()
        ):
            raise ApiError(kvstore_errors.ACCOUNT_PASSWORD_NOT_MATCH)
        digest = password.sha256_hex()
        legacy = is_legacy(instance)
        if legacy:
            _set_requirepass(ctx, instance, task, password)
        else:
            _set_user(ctx, instance, name, digest, account.privilege, view.nodes)
        crash_point("nodes-changed")

        # An instance out of line gets a pass before its slot is freed (task_slot):
        # the slot goes with the record only if the instance is in line then.
        def in_line(conn: Connection) -> bool:
            flagged = deps.reconciler.unwritten(instance_id)  # before the read: see there
            return deps.reconciler.in_line_as_read(flagged, *line_state.read(conn, instance_id))

        with recording(deps, task, release=in_line) as conn:
            repo.set_account_password(conn, instance_id, name, digest)
            if legacy:
                repo.set_legacy_password(conn, instance_id, deps.box.seal(password))
        crash_point("db-committed")


def _set_requirepass(ctx: CallContext, instance: InstanceRow, task: Task, password: Secret) -> None:
    """Redis before 6.0: every node's ``requirepass`` (and ``masterauth``), or none.

    It is also rkvstore's own login, so the new one is added (encrypted) to the
    pending passwords first: a process that dies, or a holder that stalls,
    before recording the change leaves the next one a way in, to put the
    recorded password back. The nodes are logged in to with the recorded
    password or any pending one.
    """
    deps = ctx.deps
    with recording(deps, task, intent=True) as conn:
        repo.add_pending_password(conn, instance.instance_id, deps.box.seal(password))
    logins = [deps.box.open(instance.mgmt_password_encrypted), *pending_passwords(deps, instance)]
    addresses = [(a.host, a.port) for a in instance_addresses(deps, instance)]
    try:
        deps.redis.legacy.set_password(addresses, logins, password)
    except NodeFailure as exc:
        log.warning(
            "request %s: password of %s rolled back: %s", ctx.request_id, instance.instance_id, exc
        )
        deps.reconciler.mark_dirty(instance.instance_id)
        raise ApiError(errors.SERVICE_UNAVAILABLE) from exc


def modify_account_description(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = _account_instance(ctx, params)
    name: str = params["AccountName"]
    rules.check_addressable_name(name, instance.instance_id)
    rules.check_description(params["AccountDescription"])
    require_normal(instance)
    # Only the database holds descriptions, but the slot still orders it with other changes.
    with task_slot(ctx.deps, instance.instance_id, "ModifyAccountDescription", name) as task:
        instance = _reload(ctx, instance)
        _load_account(ctx, instance, name)
        with recording(ctx.deps, task) as conn:
            repo.update_account(
                conn, instance.instance_id, name, description=params["AccountDescription"]
            )
    return {}


def grant_account_privilege(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = _account_instance(ctx, params)
    name: str = params["AccountName"]
    rules.check_modifiable_name(name, instance.instance_id)
    privilege: str = params["AccountPrivilege"]
    rules.check_privilege_for_grant(privilege)
    require_normal(instance)
    with task_slot(ctx.deps, instance.instance_id, "GrantAccountPrivilege", name) as task:
        instance = _reload(ctx, instance)
        account = _load_account(ctx, instance, name)
        _refuse_managed(account)
        _set_user(
            ctx, instance, name, account.password_sha256, privilege, None, account.previous_sha256
        )
        with recording(ctx.deps, task) as conn:
            repo.update_account(conn, instance.instance_id, name, privilege=privilege)
    return {}


def delete_account(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = _account_instance(ctx, params)
    name: str = params["AccountName"]
    rules.check_modifiable_name(name, instance.instance_id)
    require_normal(instance)
    with task_slot(ctx.deps, instance.instance_id, "DeleteAccount", name) as task:
        instance = _reload(ctx, instance)
        _refuse_managed(_load_account(ctx, instance, name))
        apply_changes(ctx.deps, instance, [UserChange(name, None)])
        with recording(ctx.deps, task) as conn:
            repo.delete_account(conn, instance.instance_id, name)
    return {}


def describe_accounts(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    page, size = params["PageNumber"], params["PageSize"]
    deps = ctx.deps
    # This process's unwritten flags before the shared state (see ``unwritten``).
    flagged = deps.reconciler.unwritten(params["InstanceId"])
    with deps.single.connect() as conn:  # two reads, no transaction
        # The instance, the task holding its slot and the reconciler's state at once.
        view = repo.status_view(conn, ctx.account_id, params["InstanceId"])
        if view is None:
            raise ApiError(errors.INSTANCE_NOT_FOUND)
        instance = view.instance
        # Filtered, counted and paged by the database (issue 10).
        total, rows = listing.page_accounts(
            conn,
            instance.instance_id,
            exact=params["AccountName"],
            search=params["SearchAccountName"],
            offset=(page - 1) * size,
            limit=size,
        )
    # Unavailable while a node is out of line, or while a task (of any process:
    # the slot is in the database) is changing this account (or every account).
    changing: str | None = None
    if view.task_action is not None and view.task_action != RECONCILE:
        changing = view.task_account or "*"
    dirty, unreachable = deps.reconciler.line_as_read(flagged, view.dirty, view.unreachable)

    def status(name: str) -> str:
        busy = changing in ("*", name)
        in_line = in_line_from(dirty, unreachable, name)
        return "Available" if not busy and in_line else "Unavailable"

    items = [
        {
            "AccountName": r.name,
            "AccountDescription": r.description,
            "AccountStatus": status(r.name),
            "AccountType": r.account_type,
            "InstanceId": instance.instance_id,
            "DatabasePrivileges": {
                "DatabasePrivilege": [
                    {"AccountPrivilege": "RoleReadWrite" if r.privilege == SUPER else r.privilege}
                ]
            },
        }
        for r in rows
    ]
    return {
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": total,
        "Accounts": {"Account": items},
    }
