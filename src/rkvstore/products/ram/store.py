"""RAM entities in the database: users, groups, memberships, policies, attachments.

Every query is scoped to one tenant (``account_id``). System policies have no
rows: they exist in every tenant, from ``iam.system_policies.SYSTEM_POLICIES``.

Changes to one entity run one after the other (issue 9): a transaction that
changes a user, a group or a policy, or what hangs from it (keys, memberships,
attachments, versions), first ``lock_*``s its row and re-reads it there. The
lock is an UPDATE that writes nothing new, on purpose: as the transaction's
first statement it takes the row's lock on PostgreSQL (held to the commit, and
a waiter that gets it after a delete or rename finds no row) and SQLite's one
write lock (a transaction that had read first could not serialise with the
writers it raced). Foreign keys (migration 0008) are the last line: a key or
membership cannot outlive its user, nor follow a deleted user's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)

from rkvstore.iam.attached_policies import CUSTOM, SYSTEM, USER
from rkvstore.iam.system_policies import SYSTEM_POLICIES
from rkvstore.store.tables import (
    access_keys,
    ram_attachments,
    ram_group_members,
    ram_groups,
    ram_policies,
    ram_policy_versions,
    ram_users,
    tenants,
)


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:  # SQLite hands back naive datetimes
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mapping(row: Row[Any] | None) -> dict[str, Any] | None:
    return dict(row._mapping) if row is not None else None


# --------------------------------------------------------------------------- locks


def lock_user(conn: Connection, account_id: str, name: str) -> dict[str, Any] | None:
    """The user's row, locked until the transaction ends; None: there is no such user."""
    return _mapping(
        conn.execute(
            update(ram_users)
            .where(ram_users.c.account_id == account_id, ram_users.c.user_name == name)
            .values(user_id=ram_users.c.user_id)
            .returning(*ram_users.c)
        ).first()
    )


def lock_group(conn: Connection, account_id: str, name: str) -> dict[str, Any] | None:
    """The group's row, locked until the transaction ends; None: there is no such group."""
    return _mapping(
        conn.execute(
            update(ram_groups)
            .where(ram_groups.c.account_id == account_id, ram_groups.c.group_name == name)
            .values(group_id=ram_groups.c.group_id)
            .returning(*ram_groups.c)
        ).first()
    )


def lock_policy(conn: Connection, account_id: str, name: str) -> dict[str, Any] | None:
    """The custom policy's row, locked until the transaction ends; None: no such policy."""
    return _mapping(
        conn.execute(
            update(ram_policies)
            .where(ram_policies.c.account_id == account_id, ram_policies.c.policy_name == name)
            .values(next_version=ram_policies.c.next_version)
            .returning(*ram_policies.c)
        ).first()
    )


def lock_root(conn: Connection, account_id: str) -> bool:
    """The tenant's row (its root principal's keys hang from it), locked; False: no tenant."""
    return bool(
        conn.execute(
            update(tenants).where(tenants.c.account_id == account_id).values(name=tenants.c.name)
        ).rowcount
    )


def share_policy(conn: Connection, account_id: str, name: str) -> bool:
    """Whether the custom policy exists, kept so until the transaction ends.

    FOR SHARE on PostgreSQL: attachments of one policy to several principals go
    on side by side, while ``lock_policy`` (DeletePolicy) waits for them, and they
    for it. SQLite has no row locks; there the caller already holds the write lock.
    """
    return (
        conn.execute(
            select(ram_policies.c.policy_name)
            .where(ram_policies.c.account_id == account_id, ram_policies.c.policy_name == name)
            .with_for_update(read=True)
        ).first()
        is not None
    )


# --------------------------------------------------------------------------- users


def get_user(conn: Connection, account_id: str, name: str) -> dict[str, Any] | None:
    return _mapping(
        conn.execute(
            select(ram_users).where(
                ram_users.c.account_id == account_id, ram_users.c.user_name == name
            )
        ).first()
    )


def insert_user(conn: Connection, account_id: str, values: dict[str, Any]) -> None:
    moment = now()
    conn.execute(
        insert(ram_users).values(
            account_id=account_id, created_at=moment, updated_at=moment, **values
        )
    )


def update_user(conn: Connection, account_id: str, name: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(ram_users)
        .where(ram_users.c.account_id == account_id, ram_users.c.user_name == name)
        .values(updated_at=now(), **values)
    )


