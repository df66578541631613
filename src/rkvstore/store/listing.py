"""Listings filtered, counted and paged by the database (issue 10): never every row for a page.

Apart from ``repo`` so that a listing's queries live together. Two things the
databases do differently are kept here, in one place:

- A substring is found with ``instr`` (SQLite) or ``strpos`` (PostgreSQL): no
  ``LIKE``, whose ``%`` and ``_`` would be wildcards in the text searched for, and
  which is case-insensitive on SQLite. Both are exact and case-sensitive, as
  Python's ``in``.
- Names are ordered by code point, as Python sorts them: SQLite's default
  collation is bytewise on UTF-8, which is that order; PostgreSQL's depends on the
  database, so its comparisons and its ordering name the "C" collation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from rkvstore.store.repo import AccountRow, InstanceRow
from rkvstore.store.tables import accounts, instances, nodes

# The order of DescribeInstances: the order of repo.list_instances, so pages keep theirs.
INSTANCE_ORDER = (instances.c.created_at, instances.c.instance_id)

# DescribeInstances' equality filters: parameter -> column.
INSTANCE_EQUALS: Mapping[str, ColumnElement[Any]] = {
    "InstanceStatus": instances.c.status,
    "ArchitectureType": instances.c.architecture,
    "EngineVersion": instances.c.engine_version,
    "NodeType": instances.c.node_type,
    "ZoneId": instances.c.zone_id,
    "ChargeType": instances.c.charge_type,
}


def contains(column: ColumnElement[Any], text: str, dialect: str) -> ColumnElement[bool]:
    """``text in column``, literally and case-sensitively."""
    if dialect == "postgresql":
        return func.strpos(column, text) > 0
    return func.instr(column, text) > 0


def code_point_order(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """``column`` compared and ordered by code point, as Python compares strings."""
    return column.collate("C") if dialect == "postgresql" else column


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class InstanceFilter:
    """What a DescribeInstances asks for, within one tenant."""

    account_id: str
    instance_ids: frozenset[str] | None = None  # None: any
    equals: Mapping[str, str] = field(default_factory=dict)  # INSTANCE_EQUALS key -> value
    search: str | None = None  # a substring of the id or of the name

    def conditions(self, dialect: str) -> list[ColumnElement[bool]]:
        where = [instances.c.account_id == self.account_id]
        if self.instance_ids is not None:
            where.append(instances.c.instance_id.in_(sorted(self.instance_ids)))
        where += [INSTANCE_EQUALS[key] == value for key, value in sorted(self.equals.items())]
        if self.search:
            where.append(
                contains(instances.c.instance_id, self.search, dialect)
                | contains(instances.c.name, self.search, dialect)
            )
        return where


def count_instances(conn: Connection, where: Sequence[ColumnElement[bool]]) -> int:
    return int(conn.execute(select(func.count()).select_from(instances).where(*where)).scalar_one())


def page_instances(
    conn: Connection, where: Sequence[ColumnElement[bool]], offset: int, limit: int
) -> tuple[int, list[tuple[InstanceRow, int]]]:
    """(how many match, the page of them with each one's node count): two statements.

    The page is chosen from the ids alone (from the index that orders them, when the
    conditions allow), read from whichever end of the order is nearer, so the last
    page costs what the first does; the node counts are grouped for its ids only.
    """
    total = count_instances(conn, where)
    end = min(offset + limit, total)
    if offset >= end:
        return total, []
    order: list[ColumnElement[Any]] = list(INSTANCE_ORDER)
    start = offset
    if total - end < offset:  # nearer the end: the same rows, counted from the end
        order, start = [column.desc() for column in INSTANCE_ORDER], total - end
    page = (
        select(instances.c.instance_id)
        .where(*where)
        .order_by(*order)
        .offset(start)
        .limit(end - offset)
        .cte("page")
    )
    counts = (
        select(nodes.c.instance_id, func.count().label("node_count"))
        .where(nodes.c.instance_id.in_(select(page.c.instance_id)))
        .group_by(nodes.c.instance_id)
        .cte("node_counts")
    )
    rows = conn.execute(
        select(instances, func.coalesce(counts.c.node_count, 0).label("node_count"))
        .join(page, page.c.instance_id == instances.c.instance_id)
        .outerjoin(counts, counts.c.instance_id == instances.c.instance_id)
        .order_by(*INSTANCE_ORDER)
    )
    fields = InstanceRow.__dataclass_fields__
    return total, [
        (InstanceRow(**{k: v for k, v in r._mapping.items() if k in fields}), int(r.node_count))
        for r in rows
    ]


def instance_ids(conn: Connection, where: Sequence[ColumnElement[bool]]) -> list[str]:
    """Every id that matches, in the listing's order (ids only: cheap to hold)."""
    rows = conn.execute(select(instances.c.instance_id).where(*where).order_by(*INSTANCE_ORDER))
    return [str(r.instance_id) for r in rows]


def instances_by_id(conn: Connection, ids: Sequence[str]) -> list[InstanceRow]:
    """The instances of ``ids``, in the order given (ids that do not exist are left out)."""
    if not ids:
        return []
    rows = conn.execute(select(instances).where(instances.c.instance_id.in_(ids)))
    found = {r.instance_id: InstanceRow.of(r) for r in rows}
    return [found[i] for i in ids if i in found]


def node_counts(conn: Connection, ids: Collection[str]) -> dict[str, int]:
    """Nodes per instance, in one grouped query; an instance without nodes counts 0."""
    counts = dict.fromkeys(ids, 0)
    if ids:
        rows = conn.execute(
            select(nodes.c.instance_id, func.count())
            .where(nodes.c.instance_id.in_(sorted(ids)))
            .group_by(nodes.c.instance_id)
        )
        counts.update({str(instance_id): int(n) for instance_id, n in rows})
    return counts


# --------------------------------------------------------------------------- accounts


def _account_conditions(
    instance_id: str, exact: str | None, search: str | None, dialect: str
) -> list[ColumnElement[bool]]:
    where = [accounts.c.instance_id == instance_id]
    if exact is not None:
        where.append(accounts.c.name == exact)
    if search is not None:
        where.append(contains(accounts.c.name, search, dialect))
    return where


def page_accounts(
    conn: Connection,
    instance_id: str,
    *,
    exact: str | None,
    search: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[AccountRow]]:
    """(how many match, the page of them) ordered by name in code points."""
    dialect = conn.dialect.name
    where = _account_conditions(instance_id, exact, search, dialect)
    total = int(conn.execute(select(func.count()).select_from(accounts).where(*where)).scalar_one())
    if offset >= total:
        return total, []
    rows = conn.execute(
        select(accounts)
        .where(*where)
        .order_by(code_point_order(accounts.c.name, dialect))
        .offset(offset)
        .limit(limit)
    )
    return total, [AccountRow.of(r) for r in rows]
