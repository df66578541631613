"""KMS's queries: secrets and their versions (tables ``kms_secrets``, ``kms_secret_versions``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from rkvstore.store.tables import kms_secret_versions as versions
from rkvstore.store.tables import kms_secrets as secrets


@dataclass(frozen=True)
class SecretRow:
    secret_id: str
    account_id: str
    name: str
    sub_type: str
    instance_id: str
    extended_config: str
    description: str
    tags: str
    data_key: str
    rotation_enabled: bool
    rotation_interval: int | None
    grace_period: int | None
    next_rotation_at: float | None
    last_rotation_at: float | None
    planned_delete_at: float | None
    created_at: float
    updated_at: float
    retry_at: float | None = None

    @classmethod
    def of(cls, row: Any) -> SecretRow:
        return cls(**row._mapping)


@dataclass(frozen=True)
class VersionRow:
    secret_id: str
    version_id: str
    seq: int
    stage: str | None
    account_name: str
    password_sealed: str | None
    grace_until: float | None
    created_at: float

    @classmethod
    def of(cls, row: Any) -> VersionRow:
        return cls(**row._mapping)


def get_secret(conn: Connection, account_id: str, name: str) -> SecretRow | None:
    row = conn.execute(
        select(secrets).where(secrets.c.account_id == account_id, secrets.c.name == name)
    ).first()
    return None if row is None else SecretRow.of(row)


def get_secret_by_id(conn: Connection, secret_id: str) -> SecretRow | None:
    row = conn.execute(select(secrets).where(secrets.c.secret_id == secret_id)).first()
    return None if row is None else SecretRow.of(row)


def count_secrets(conn: Connection, account_id: str) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(secrets).where(secrets.c.account_id == account_id)
        ).scalar_one()
    )


def insert_secret(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(secrets).values(**values))


def update_secret(conn: Connection, secret_id: str, **values: Any) -> None:
    conn.execute(update(secrets).where(secrets.c.secret_id == secret_id).values(**values))


def delete_secret(conn: Connection, secret_id: str) -> None:
    conn.execute(delete(versions).where(versions.c.secret_id == secret_id))
    conn.execute(delete(secrets).where(secrets.c.secret_id == secret_id))


def page_versions(
    conn: Connection, secret_id: str, include_deprecated: bool, offset: int, limit: int
) -> tuple[int, list[VersionRow]]:
    """ListSecretVersionIds: newest first, never a Pending one; without
    ``include_deprecated`` only those that hold a stage. Counted and paged in SQL."""
    where = [versions.c.secret_id == secret_id, func.coalesce(versions.c.stage, "") != "Pending"]
    if not include_deprecated:
        where.append(versions.c.stage.is_not(None))
    total = int(conn.execute(select(func.count()).select_from(versions).where(*where)).scalar_one())
    rows = conn.execute(
        select(versions).where(*where).order_by(versions.c.seq.desc()).offset(offset).limit(limit)
    )
    return total, [VersionRow.of(r) for r in rows]


def staged_versions(conn: Connection, secret_id: str) -> list[VersionRow]:
    """The versions that hold a stage (ACSCurrent, ACSPrevious, Pending): newest first."""
    rows = conn.execute(
        select(versions)
        .where(versions.c.secret_id == secret_id, versions.c.stage.is_not(None))
        .order_by(versions.c.seq.desc())
    )
    return [VersionRow.of(r) for r in rows]


def version_exists(conn: Connection, secret_id: str, version_id: str) -> bool:
    return bool(
        conn.execute(
            select(
                exists().where(
                    versions.c.secret_id == secret_id, versions.c.version_id == version_id
                )
            )
        ).scalar()
    )


def next_seq(conn: Connection, secret_id: str) -> int:
    top = conn.execute(
        select(func.max(versions.c.seq)).where(versions.c.secret_id == secret_id)
    ).scalar()
    return int(top or 0) + 1


def insert_version(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(versions).values(**values))


def set_stage(
    conn: Connection,
    secret_id: str,
    version_id: str,
    stage: str | None,
    *,
    grace_until: float | None = None,
) -> None:
    """A version's stage; one that loses every stage loses its password with it."""
    values: dict[str, Any] = {"stage": stage, "grace_until": grace_until}
    if stage is None:
        values["password_sealed"] = None
    conn.execute(
        update(versions)
        .where(versions.c.secret_id == secret_id, versions.c.version_id == version_id)
        .values(**values)
    )


