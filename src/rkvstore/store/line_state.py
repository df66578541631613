"""The reconciler's shared state (table ``reconcile_state``): flags, schedule, claims.

Every statement here is one indexed look-up or a batch, so that its cost
follows what changed, not the size of the fleet. Claims are atomic on both
engines: on PostgreSQL the rows to claim are picked ``FOR UPDATE SKIP LOCKED``
(processes claiming at once never wait for, nor take, each other's rows); on
SQLite the ``UPDATE … RETURNING`` holds the database's write lock.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Text,
    bindparam,
    case,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from rkvstore.store.tables import instances, reconcile_state

NORMAL = "Normal"
ALL = "*"  # every account of the instance
_S = reconcile_state


@dataclass(frozen=True)
class Claimed:
    """A row this process claimed: what it held when claimed."""

    instance_id: str
    account_id: str
    dirty: str | None
    flags: int
    unreachable: str | None
    due_at: float
    round: int

    def scheduled(self, now: float) -> bool:
        return self.due_at <= now


def _insert(conn: Connection) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(_S)


def read(conn: Connection, instance_id: str) -> tuple[str | None, str | None]:
    """``(dirty, unreachable)`` of the instance; no row reads as in line."""
    row = conn.execute(
        select(_S.c.dirty, _S.c.unreachable).where(_S.c.instance_id == instance_id)
    ).first()
    return (None, None) if row is None else (row.dirty, row.unreachable)


def flags_of(conn: Connection, instance_id: str) -> int:
    value = conn.execute(select(_S.c.flags).where(_S.c.instance_id == instance_id)).scalar()
    return int(value or 0)


def _merged_dirty(account: str) -> Any:
    """``dirty`` with ``account`` added, in SQL: one statement however many flag at once."""
    if account == ALL:
        return literal(ALL)
    padded = literal(" ") + _S.c.dirty + literal(" ")
    return case(
        (_S.c.dirty.is_(None), literal(account)),
        (_S.c.dirty == ALL, literal(ALL)),
        (padded.contains(f" {account} ", autoescape=True), _S.c.dirty),
        else_=_S.c.dirty + literal(" " + account),
    )


def flag(
    conn: Connection, instance_id: str, accounts: Collection[str], now: float, interval: float
) -> None:
    """Flag ``accounts`` (``ALL``: every one) of the instance for a pass at once.

    Written as ``INSERT … SELECT`` from the instance row, so that a flag for an
    instance deleted meanwhile writes nothing instead of failing.
    """
    names = [ALL] if ALL in accounts else sorted(accounts)
    for name in names:
        source = select(
            instances.c.instance_id,
            literal(name).label("dirty"),
            literal(1).label("flags"),
            literal(now + random.random() * interval).label("due_at"),
            literal(0).label("round"),
            literal(now).label("retry_at"),
        ).where(instances.c.instance_id == instance_id)
        statement = _insert(conn).from_select(
            ["instance_id", "dirty", "flags", "due_at", "round", "retry_at"], source
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["instance_id"],
                set_={
                    "dirty": _merged_dirty(name),
                    "flags": _S.c.flags + 1,
                    "retry_at": literal(now),
                },
            )
        )


ADOPT_CHUNK = 2000  # rows per INSERT when scheduling instances never scheduled


def adopt(conn: Connection, now: float, interval: float) -> int:
    """Schedule every ``Normal`` instance that has no row yet, spread over one interval;
    bring forward any row scheduled further away than one interval (it shrank)."""
    missing = [
        str(r.instance_id)
        for r in conn.execute(
            select(instances.c.instance_id)
            .outerjoin(_S, _S.c.instance_id == instances.c.instance_id)
            .where(instances.c.status == NORMAL, _S.c.instance_id.is_(None))
        )
    ]
    count = len(missing)
    if missing:
        random.shuffle(missing)
        # Evenly spaced, each somewhere in its own slice: never all at once.
        rows = [
            {"instance_id": iid, "due_at": now + (i + random.random()) * interval / count}
            for i, iid in enumerate(missing)
        ]
        # In chunks: one statement's parameters are bounded (PostgreSQL 65,535;
        # SQLite 32,766), and a fleet upgraded to this state has every instance.
        for start in range(0, count, ADOPT_CHUNK):
            chunk = rows[start : start + ADOPT_CHUNK]
            conn.execute(_insert(conn).values(chunk).on_conflict_do_nothing())
    late = [
        str(r.instance_id)
        for r in conn.execute(select(_S.c.instance_id).where(_S.c.due_at > now + interval))
    ]
    for iid in late:
        conn.execute(
            update(_S)
            .where(_S.c.instance_id == iid)
            .values(due_at=now + random.random() * interval)
        )
    return count


def earliest(conn: Connection) -> float | None:
    """When the first pass is wanted (flagged or due) of a ``Normal`` instance,
    claimed or not; None: no row.

    Two walks of an index, each stopping at the first ``Normal`` instance, in one
    statement, and no write: an idle look costs this. (An instance that is not
    ``Normal``, a build that failed, say, is never claimed: its row must not make
    every look try to.)
    """

    def first_of(column: Any) -> Any:
        return (
            select(column)
            .join(instances, instances.c.instance_id == _S.c.instance_id)
            .where(column.is_not(None), instances.c.status == NORMAL)
            .order_by(column)
            .limit(1)
            .scalar_subquery()
        )

    first = conn.execute(select(first_of(_S.c.retry_at), first_of(_S.c.due_at))).one()
    found = [float(v) for v in first if v is not None]
    return min(found) if found else None


def claim(conn: Connection, token: str, now: float, until: float, limit: int) -> list[Claimed]:
    """Claim up to ``limit`` rows wanting a pass: those wanted out of turn first
    (oldest first), then those due; only of ``Normal`` instances, only rows no
    live claim holds. Two indexed statements."""
    claimed: list[Claimed] = []
    for column in (_S.c.retry_at, _S.c.due_at):
        if len(claimed) >= limit:
            break
        pick = (
            select(_S.c.instance_id)
            .join(instances, instances.c.instance_id == _S.c.instance_id)
            .where(
                column <= now,
                instances.c.status == NORMAL,
                or_(_S.c.claimed_until.is_(None), _S.c.claimed_until < now),
            )
            .order_by(column)
            .limit(limit - len(claimed))
            .with_for_update(skip_locked=True, of=_S)
        )
        rows = conn.execute(
            update(_S)
            .where(_S.c.instance_id.in_(pick.scalar_subquery()))
            .values(claimed_by=token, claimed_until=until)
            .returning(
                _S.c.instance_id,
                _S.c.dirty,
                _S.c.flags,
                _S.c.unreachable,
                _S.c.due_at,
                _S.c.round,
            )
        ).all()
        if not rows:
            continue
        tenants = dict(
            conn.execute(
                select(instances.c.instance_id, instances.c.account_id).where(
                    instances.c.instance_id.in_([r.instance_id for r in rows])
                )
            ).all()
        )
        claimed += [
            Claimed(
                str(r.instance_id),
                str(tenants.get(r.instance_id, "")),
                r.dirty,
                int(r.flags),
                r.unreachable,
                float(r.due_at),
                int(r.round),
            )
            for r in rows
        ]
    return claimed


def renew_claims(
    conn: Connection, token: str, instance_ids: Sequence[str], until: float
) -> set[str]:
    """Those of ``instance_ids`` still claimed by ``token``, their claim renewed."""
    if not instance_ids:
        return set()
    rows = conn.execute(
        update(_S)
        .where(_S.c.instance_id.in_(instance_ids), _S.c.claimed_by == token)
        .values(claimed_until=until)
        .returning(_S.c.instance_id)
    ).all()
    return {str(r.instance_id) for r in rows}


def put_off(
    conn: Connection, token: str, instance_ids: Sequence[str], retry_at: float | None
) -> None:
    """Unclaim without a pass: looked at again from ``retry_at`` (the slot was busy),
    or when it is due or flagged anyway (None: it is no longer ``Normal``)."""
    if instance_ids:
        values: dict[str, Any] = {"claimed_by": None, "claimed_until": None}
        if retry_at is not None:
            values["retry_at"] = retry_at
        conn.execute(
            update(_S)
            .where(_S.c.instance_id.in_(instance_ids), _S.c.claimed_by == token)
            .values(**values)
        )


@dataclass(frozen=True)
class Outcome:
    """What one pass found, to be written back."""

    instance_id: str
    seen_flags: int  # ``flags`` when the pass began: a later flag is kept
    in_line: bool
    unreachable: Sequence[str]
    due_at: float  # unchanged unless the pass was the scheduled one
    round: int
    retry_at: float | None  # when the pass left it out of line: look again then


def finish(conn: Connection, token: str, outcomes: Sequence[Outcome], now: float) -> None:
    """Write back a batch of passes and drop their claims, in one statement.

    A flag raised during a pass (``flags`` moved on) keeps ``dirty`` and its
    ``retry_at``; a row whose claim was lost meanwhile is left to its taker.
    """
    if not outcomes:
        return
    untouched = _S.c.flags != bindparam("seen", type_=Integer)
    statement = (
        update(_S)
        .where(_S.c.instance_id == bindparam("iid"), _S.c.claimed_by == token)
        .values(
            dirty=case(
                (or_(untouched, bindparam("in_line", type_=Integer) == 0), _S.c.dirty),
                else_=None,
            ),
            retry_at=case((untouched, _S.c.retry_at), else_=bindparam("retry", type_=Float)),
            unreachable=bindparam("unreachable", type_=Text),
            due_at=bindparam("due", type_=Float),
            round=bindparam("rnd", type_=Integer),
            claimed_by=None,
            claimed_until=None,
            verified_at=now,
        )
    )
    conn.execute(statement, [_params(o) for o in outcomes])


def _params(o: Outcome) -> dict[str, Any]:
    return {
        "iid": o.instance_id,
        "seen": o.seen_flags,
        "in_line": 1 if o.in_line else 0,
        "retry": o.retry_at,
        "unreachable": "\n".join(sorted(o.unreachable)) or None,
        "due": o.due_at,
        "rnd": o.round,
    }


def record(conn: Connection, outcome: Outcome, now: float, interval: float) -> None:
    """A pass outside the schedule (under a request's slot): its findings, schedule kept."""
    source = select(
        instances.c.instance_id,
        literal(now + random.random() * interval).label("due_at"),
        literal(0).label("round"),
    ).where(instances.c.instance_id == outcome.instance_id)
    conn.execute(
        _insert(conn)
        .from_select(["instance_id", "due_at", "round"], source)
        .on_conflict_do_nothing()
    )
    params = _params(outcome)
    untouched = _S.c.flags != outcome.seen_flags
    values: dict[str, Any] = {"unreachable": params["unreachable"], "verified_at": now}
    if outcome.in_line:
        values["dirty"] = case((untouched, _S.c.dirty), else_=None)
    values["retry_at"] = case(
        (untouched, _S.c.retry_at), else_=literal(outcome.retry_at, type_=Float)
    )
    conn.execute(update(_S).where(_S.c.instance_id == outcome.instance_id).values(**values))


def forget(conn: Connection, instance_id: str) -> None:
    conn.execute(_S.delete().where(_S.c.instance_id == instance_id))


def count_unreachable_nodes(conn: Connection) -> int:
    """Nodes the last passes could not reach, over every instance (for metrics)."""
    rows = conn.execute(select(_S.c.unreachable).where(_S.c.unreachable.is_not(None)))
    return sum(len(value.split("\n")) for (value,) in rows if value)