def rename_user_attachments(conn: Connection, account_id: str, old: str, new: str) -> None:
    """After a rename: the user's attachments follow (its keys and groups follow by foreign key)."""
    conn.execute(
        update(ram_attachments)
        .where(
            ram_attachments.c.account_id == account_id,
            ram_attachments.c.principal_type == USER,
            ram_attachments.c.principal_name == old,
        )
        .values(principal_name=new)
    )


def delete_user(conn: Connection, account_id: str, name: str) -> None:
    conn.execute(
        delete(ram_users).where(ram_users.c.account_id == account_id, ram_users.c.user_name == name)
    )


# --------------------------------------------------------------------------- access keys


def _key_owner(user_name: str | None) -> ColumnElement[bool]:
    """The keys of ``user_name``, or of the root principal when None."""
    if user_name is None:
        return access_keys.c.user_name.is_(None)
    return access_keys.c.user_name == user_name


def list_access_keys(
    conn: Connection, account_id: str, user_name: str | None
) -> list[dict[str, Any]]:
    owner = _key_owner(user_name)
    rows = conn.execute(
        select(access_keys.c.access_key_id, access_keys.c.status, access_keys.c.created_at)
        .where(access_keys.c.account_id == account_id, owner)
        .order_by(access_keys.c.created_at, access_keys.c.access_key_id)
    )
    return [dict(r._mapping) for r in rows]


def set_access_key_status(
    conn: Connection, account_id: str, user_name: str | None, key_id: str, status: str
) -> bool:
    owner = _key_owner(user_name)
    return bool(
        conn.execute(
            update(access_keys)
            .where(
                access_keys.c.account_id == account_id,
                access_keys.c.access_key_id == key_id,
                owner,
            )
            .values(status=status)
        ).rowcount
    )


def delete_access_key(
    conn: Connection, account_id: str, user_name: str | None, key_id: str
) -> bool:
    owner = _key_owner(user_name)
    return bool(
        conn.execute(
            delete(access_keys).where(
                access_keys.c.account_id == account_id,
                access_keys.c.access_key_id == key_id,
                owner,
            )
        ).rowcount
    )


# --------------------------------------------------------------------------- groups


def get_group(conn: Connection, account_id: str, name: str) -> dict[str, Any] | None:
    return _mapping(
        conn.execute(
            select(ram_groups).where(
                ram_groups.c.account_id == account_id, ram_groups.c.group_name == name
            )
        ).first()
    )


def insert_group(conn: Connection, account_id: str, values: dict[str, Any]) -> None:
    moment = now()
    conn.execute(
        insert(ram_groups).values(
            account_id=account_id, created_at=moment, updated_at=moment, **values
        )
    )


def groups_of_user(conn: Connection, account_id: str, user_name: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(ram_groups, ram_group_members.c.joined_at)
        .join(
            ram_group_members,
            and_(
                ram_group_members.c.account_id == ram_groups.c.account_id,
                ram_group_members.c.group_name == ram_groups.c.group_name,
            ),
        )
        .where(
            ram_group_members.c.account_id == account_id, ram_group_members.c.user_name == user_name
        )
        .order_by(ram_groups.c.group_name)
    )
    return [dict(r._mapping) for r in rows]


def add_member(conn: Connection, account_id: str, group: str, user: str) -> None:
    conn.execute(
        insert(ram_group_members).values(
            account_id=account_id, group_name=group, user_name=user, joined_at=now()
        )
    )


def remove_member(conn: Connection, account_id: str, group: str, user: str) -> bool:
    return bool(
        conn.execute(
            delete(ram_group_members).where(
                ram_group_members.c.account_id == account_id,
                ram_group_members.c.group_name == group,
                ram_group_members.c.user_name == user,
            )
        ).rowcount
    )


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    policy_type: str
    description: str
    default_version: str
    created_at: datetime | None
    updated_at: datetime | None


_EPOCH = datetime(2015, 5, 1, tzinfo=UTC)  # system policies' dates


def system_policy(name: str) -> PolicyInfo:
    """One of ``SYSTEM_POLICIES`` (every tenant has them, without a row)."""
    return PolicyInfo(name, SYSTEM, SYSTEM_POLICIES[name][0], "v1", _EPOCH, _EPOCH)


def get_policy(conn: Connection, account_id: str, policy_type: str, name: str) -> PolicyInfo | None:
    if policy_type == SYSTEM:
        return system_policy(name) if name in SYSTEM_POLICIES else None
    row = conn.execute(
        select(ram_policies).where(
            ram_policies.c.account_id == account_id, ram_policies.c.policy_name == name
        )
    ).first()
    if row is None:
        return None
    return PolicyInfo(
        row.policy_name,
        CUSTOM,
        row.description,
        row.default_version,
        row.created_at,
        row.updated_at,
    )