def drop_version(conn: Connection, secret_id: str, version_id: str) -> None:
    conn.execute(
        delete(versions).where(
            versions.c.secret_id == secret_id, versions.c.version_id == version_id
        )
    )


def rotations_since(conn: Connection, secret_id: str, since: float) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(versions)
            .where(versions.c.secret_id == secret_id, versions.c.created_at >= since)
        ).scalar_one()
    )


def managed_names(conn: Connection, instance_id: str) -> set[str]:
    """Accounts of ``instance_id`` held by a secret (CreateSecret refuses them)."""
    rows = conn.execute(
        select(versions.c.account_name)
        .join(secrets, secrets.c.secret_id == versions.c.secret_id)
        .where(secrets.c.instance_id == instance_id)
        .distinct()
    )
    return {str(r.account_name) for r in rows}


# --------------------------------------------------------------------------- listing


def page_secrets(
    conn: Connection,
    account_id: str,
    wanted: dict[str, list[str]],
    offset: int,
    limit: int,
    *,
    also: ColumnElement[bool] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[int, list[SecretRow]]:
    """Filtered, counted and paged in SQL (ListSecrets); ``also``: a further condition
    (what a RAM user may see); ``names``: only these (when that condition stayed in Python)."""
    where = [secrets.c.account_id == account_id]
    if also is not None:
        where.append(also)
    if names is not None:
        where.append(secrets.c.name.in_(list(names)))
    for key, values in wanted.items():
        if key == "SecretName":
            where.append(or_(*(secrets.c.name.contains(v, autoescape=True) for v in values)))
        elif key == "Description":
            where.append(or_(*(secrets.c.description.contains(v, autoescape=True) for v in values)))
        elif key == "SecretType":
            if "Redis" not in values:
                where.append(secrets.c.secret_id.is_(None))
        elif key in ("TagKey", "TagValue"):
            # Tags are a small JSON list: matched on the exact quoted value.
            field = '"' + key + '":'
            where.append(
                or_(*(secrets.c.tags.contains(field + _quoted(v), autoescape=True) for v in values))
            )
        else:  # DKMSInstanceId, Creator: rkvstore records neither
            where.append(secrets.c.secret_id.is_(None))
    condition = and_(*where)
    total = int(
        conn.execute(select(func.count()).select_from(secrets).where(condition)).scalar_one()
    )
    rows = conn.execute(
        select(secrets)
        .where(condition)
        .order_by(secrets.c.created_at, secrets.c.name)
        .offset(offset)
        .limit(limit)
    )
    return total, [SecretRow.of(r) for r in rows]


def secret_names(conn: Connection, account_id: str) -> list[str]:
    """Every secret name of a tenant (at most RKVSTORE_KMS_MAX_SECRETS)."""
    rows = conn.execute(select(secrets.c.name).where(secrets.c.account_id == account_id))
    return [str(name) for (name,) in rows]


def _quoted(value: str) -> str:
    return json.dumps(value)


# --------------------------------------------------------------------------- the scheduler's


def due_secret_ids(conn: Connection, now: float, stale_before: float, limit: int) -> list[str]:
    """Secrets with something to do: a rotation due, a grace ended, a deletion due,
    or a rotation a dead process left written down but unfinished.

    Each kind is taken longest due first, skipping secrets whose last attempt
    failed until their ``retry_at``; then tenants take turns, so one tenant's
    many due secrets cannot fill every look."""
    by_tenant: dict[str, list[str]] = {}
    seen: set[str] = set()
    for query in _due_queries(now, stale_before):
        for secret_id, account_id in conn.execute(query.limit(limit)):
            if secret_id not in seen:
                seen.add(secret_id)
                by_tenant.setdefault(account_id, []).append(secret_id)
    ids: list[str] = []
    queues = list(by_tenant.values())
    for turn in range(limit):  # round robin over tenants, bounded by the batch
        ids.extend(queue[turn] for queue in queues if turn < len(queue))
        if len(ids) >= limit:
            break
    return ids[:limit]


def _due_queries(now: float, stale_before: float) -> list[Select[str, str]]:
    """(secret, tenant) with work due, one query per kind, longest due first."""
    waiting = or_(secrets.c.retry_at.is_(None), secrets.c.retry_at <= now)
    owner = secrets.c.account_id
    rotation = (
        select(secrets.c.secret_id, owner)
        .where(
            secrets.c.rotation_enabled.is_(True),
            secrets.c.planned_delete_at.is_(None),
            secrets.c.next_rotation_at <= now,
            waiting,
        )
        .order_by(secrets.c.next_rotation_at)
    )
    deletion = (
        select(secrets.c.secret_id, owner)
        .where(secrets.c.planned_delete_at <= now, waiting)
        .order_by(secrets.c.planned_delete_at)
    )
    joined = versions.join(secrets, secrets.c.secret_id == versions.c.secret_id)
    grace = (
        select(versions.c.secret_id, owner)
        .select_from(joined)
        .where(versions.c.grace_until <= now, waiting)
        .order_by(versions.c.grace_until)
    )
    stale = (
        select(versions.c.secret_id, owner)
        .select_from(joined)
        .where(versions.c.stage == "Pending", versions.c.created_at <= stale_before, waiting)
        .order_by(versions.c.created_at)
    )
    return [deletion, grace, stale, rotation]


def still_due(conn: Connection, secret_id: str, now: float, stale_before: float) -> bool:
    """Whether ``secret_id`` still has work due (after an attempt at it)."""
    return any(
        conn.execute(query.where(secrets.c.secret_id == secret_id).limit(1)).first() is not None
        for query in _due_queries(now, stale_before)
    )


def retry_later(conn: Connection, secret_id: str, at: float) -> None:
    """The scheduler looks at ``secret_id`` again no sooner than ``at`` (its attempt failed)."""
    conn.execute(update(secrets).where(secrets.c.secret_id == secret_id).values(retry_at=at))


def record_rotation(conn: Connection, secret_id: str, now: float) -> None:
    """A rotation done at ``now``: the next one is due from the row's policy as it is
    now (a policy changed during the rotation wins over the one read before it)."""
    rotating = and_(
        secrets.c.rotation_enabled.is_(True),
        secrets.c.rotation_interval.is_not(None),
        secrets.c.rotation_interval > 0,
    )
    conn.execute(
        update(secrets)
        .where(secrets.c.secret_id == secret_id)
        .values(
            last_rotation_at=now,
            next_rotation_at=case((rotating, now + secrets.c.rotation_interval), else_=None),
            updated_at=now,
            retry_at=None,
        )
    )


def secrets_of_instance(conn: Connection, instance_ids: Sequence[str]) -> list[SecretRow]:
    rows = conn.execute(select(secrets).where(secrets.c.instance_id.in_(list(instance_ids))))
    return [SecretRow.of(r) for r in rows]


def count_due_rotations(conn: Connection, now: float) -> int:
    """Secrets whose rotation is due and not yet done (for metrics)."""
    query = select(func.count()).where(
        secrets.c.rotation_enabled.is_(True),
        secrets.c.planned_delete_at.is_(None),
        secrets.c.next_rotation_at <= now,
    )
    return int(conn.execute(query).scalar_one())
