"""RAM listings paged by the database (issue 10): one page read, never every row.

RAM pages by marker: the marker is the last name of a page, and the next page
holds the names after it, by code point (the order RAM's names had when they were
sorted in Python; ``store.listing.code_point_order`` keeps it on every database).
A page is read with one row more than asked for, which says whether it is the last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, select

from rkvstore.iam.attached_policies import CUSTOM, SYSTEM
from rkvstore.iam.system_policies import SYSTEM_POLICIES
from rkvstore.products.ram.store import PolicyInfo, system_policy
from rkvstore.store.listing import code_point_order
from rkvstore.store.tables import ram_attachments, ram_policies, ram_users


def users_after(conn: Connection, account_id: str, marker: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` users whose names come after ``marker`` ("": from the first)."""
    name = code_point_order(ram_users.c.user_name, conn.dialect.name)
    query = select(ram_users).where(ram_users.c.account_id == account_id)
    if marker:
        query = query.where(name > marker)
    rows = conn.execute(query.order_by(name).limit(limit))
    return [dict(r._mapping) for r in rows]


def _key(policy_type: str, name: str) -> str:
    return f"{policy_type}:{name}"


def policies_after(
    conn: Connection, account_id: str, policy_type: str | None, marker: str, limit: int
) -> list[PolicyInfo]:
    """Up to ``limit`` policies after ``marker``, in the order of their keys
    (``Type:Name``): every custom policy before every system one ("Custom" < "System")."""
    found: list[PolicyInfo] = []
    if policy_type in (None, CUSTOM):
        custom = _custom_after(conn, account_id, marker, limit)
        found += custom
    if policy_type in (None, SYSTEM) and len(found) < limit:
        system = sorted(
            (system_policy(name) for name in SYSTEM_POLICIES),
            key=lambda p: p.name,
        )
        found += [p for p in system if _key(SYSTEM, p.name) > marker][: limit - len(found)]
    return found


def _custom_after(conn: Connection, account_id: str, marker: str, limit: int) -> list[PolicyInfo]:
    # "Custom:<name>" > marker, as a condition on the name alone: after the common
    # prefix only the names compare; else the prefix alone decides, for every name.
    prefix = _key(CUSTOM, "")
    after: str | None = None
    if marker.startswith(prefix):
        after = marker[len(prefix) :]
    elif marker >= prefix:
        return []
    name = code_point_order(ram_policies.c.policy_name, conn.dialect.name)
    query = select(ram_policies).where(ram_policies.c.account_id == account_id)
    if after is not None:
        query = query.where(name > after)
    rows = conn.execute(query.order_by(name).limit(limit))
    return [
        PolicyInfo(
            r.policy_name, CUSTOM, r.description, r.default_version, r.created_at, r.updated_at
        )
        for r in rows
    ]


def attachment_counts(
    conn: Connection, account_id: str, policies: Iterable[PolicyInfo]
) -> dict[tuple[str, str], int]:
    """How many users and groups each of ``policies`` is attached to, in one query."""
    wanted = {(p.policy_type, p.name) for p in policies}
    counts = dict.fromkeys(wanted, 0)
    if wanted:
        rows = conn.execute(
            select(ram_attachments.c.policy_type, ram_attachments.c.policy_name, func.count())
            .where(
                ram_attachments.c.account_id == account_id,
                ram_attachments.c.policy_name.in_(sorted({name for _, name in wanted})),
            )
            .group_by(ram_attachments.c.policy_type, ram_attachments.c.policy_name)
        )
        for policy_type, name, n in rows:
            if (policy_type, name) in counts:
                counts[(policy_type, name)] = int(n)
    return counts


@dataclass(frozen=True)
class Attached:
    policy: PolicyInfo
    attached_at: Any


def attached_policies(
    conn: Connection, account_id: str, principal_type: str, principal: str
) -> list[Attached]:
    """The policies attached to a user or group, with each custom one's row, in one query.

    In ``store.attachments_of``'s order; an attachment whose policy is gone is left out.
    """
    rows = conn.execute(
        select(
            ram_attachments.c.policy_type,
            ram_attachments.c.policy_name,
            ram_attachments.c.attached_at,
            ram_policies.c.policy_name.label("custom_name"),
            ram_policies.c.description,
            ram_policies.c.default_version,
            ram_policies.c.created_at,
            ram_policies.c.updated_at,
        )
        .select_from(ram_attachments)
        .outerjoin(
            ram_policies,
            and_(
                ram_attachments.c.policy_type == CUSTOM,
                ram_policies.c.account_id == ram_attachments.c.account_id,
                ram_policies.c.policy_name == ram_attachments.c.policy_name,
            ),
        )
        .where(
            ram_attachments.c.account_id == account_id,
            ram_attachments.c.principal_type == principal_type,
            ram_attachments.c.principal_name == principal,
        )
        .order_by(ram_attachments.c.policy_type, ram_attachments.c.policy_name)
    )
    found: list[Attached] = []
    for r in rows:
        if r.policy_type == SYSTEM and r.policy_name in SYSTEM_POLICIES:
            found.append(Attached(system_policy(r.policy_name), r.attached_at))
        elif r.policy_type == CUSTOM and r.custom_name is not None:
            info = PolicyInfo(
                r.custom_name, CUSTOM, r.description, r.default_version, r.created_at, r.updated_at
            )
            found.append(Attached(info, r.attached_at))
    return found
