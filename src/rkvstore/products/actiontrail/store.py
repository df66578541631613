"""The events table's queries: a tenant's page of events, and retention's batches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, or_, select

from rkvstore.store.tables import audit_events as ev

# LookupAttribute keys -> the column each filters (an exact match).
COLUMNS: Mapping[str, Any] = {
    "EventName": ev.c.event_name,
    "ResourceName": ev.c.resource_name,
    "UserName": ev.c.principal_name,
    "EventAccessKeyId": ev.c.access_key_id,
    "ServiceName": ev.c.service_name,
    "ResourceType": ev.c.resource_type,
    "EventRW": ev.c.event_rw,
    "EventId": ev.c.event_id,
}


@dataclass(frozen=True)
class Query:
    account_id: str
    start_ms: int
    end_ms: int  # inclusive
    filters: tuple[tuple[str, str], ...] = ()
    forward: bool = False  # oldest first; default newest first (ActionTrail's BACKWARD)


def page(
    conn: Connection, query: Query, after: tuple[int, str] | None, limit: int
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """Up to ``limit`` events after the position ``after``; the position of the
    last one if more follow (one indexed range scan: account, time, id)."""
    conditions = [
        ev.c.account_id == query.account_id,
        ev.c.event_ms >= query.start_ms,
        ev.c.event_ms <= query.end_ms,
        *(COLUMNS[key] == value for key, value in query.filters),
    ]
    if after is not None:
        ms, event_id = after
        if query.forward:
            conditions.append(
                or_(ev.c.event_ms > ms, and_(ev.c.event_ms == ms, ev.c.event_id > event_id))
            )
        else:
            conditions.append(
                or_(ev.c.event_ms < ms, and_(ev.c.event_ms == ms, ev.c.event_id < event_id))
            )
    order = (
        (ev.c.event_ms.asc(), ev.c.event_id.asc())
        if query.forward
        else (ev.c.event_ms.desc(), ev.c.event_id.desc())
    )
    rows = conn.execute(select(ev).where(*conditions).order_by(*order).limit(limit + 1)).all()
    events = [dict(r._mapping) for r in rows[:limit]]
    more = len(rows) > limit
    last = events[-1] if events and more else None
    return events, (None if last is None else (last["event_ms"], last["event_id"]))


def delete_older(conn: Connection, before_ms: int, batch: int) -> int:
    """One batch of events older than ``before_ms`` deleted (short: a SQLite writer
    waits for it); how many."""
    ids = select(ev.c.event_id).where(ev.c.event_ms < before_ms).limit(batch).scalar_subquery()
    return int(conn.execute(delete(ev).where(ev.c.event_id.in_(ids))).rowcount or 0)
