"""Who is still logged in as an account, and putting them out (issue 15; extensions).

Redis checks a password only at ``AUTH``: a connection opened with a leaked
password stays in after a reset. ``KillAccountSessions`` closes every
connection authenticated as the account on every node (never a replication
link, never rkvstore's own); ``ResetAccountPassword`` and
``ModifyAccountPassword`` do the same with ``RevokeSessions=true``, once every
node has the new password. ``DescribeAccountSessions`` lists them per node.

A node that does not answer is reported: a kill fails with
``SessionsNotClosed`` naming it (the other nodes' sessions are closed; calling
again is safe), a Describe lists it with ``Reachable`` false.
"""

from __future__ import annotations

import logging
from typing import Any

from rkvstore.engine import bounded
from rkvstore.engine import sessions as node_sessions
from rkvstore.engine.acl import Node
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import account_rules as rules
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.products.kvstore.accounts import check_account_engine
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.instance_nodes import (
    instance_nodes,
    load_instance,
    recorded_nodes,
    require_normal,
)
from rkvstore.services.registry import Handler
from rkvstore.services.task_slot import task_slot
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.accounts")


def _checked_instance(ctx: CallContext, params: dict[str, Any]) -> InstanceRow:
    """The caller's Normal instance with ACLs, and an addressable name (errors in the
    account actions' order)."""
    instance = load_instance(ctx, params["InstanceId"])
    check_account_engine(instance)
    rules.check_addressable_name(params["AccountName"], instance.instance_id)
    require_normal(instance)
    return instance


def _require_account(deps: Deps, instance: InstanceRow, name: str) -> None:
    """Only an account rkvstore manages: never the management user, never a registered
    deployment's admin or any user rkvstore did not create."""
    with deps.single.connect() as conn:
        account = repo.get_account(conn, instance.instance_id, name)
    if account is None:
        raise ApiError(kvstore_errors.ACCOUNT_NAME_NOT_FOUND)


def _rows(deps: Deps, instance_id: str) -> list[NodeRow]:
    with deps.single.connect() as conn:
        return repo.list_nodes(conn, instance_id)


def _node_entry(label: str, rows: dict[str, NodeRow]) -> dict[str, Any]:
    row = rows.get(label)
    if row is None:  # a node found just now whose row we did not read
        return {"NodeId": label, "Role": ""}
    return {"NodeId": row.node_id, "Role": row.role}


def _by_label(rows: list[NodeRow]) -> dict[str, NodeRow]:
    return {f"{r.host}:{r.port}": r for r in rows}


def _silent(ctx: CallContext, instance: InstanceRow, label: str, what: str, why: str) -> None:
    log.warning(
        "request %s: node %s of %s did not %s: %s",
        ctx.request_id,
        label,
        instance.instance_id,
        what,
        why,
    )


def close_sessions(
    ctx: CallContext, instance: InstanceRow, name: str
) -> tuple[dict[str, Any], list[str]]:
    """Close ``name``'s sessions on every node: the answer's part (the total and each
    node's count), and the nodes that did not answer (by ID)."""
    deps = ctx.deps
    rows = _rows(deps, instance.instance_id)
    # One deadline for all of it: a registered deployment looked at again, and the kill.
    with bounded.exchange(deps.settings.node_timeout_seconds):
        nodes = instance_nodes(deps, instance, rows)
        if any(n.label not in _by_label(rows) for n in nodes):
            rows = _rows(deps, instance.instance_id)  # nodes found since were recorded
        outcome = node_sessions.kill_sessions(nodes, name)
    by_label = _by_label(rows)
    entries, failed, total = [], [], 0
    for node in nodes:
        entry = _node_entry(node.label, by_label)
        result = outcome[node.label]
        if isinstance(result, str):
            _silent(ctx, instance, node.label, "close the sessions", result)
            failed.append(entry["NodeId"])
            continue
        total += result
        entries.append({**entry, "Killed": result})
    log.info(
        "request %s: %d session(s) of %s closed on %s",
        ctx.request_id,
        total,
        name,
        instance.instance_id,
    )
    return {"KilledCount": total, "Nodes": {"Node": entries}}, failed


# --------------------------------------------------------------------------- actions


def kill_account_sessions(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    name: str = params["AccountName"]
    instance = _checked_instance(ctx, params)
    # Ordered with the other changes of the instance, like any change.
    with task_slot(ctx.deps, instance.instance_id, "KillAccountSessions", name):
        instance = load_instance(ctx, instance.instance_id)
        require_normal(instance)
        _require_account(ctx.deps, instance, name)
        closed, failed = close_sessions(ctx, instance, name)
    if failed:
        raise ApiError(kvstore_errors.SESSIONS_NOT_CLOSED, nodes=", ".join(failed))
    return {"InstanceId": instance.instance_id, "AccountName": name, **closed}


def revoking(change: Handler) -> Handler:
    """``change`` (ResetAccountPassword, ModifyAccountPassword), then, with
    ``RevokeSessions=true``, the account's sessions closed on every node.

    Without the parameter the change is exactly what it was: rotating a password
    without downtime depends on open connections staying open.
    """

    def run(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
        if not params["RevokeSessions"]:
            return change(ctx, params)
        # Sessions are found by ACL user: before 6.0 refused before anything changes.
        check_account_engine(load_instance(ctx, params["InstanceId"]))
        answer = change(ctx, params)
        return {**answer, "RevokedSessions": _revoke(ctx, params)}

    return run


def _revoke(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Once the change reached every node and was recorded.

    Outside the slot (the change freed it with its record): closing is
    idempotent and touches nothing a change holds, and a client that
    reconnects meanwhile meets the new password.
    """
    name: str = params["AccountName"]
    instance = load_instance(ctx, params["InstanceId"])
    closed, failed = close_sessions(ctx, instance, name)
    if failed:
        raise ApiError(kvstore_errors.PASSWORD_CHANGED_SESSIONS_NOT_CLOSED, nodes=", ".join(failed))
    return closed


def describe_account_sessions(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    name: str = params["AccountName"]
    instance = _checked_instance(ctx, params)
    _require_account(deps, instance, name)
    rows = _rows(deps, instance.instance_id)
    nodes: list[Node] = recorded_nodes(deps, instance, rows)
    with bounded.exchange(deps.settings.node_timeout_seconds):
        seen = node_sessions.list_sessions(nodes, name)
    by_label = _by_label(rows)
    entries = []
    for node in nodes:
        entry = _node_entry(node.label, by_label)
        found = seen[node.label]
        if isinstance(found, str):
            _silent(ctx, instance, node.label, "list the sessions", found)
            found = []
        sessions = [
            {"ClientAddress": s.address, "Age": s.age, "Idle": s.idle, "Name": s.name}
            for s in found
        ]
        entries.append(
            {
                **entry,
                "Reachable": not isinstance(seen[node.label], str),
                "SessionCount": len(sessions),
                "Sessions": {"Session": sessions},
            }
        )
    return {"InstanceId": instance.instance_id, "AccountName": name, "Nodes": {"Node": entries}}
