"""Which of a tenant's resources a RAM user may see, as one SQL condition on their ids.

A listing filtered by permission (DescribeInstances) shows exactly the resources for
which ``policy.evaluate`` allows the action. The action and the request's context are
the same for every resource, so the statements that apply become ``ResourceRule``s
(``policy.resource_rules``) and only resource patterns are left. Every ARN of the
listing is one ``prefix`` followed by an id, so each pattern becomes the patterns its
id must match once the prefix is consumed (``remainders``), and those become SQL:
equality, or a case-sensitive wildcard match (SQLite ``GLOB``; PostgreSQL ``LIKE``)
with the other wildcard language's special characters escaped.

``id_condition`` answers ``None`` when it cannot promise the same answer (a pattern
SQL cannot carry, or too many of them, or another database): the caller then
evaluates the ARNs of the ids one by one, which is always right.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, not_, or_

from rkvstore.iam.attached_policies import documents_for_user
from rkvstore.iam.credentials import AccessKey
from rkvstore.iam.policy import Policy, ResourceRule, parse_policy, resource_rules

# Beyond this many wildcard patterns, or ids compared exactly, the condition is left
# to Python: a statement that long is not worth sending (and has a bound on its
# parameters on either database).
MAX_PATTERNS = 100
MAX_IDS = 1000

# True: every id; False: none; else a clause.
Condition = bool | ColumnElement[bool]
_Clause = Condition


class _TooComplex(Exception):
    """A pattern the SQL condition cannot carry exactly."""


def caller_rules(
    conn: Connection, caller: AccessKey, action: str, context: Mapping[str, Any]
) -> tuple[ResourceRule, ...]:
    """The statements of a RAM user's policies (its own and its groups') that apply to
    ``action`` in this request."""
    assert caller.user_name is not None, "the root is allowed everything in its tenant"
    documents = documents_for_user(conn, caller.account_id, caller.user_name)
    return resource_rules([_parsed(d) for d in documents], action, context)


@lru_cache(maxsize=4096)
def _parsed(document: str) -> Policy:
    # Documents were validated when stored, so this cannot fail here.
    return parse_policy(document)


@lru_cache(maxsize=4096)  # a tenant's users list with a few patterns, over and over
def remainders(pattern: str, prefix: str) -> frozenset[str]:
    """The patterns ``r`` such that ``pattern`` matches ``prefix + s`` iff some ``r``
    matches ``s`` (``*`` any run, ``?`` one character, as ``policy.wildcard_match``).

    The pattern runs as an automaton over ``prefix``: the positions it can be at
    afterwards are where the rest of the text must match from.
    """
    states = _closure(pattern, {0})
    for char in prefix:
        moved = set()
        for p in states:
            if p < len(pattern):
                if pattern[p] == "*":
                    moved.add(p)
                elif pattern[p] == "?" or pattern[p] == char:
                    moved.add(p + 1)
        if not moved:
            return frozenset()
        states = _closure(pattern, moved)
    # A position just after a "*" the automaton is also at adds nothing: the "*"
    # matches the empty run too.
    return frozenset(
        pattern[p:] for p in states if not (p > 0 and pattern[p - 1] == "*" and p - 1 in states)
    )


def _closure(pattern: str, states: Iterable[int]) -> set[int]:
    out = set()
    for p in states:
        out.add(p)
        while p < len(pattern) and pattern[p] == "*":
            p += 1
            out.add(p)
    return out


def id_condition(
    rules: Sequence[ResourceRule], prefix: str, column: ColumnElement[Any], dialect: str
) -> Condition | None:
    """The SQL condition on ``column`` (the id) under which ``decide_resource(rules,
    prefix + id)`` is ``Allow``: True (every id), False (none), or a clause; ``None``:
    not expressible, evaluate the ids instead."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    budget = _Budget()

    def matched(effect: str) -> _Clause:
        return _any(_rule(r, prefix, column, dialect, budget) for r in rules if r.effect == effect)

    try:
        allow, deny = matched("Allow"), matched("Deny")
    except _TooComplex:
        return None
    return _both(allow, _negate(deny))


class _Budget:
    """What one condition may hold: wildcard matches, and ids compared with ``IN``."""

    def __init__(self) -> None:
        self.patterns = MAX_PATTERNS
        self.ids = MAX_IDS

    def spend(self, patterns: int, ids: int) -> None:
        self.patterns -= patterns
        self.ids -= ids
        if self.patterns < 0 or self.ids < 0:
            raise _TooComplex()


def _rule(
    rule: ResourceRule, prefix: str, column: ColumnElement[Any], dialect: str, budget: _Budget
) -> _Clause:
    rests: set[str] = set()
    for pattern in rule.resources or rule.not_resources:
        rests |= remainders(pattern, prefix)
    if any(rest and set(rest) == {"*"} for rest in rests):
        matched: _Clause = True
    else:
        if any("\x00" in rest or not _encodable(rest) for rest in rests):
            raise _TooComplex()  # PostgreSQL text cannot hold it; SQLite's GLOB stops at it
        exact = sorted(r for r in rests if "*" not in r and "?" not in r)
        wild = sorted(rests.difference(exact))
        budget.spend(len(wild), len(exact))
        clauses: list[_Clause] = [_wildcard(column, rest, dialect) for rest in wild]
        if exact:
            clauses.append(column == exact[0] if len(exact) == 1 else column.in_(exact))
        matched = _any(clauses)
    return matched if rule.resources else _negate(matched)


def _wildcard(column: ColumnElement[Any], pattern: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        # GLOB is case-sensitive and has the same "*" and "?"; only "[" opens a class.
        return column.op("GLOB", is_comparison=True)(pattern.replace("[", "[[]"))
    # PostgreSQL's LIKE is case-sensitive; "%", "_" and the escape are literal here.
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        return False
    return True


# Constant folding, so that the common policies ("*", one prefix) give short SQL.


def _any(clauses: Iterable[_Clause]) -> _Clause:
    kept: list[ColumnElement[bool]] = []
    for clause in clauses:
        if clause is True:
            return True
        if clause is not False:
            assert not isinstance(clause, bool)
            kept.append(clause)
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else or_(*kept)


def _both(left: _Clause, right: _Clause) -> _Clause:
    if left is False or right is False:
        return False
    if left is True:
        return right
    if right is True:
        return left
    return and_(left, right)


def _negate(clause: _Clause) -> _Clause:
    if isinstance(clause, bool):
        return not clause
    return not_(clause)
