"""Client connections authenticated as one ACL user: list them, close them (issue 15).

A password change never closes a session: Redis checks a password only at
``AUTH``. Closing is ``CLIENT KILL USER <name> TYPE <type>``, which every
engine with ACLs has (6.0 and later), once for ``normal`` and once for
``pubsub`` clients: the two types that are neither a replica's link on its
master (``replica``) nor a replica's link to its master (``master``), so
replication is never cut, even when it logs in as the account (a ``RoleRepl``
account). rkvstore's own connections are the management user's, never the
account's, and ``SKIPME yes`` keeps the connection that sends the command.
Each ``CLIENT KILL`` closes what matches when it runs, in one step: a session
opened between a listing and a kill cannot slip through.

Listing is ``CLIENT LIST TYPE <type>`` for the same two types, filtered on
``user=``. Every node at once, one round trip each, within one deadline
(``exchange_batches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis

from rkvstore.engine.acl import Node, _short, batch_failure, exchange_batches
from rkvstore.engine.node_facts import text

# Never "master" or "replica": those are replication links.
SESSION_TYPES: Final = ("normal", "pubsub")


@dataclass(frozen=True)
class Session:
    """One client connection, as ``CLIENT LIST`` shows it (no secret is in it)."""

    address: str  # the client's ip:port
    age: int  # seconds since it connected
    idle: int  # seconds since its last command
    name: str  # CLIENT SETNAME's, or ""


def parse_client_list(reply: Any, user: str) -> list[Session]:
    """The sessions of ``user`` in one ``CLIENT LIST`` reply.

    A line is ``key=value`` fields separated by spaces; no value holds a space
    (Redis refuses a client name with one).
    """
    out: list[Session] = []
    for line in text(reply).splitlines():
        fields = dict(part.partition("=")[::2] for part in line.split(" ") if part)
        if fields.get("user") != user:
            continue
        out.append(
            Session(
                address=fields.get("addr", ""),
                age=_seconds(fields.get("age", "")),
                idle=_seconds(fields.get("idle", "")),
                name=fields.get("name", ""),
            )
        )
    return out


def _seconds(value: str) -> int:
    """A count of seconds as ``CLIENT LIST`` gives it; 0 for anything else (a registered
    node is the operator's: what it answers is not to be trusted to parse)."""
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return 0
    return int(value)


def list_sessions(nodes: Sequence[Node], user: str) -> dict[str, list[Session] | str]:
    """Every node's sessions of ``user`` at once, or why a node could not say."""
    batch = [["CLIENT", "LIST", "TYPE", kind] for kind in SESSION_TYPES]
    answers = exchange_batches([(node, batch) for node in nodes])
    out: dict[str, list[Session] | str] = {}
    for node in nodes:
        replies = answers[node.label]
        failed = batch_failure(replies)
        if failed is not None or isinstance(replies, str):
            out[node.label] = failed or "failed"
            continue
        out[node.label] = [s for reply in replies for s in parse_client_list(reply, user)]
    return out


def kill_commands(user: str) -> list[list[str]]:
    return [
        ["CLIENT", "KILL", "USER", user, "TYPE", kind, "SKIPME", "yes"] for kind in SESSION_TYPES
    ]


def _killed(reply: Any) -> int | None:
    """How many one ``CLIENT KILL`` closed; ``None``: it failed."""
    if isinstance(reply, int):
        return reply
    # A node that does not have the user (out of line, or the account just
    # deleted) has no session of it either.
    if isinstance(reply, redis.ResponseError) and "No such user" in str(reply):
        return 0
    return None


def kill_sessions(nodes: Sequence[Node], user: str) -> dict[str, int | str]:
    """Close every session of ``user`` on every node at once: how many each node
    closed, or why it could not."""
    batch = kill_commands(user)
    answers = exchange_batches([(node, batch) for node in nodes])
    out: dict[str, int | str] = {}
    for node in nodes:
        replies = answers[node.label]
        if isinstance(replies, str):
            out[node.label] = replies
            continue
        counts = [_killed(r) for r in replies]
        if any(c is None for c in counts):
            bad = next(r for r, c in zip(replies, counts, strict=True) if c is None)
            out[node.label] = _short(bad) if isinstance(bad, Exception) else "unexpected reply"
            continue
        out[node.label] = sum(c for c in counts if c is not None)
    return out