def policy_document(
    conn: Connection, account_id: str, policy_type: str, name: str, version: str
) -> str | None:
    if policy_type == SYSTEM:
        return SYSTEM_POLICIES[name][1] if name in SYSTEM_POLICIES else None
    return conn.execute(
        select(ram_policy_versions.c.document).where(
            ram_policy_versions.c.account_id == account_id,
            ram_policy_versions.c.policy_name == name,
            ram_policy_versions.c.version_id == version,
        )
    ).scalar_one_or_none()


def policy_versions(conn: Connection, account_id: str, name: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(ram_policy_versions)
        .where(
            ram_policy_versions.c.account_id == account_id,
            ram_policy_versions.c.policy_name == name,
        )
        .order_by(ram_policy_versions.c.created_at, ram_policy_versions.c.version_id)
    )
    return [dict(r._mapping) for r in rows]


def insert_policy(
    conn: Connection, account_id: str, name: str, description: str, document: str
) -> None:
    moment = now()
    conn.execute(
        insert(ram_policies).values(
            account_id=account_id,
            policy_name=name,
            description=description,
            default_version="v1",
            next_version=2,
            created_at=moment,
            updated_at=moment,
        )
    )
    insert_version(conn, account_id, name, "v1", document)


def insert_version(
    conn: Connection, account_id: str, name: str, version: str, document: str
) -> None:
    conn.execute(
        insert(ram_policy_versions).values(
            account_id=account_id,
            policy_name=name,
            version_id=version,
            document=document,
            created_at=now(),
        )
    )


def delete_version(conn: Connection, account_id: str, name: str, version: str) -> None:
    conn.execute(
        delete(ram_policy_versions).where(
            ram_policy_versions.c.account_id == account_id,
            ram_policy_versions.c.policy_name == name,
            ram_policy_versions.c.version_id == version,
        )
    )


def update_policy(conn: Connection, account_id: str, name: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(ram_policies)
        .where(ram_policies.c.account_id == account_id, ram_policies.c.policy_name == name)
        .values(updated_at=now(), **values)
    )


def delete_policy(conn: Connection, account_id: str, name: str) -> None:
    conn.execute(
        delete(ram_policy_versions).where(
            ram_policy_versions.c.account_id == account_id,
            ram_policy_versions.c.policy_name == name,
        )
    )
    conn.execute(
        delete(ram_policies).where(
            ram_policies.c.account_id == account_id, ram_policies.c.policy_name == name
        )
    )


# --------------------------------------------------------------------------- attachments


def attachments_of(
    conn: Connection, account_id: str, principal_type: str, principal: str
) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(ram_attachments)
        .where(
            ram_attachments.c.account_id == account_id,
            ram_attachments.c.principal_type == principal_type,
            ram_attachments.c.principal_name == principal,
        )
        .order_by(ram_attachments.c.policy_type, ram_attachments.c.policy_name)
    )
    return [dict(r._mapping) for r in rows]


def attach(
    conn: Connection,
    account_id: str,
    principal_type: str,
    principal: str,
    policy_type: str,
    policy: str,
) -> None:
    conn.execute(
        insert(ram_attachments).values(
            account_id=account_id,
            principal_type=principal_type,
            principal_name=principal,
            policy_type=policy_type,
            policy_name=policy,
            attached_at=now(),
        )
    )


def detach(
    conn: Connection,
    account_id: str,
    principal_type: str,
    principal: str,
    policy_type: str,
    policy: str,
) -> bool:
    return bool(
        conn.execute(
            delete(ram_attachments).where(
                ram_attachments.c.account_id == account_id,
                ram_attachments.c.principal_type == principal_type,
                ram_attachments.c.principal_name == principal,
                ram_attachments.c.policy_type == policy_type,
                ram_attachments.c.policy_name == policy,
            )
        ).rowcount
    )


def attachment_count(
    conn: Connection,
    account_id: str,
    policy_type: str,
    policy: str,
    principal_type: str | None = None,
) -> int:
    query = (
        select(func.count())
        .select_from(ram_attachments)
        .where(
            ram_attachments.c.account_id == account_id,
            ram_attachments.c.policy_type == policy_type,
            ram_attachments.c.policy_name == policy,
        )
    )
    if principal_type is not None:
        query = query.where(ram_attachments.c.principal_type == principal_type)
    return int(conn.execute(query).scalar_one())
