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
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, func, select

from rkvstore.store.repo import AccountRow, InstanceRow
from rkvstore.store.tables import accounts, instance_counts, instances, nodes

# The order of DescribeInstances: the order of repo.list_instances, so pages keep theirs.
INSTANCE_ORDER = (instances.c.created_at, instances.c.instance_id)

# The columns of an InstanceRow, in the order of its fields.
_INSTANCE_ROW = tuple(instances.c[name] for name in InstanceRow.__dataclass_fields__)

# DescribeInstances' equality filters: parameter -> column.
INSTANCE_EQUALS: Mapping[str, ColumnElement[Any]] = {
    "InstanceStatus": instances.c.status,
    "ArchitectureType": instances.c.architecture,
    "EngineVersion": instances.c.engine_version,
    "NodeType": instances.c.node_type,
    "ZoneId": instances.c.zone_id,
    "ChargeType": instances.c.charge_type,
}


def contains(
    column: ColumnElement[Any], text: str | ColumnElement[Any], dialect: str
) -> ColumnElement[bool]:
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

    def shape(self, dialect: str) -> _Shape:
        """What the statement depends on; the values are its parameters (``values``)."""
        keys = tuple(sorted(self.equals))
        return _Shape(dialect, self.instance_ids is not None, keys, bool(self.search))

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"account_id": self.account_id}
        if self.instance_ids is not None:
            values["instance_ids"] = sorted(self.instance_ids)
        values.update({f"equals_{key}": value for key, value in self.equals.items()})
        if self.search:
            values["search"] = self.search
        return values


@dataclass(frozen=True)
class _Shape:
    dialect: str
    instance_ids: bool
    equals: tuple[str, ...]
    search: bool

    @property
    def whole_tenant(self) -> bool:
        return not (self.instance_ids or self.equals or self.search)

    def conditions(self) -> list[ColumnElement[bool]]:
        where = [instances.c.account_id == bindparam("account_id")]
        if self.instance_ids:
            where.append(instances.c.instance_id.in_(bindparam("instance_ids", expanding=True)))
        where += [INSTANCE_EQUALS[key] == bindparam(f"equals_{key}") for key in self.equals]
        if self.search:
            text = bindparam("search", type_=instances.c.name.type)
            where.append(
                contains(instances.c.instance_id, text, self.dialect)
                | contains(instances.c.name, text, self.dialect)
            )
        return where


@dataclass(frozen=True)
class _Statements:
    count: Select[int]
    forward: Select[Any]  # a page, in the listing's order
    backward: Select[Any]  # the same rows counted from the end (still answered in order)


@lru_cache(maxsize=128)
def _statements_of(shape: _Shape) -> _Statements:
    # Building a statement costs more than running it on a small page: built once
    # per shape of request, with every value a parameter.
    statements = _statements(shape.conditions())
    if shape.whole_tenant:
        # Kept by triggers (migration 0010): one row, however many instances.
        count = select(instance_counts.c.instances).where(
            instance_counts.c.account_id == bindparam("account_id")
        )
        return _Statements(count, statements.forward, statements.backward)
    return statements


def _statements(where: Sequence[ColumnElement[bool]]) -> _Statements:
    def page(order: Sequence[ColumnElement[Any]]) -> Select[Any]:
        ids = (
            select(instances.c.instance_id)
            .where(*where)
            .order_by(*order)
            .offset(bindparam("page_offset"))
            .limit(bindparam("page_limit"))
            .cte("page")
        )
        counts = (
            select(nodes.c.instance_id, func.count().label("node_count"))
            .where(nodes.c.instance_id.in_(select(ids.c.instance_id)))
            .group_by(nodes.c.instance_id)
            .cte("node_counts")
        )
        return (
            select(*_INSTANCE_ROW, func.coalesce(counts.c.node_count, 0))
            .join(ids, ids.c.instance_id == instances.c.instance_id)
            .outerjoin(counts, counts.c.instance_id == instances.c.instance_id)
            .order_by(*INSTANCE_ORDER)
        )

    return _Statements(
        select(func.count()).select_from(instances).where(*where),
        page(INSTANCE_ORDER),
        page([column.desc() for column in INSTANCE_ORDER]),
    )


def page_instances(
    conn: Connection,
    query: InstanceFilter,
    offset: int,
    limit: int,
    also: ColumnElement[bool] | None = None,
) -> tuple[int, list[tuple[InstanceRow, int]]]:
    """(how many match ``query`` and ``also``, the page of them with each one's node
    count): two statements.

    The page is chosen from the ids alone (from the index that orders them, when the
    conditions allow), read from whichever end of the order is nearer, so the last
    page costs what the first does; the node counts are grouped for its ids only.
    """
    shape = query.shape(conn.dialect.name)
    extra = [] if also is None else [also]
    statements = _statements([*shape.conditions(), *extra]) if extra else _statements_of(shape)
    values = query.values()
    total = int(conn.execute(statements.count, values).scalar() or 0)  # no count row: none
    end = min(offset + limit, total)
    if offset >= end:
        return total, []
    statement, start = statements.forward, offset
    if total - end < offset:  # nearer the end: the same rows, counted from the end
        statement, start = statements.backward, total - end
    rows = conn.execute(statement, {**values, "page_offset": start, "page_limit": end - offset})
    # By position: building each row by name cost 20 us a row.
    return total, [(InstanceRow(*r[:-1]), int(r[-1])) for r in rows]


def instance_ids(
    conn: Connection, query: InstanceFilter, also: ColumnElement[bool] | None = None
) -> list[str]:
    """Every id that matches, in the listing's order (ids only: cheap to hold)."""
    where = query.shape(conn.dialect.name).conditions()
    if also is not None:
        where.append(also)
    statement = select(instances.c.instance_id).where(*where).order_by(*INSTANCE_ORDER)
    return [str(r.instance_id) for r in conn.execute(statement, query.values())]


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


@lru_cache(maxsize=16)
def _accounts_page(dialect: str, exact: bool, search: bool) -> tuple[Any, Any]:
    """(the page with the count of every match beside each row, the count alone),
    built once per shape; the values are parameters."""
    where = [accounts.c.instance_id == bindparam("instance_id")]
    if exact:
        where.append(accounts.c.name == bindparam("exact"))
    if search:
        where.append(contains(accounts.c.name, bindparam("search"), dialect))
    page = (
        select(accounts, func.count().over().label("total"))
        .where(*where)
        .order_by(code_point_order(accounts.c.name, dialect))
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    return page, select(func.count()).select_from(accounts).where(*where)


def page_accounts(
    conn: Connection,
    instance_id: str,
    *,
    exact: str | None,
    search: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[AccountRow]]:
    """(how many match, the page of them) ordered by name in code points: one
    statement (a second only for a page past the last)."""
    page, count = _accounts_page(conn.dialect.name, exact is not None, search is not None)
    values = {
        "instance_id": instance_id,
        "exact": exact,
        "search": search,
        "offset": offset,
        "limit": limit,
    }
    rows = conn.execute(page, values).all()
    if not rows:
        total = int(conn.execute(count, values).scalar_one()) if offset else 0
        return total, []
    columns = [c.name for c in accounts.c]
    found = [AccountRow(**{c: r._mapping[c] for c in columns}) for r in rows]
    return int(rows[0].total), found
