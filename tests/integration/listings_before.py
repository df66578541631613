"""The listings as they were before issue 10, kept as the reference the new ones must match.

Not a test module. Copied from rkvstore at 30e7d1a (services/instances.py,
services/accounts.py, services/ram.py, iam/ram_store.py): every row loaded,
filtered, sorted and paged in Python, one query per instance or policy shown,
and a RAM user's view decided ARN by ARN with ``authorize.decide``. Only the
imports are adapted (and issue 11's new fields of an instance added); the logic is
the old one, line for line.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from rkvstore.iam.attached_policies import CUSTOM, SYSTEM, USER
from rkvstore.iam.authorize import decide
from rkvstore.products import SYSTEM_POLICIES
from rkvstore.products.kvstore import instance_surface
from rkvstore.products.kvstore.accounts import SUPER
from rkvstore.products.ram import store
from rkvstore.products.ram.store import _EPOCH, PolicyInfo, iso
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.instance_nodes import load_instance
from rkvstore.services.tasks import RECONCILE
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow
from rkvstore.store.tables import ram_policies, ram_users, tasks

# --------------------------------------------------------------------------- instances


def _instance_fields(deps: Deps, instance: InstanceRow, node_count: int) -> dict[str, Any]:
    return {
        "InstanceId": instance.instance_id,
        "InstanceName": instance.name,
        "InstanceStatus": instance.status,
        "InstanceClass": instance.instance_class,
        "InstanceType": "Redis",
        "EngineVersion": instance.engine_version,
        "ArchitectureType": instance.architecture,
        "NodeType": instance.node_type,
        "ShardCount": instance.shard_count,
        "ReplicaCount": max(0, node_count // max(1, instance.shard_count) - 1),
        "RegionId": deps.settings.region,
        "ZoneId": instance.zone_id,
        "ChargeType": instance.charge_type,
        "NetworkType": "CLASSIC",
        "ConnectionDomain": instance.host,
        "Port": instance.port,
        "PrivateIp": instance.host,
        "Capacity": 0,
        "QPS": 0,
        "Bandwidth": 0,
        "Connections": 0,
        "Config": "{}",
        "CreateTime": instance.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "IsRds": True,
        "UserName": instance.instance_id,
        "NodeCount": node_count,
        "Provider": instance.provider,
        # The fields issue 11 added, read from the row alone: the listing is the same.
        **instance_surface.listing_fields(instance),
    }


def _node_counts(deps: Deps, instances: list[InstanceRow]) -> dict[str, int]:
    with deps.engine.connect() as conn:
        return {i.instance_id: len(repo.list_nodes(conn, i.instance_id)) for i in instances}


def describe_instances(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    with deps.engine.connect() as conn:
        rows = repo.list_instances(conn, ctx.account_id)
    if params["InstanceIds"]:
        wanted = {i.strip() for i in params["InstanceIds"].split(",") if i.strip()}
        rows = [r for r in rows if r.instance_id in wanted]
    for key, column in (
        ("InstanceStatus", "status"),
        ("ArchitectureType", "architecture"),
        ("EngineVersion", "engine_version"),
        ("NodeType", "node_type"),
        ("ZoneId", "zone_id"),
        ("ChargeType", "charge_type"),
    ):
        if params[key]:
            rows = [r for r in rows if getattr(r, column) == params[key]]
    if params["SearchKey"]:
        key = params["SearchKey"]
        rows = [r for r in rows if key in r.instance_id or key in r.name]
    if not ctx.caller.is_root:
        # Allowed on instance/* to list at all; each instance shown must be
        # allowed too, so a Deny on one instance hides it here as well.
        arns = [f"acs:kvstore:{ctx.region}:{ctx.account_id}:instance/{r.instance_id}" for r in rows]
        decisions = decide(
            deps, ctx.caller, "kvstore:DescribeInstances", arns, ctx.condition_context()
        )
        rows = [r for r, d in zip(rows, decisions, strict=True) if d == "Allow"]
    page, size = params["PageNumber"], params["PageSize"]
    shown = rows[(page - 1) * size : page * size]
    counts = _node_counts(deps, shown)
    return {
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": len(rows),
        "Instances": {
            "KVStoreInstance": [_instance_fields(deps, r, counts[r.instance_id]) for r in shown]
        },
    }


# --------------------------------------------------------------------------- accounts


def describe_accounts(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = load_instance(ctx, params["InstanceId"])
    with ctx.deps.engine.connect() as conn:
        rows = repo.list_accounts(conn, instance.instance_id)
    exact, search = params["AccountName"], params["SearchAccountName"]
    if exact is not None:
        rows = [r for r in rows if r.name == exact]
    if search is not None:
        rows = [r for r in rows if search in r.name]
    page, size = params["PageNumber"], params["PageSize"]
    with ctx.deps.engine.connect() as conn:
        target = _task_target(conn, instance.instance_id)
    changing: str | None = None
    if target is not None and target[0] != RECONCILE:
        changing = target[1] or "*"
    reconciler = ctx.deps.reconciler

    def status(name: str) -> str:
        busy = changing in ("*", name)
        return (
            "Available"
            if not busy and reconciler.in_line(instance.instance_id, name)
            else ("Unavailable")
        )

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
        for r in rows[(page - 1) * size : page * size]
    ]
    return {
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": len(rows),
        "Accounts": {"Account": items},
    }


# --------------------------------------------------------------------------- RAM


def _store_list_users(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(ram_users).where(ram_users.c.account_id == account_id))
    return sorted((dict(r._mapping) for r in rows), key=lambda u: str(u["user_name"]))


def _store_list_policies(
    conn: Connection, account_id: str, policy_type: str | None
) -> list[PolicyInfo]:
    found: list[PolicyInfo] = []
    if policy_type in (None, SYSTEM):
        found += [
            PolicyInfo(name, SYSTEM, description, "v1", _EPOCH, _EPOCH)
            for name, (description, _doc) in SYSTEM_POLICIES.items()
        ]
    if policy_type in (None, CUSTOM):
        rows = conn.execute(select(ram_policies).where(ram_policies.c.account_id == account_id))
        found += [
            PolicyInfo(
                r.policy_name, CUSTOM, r.description, r.default_version, r.created_at, r.updated_at
            )
            for r in rows
        ]
    return sorted(found, key=lambda p: (p.policy_type, p.name))


def _page(params: dict[str, Any], names: list[str]) -> tuple[int, int, bool, str]:
    marker = params.get("Marker") or ""
    start = 0
    if marker:
        start = next((i for i, name in enumerate(names) if name > marker), len(names))
    end = start + params["MaxItems"]
    truncated = end < len(names)
    return start, end, truncated, names[end - 1] if truncated else ""


def _user_body(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "UserId": user["user_id"],
        "UserName": user["user_name"],
        "DisplayName": user["display_name"],
        "Email": user["email"],
        "MobilePhone": user["mobile_phone"],
        "Comments": user["comments"],
        "CreateDate": iso(user["created_at"]),
        "UpdateDate": iso(user["updated_at"]),
    }


def list_users(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.deps.engine.connect() as conn:
        users = _store_list_users(conn, ctx.account_id)
    start, end, truncated, marker = _page(params, [u["user_name"] for u in users])
    body: dict[str, Any] = {
        "IsTruncated": truncated,
        "Users": {"User": [_user_body(u) for u in users[start:end]]},
    }
    if truncated:
        body["Marker"] = marker
    return body


def _policy_item(conn: Connection, ctx: CallContext, info: PolicyInfo) -> dict[str, Any]:
    return {
        "PolicyName": info.name,
        "PolicyType": info.policy_type,
        "Description": info.description,
        "DefaultVersion": info.default_version,
        "CreateDate": iso(info.created_at),
        "UpdateDate": iso(info.updated_at),
        "AttachmentCount": store.attachment_count(
            conn, ctx.account_id, info.policy_type, info.name
        ),
    }


def list_policies(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    policy_type = params["PolicyType"]  # the new code checks it first; the tests pass valid ones
    with ctx.deps.engine.connect() as conn:
        policies = _store_list_policies(conn, ctx.account_id, policy_type)
        keys = [f"{p.policy_type}:{p.name}" for p in policies]
        start, end, truncated, marker = _page(params, keys)
        items = [_policy_item(conn, ctx, p) for p in policies[start:end]]
    body: dict[str, Any] = {"IsTruncated": truncated, "Policies": {"Policy": items}}
    if truncated:
        body["Marker"] = marker
    return body


def list_policies_for(ctx: CallContext, principal_type: str, name: str) -> dict[str, Any]:
    """ListPoliciesForUser / ListPoliciesForGroup, once the principal was found."""
    with ctx.deps.engine.connect() as conn:
        items = []
        for attachment in store.attachments_of(conn, ctx.account_id, principal_type, name):
            info = store.get_policy(
                conn, ctx.account_id, attachment["policy_type"], attachment["policy_name"]
            )
            if info is None:
                continue
            items.append(
                {
                    "PolicyName": info.name,
                    "PolicyType": info.policy_type,
                    "Description": info.description,
                    "DefaultVersion": info.default_version,
                    "AttachDate": iso(attachment["attached_at"]),
                }
            )
    return {"Policies": {"Policy": items}}


def list_access_keys(ctx: CallContext, owner: str | None) -> dict[str, Any]:
    """ListAccessKeys, once the owner was found."""
    with ctx.deps.engine.connect() as conn:
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


def list_groups_for_user(ctx: CallContext, user: str) -> dict[str, Any]:
    """ListGroupsForUser, once the user was found."""
    with ctx.deps.engine.connect() as conn:
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


__all__ = [
    "USER",
    "describe_accounts",
    "describe_instances",
    "list_access_keys",
    "list_groups_for_user",
    "list_policies",
    "list_policies_for",
    "list_users",
]


def _task_target(conn: Connection, instance_id: str) -> tuple[str, str | None] | None:
    """``repo.task_target`` as it was (the service reads the slot's task in its own query now)."""
    row = conn.execute(
        select(tasks.c.action, tasks.c.account_name).where(tasks.c.instance_id == instance_id)
    ).first()
    return None if row is None else (str(row.action), row.account_name)
