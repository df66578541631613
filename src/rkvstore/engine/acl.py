"""ACL users on Redis nodes: desired state, one node's session, and the all-or-nothing fan-out.

A change to a user goes to every node at once, each in one round trip
(``ACL LIST`` for the snapshot, ``ACL SETUSER``/``DELUSER``, ``ACL SAVE``,
``ACL LIST`` for what the node now holds). If any node fails, every node that
may have changed is put back from its snapshot and the caller gets
``NodeFailure``; a node that did not answer in time is left to the
reconciler, which brings it back to the database's state when it answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from rkvstore import metrics
from rkvstore.engine import bounded
from rkvstore.faults import crash_point

log = logging.getLogger("rkvstore.engine")

# What a node answers to ACL SAVE without an aclfile, and to CONFIG REWRITE
# without a config file (Redis 6.0 to 7.2, Valkey alike).
NO_ACL_FILE = "ACL file"
NO_CONFIG_FILE = "without a config file"


@dataclass(frozen=True)
class DesiredUser:
    """What one ACL user must be on every node. Only the passwords' SHA-256 are known:
    the current one, and during a secret's grace period the previous one too."""

    name: str
    password_sha256: str
    rules: tuple[str, ...]
    previous_sha256: str | None = None

    def password_hashes(self) -> tuple[str, ...]:
        """Every password the user must hold, current first."""
        if self.previous_sha256 is None or self.previous_sha256 == self.password_sha256:
            return (self.password_sha256,)
        return (self.password_sha256, self.previous_sha256)

    def setuser_command(self) -> list[str]:
        hashes = [f"#{sha}" for sha in self.password_hashes()]
        return ["ACL", "SETUSER", self.name, "reset", "on", *hashes, *self.rules]


@dataclass(frozen=True)
class UserChange:
    """Set ``desired``, or delete the user ``name`` when ``desired`` is None."""

    name: str
    desired: DesiredUser | None

    def command(self) -> list[str]:
        if self.desired is None:
            return ["ACL", "DELUSER", self.name]
        return self.desired.setuser_command()


class NodeFailure(Exception):
    """A node could not be reached or changed; already-changed nodes were put back."""

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed  # node label -> short reason (never a secret)
        super().__init__(", ".join(f"{k}: {v}" for k, v in failed.items()))


def split_acl_line(line: str) -> tuple[str, list[str]]:
    """``user NAME tok tok (selector tokens) …`` -> (NAME, tokens); selectors stay whole."""
    tokens: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in line:
        if ch == " " and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        depth += ch == "("
        depth -= ch == ")"
        current.append(ch)
    if current:
        tokens.append("".join(current))
    if len(tokens) < 2 or tokens[0] != "user":
        raise ValueError("not an ACL LIST line")
    return tokens[1], tokens[2:]


def acl_lines_by_user(lines: Sequence[Any]) -> dict[str, str]:
    """``ACL LIST`` as {user: line}; a user name never holds a space."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else str(raw)
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0] != "user":
            raise ValueError("not an ACL LIST line")
        out[parts[1]] = line
    return out


def restore_command(name: str, line: str | None) -> list[str]:
    if line is None:
        return ["ACL", "DELUSER", name]
    _, tokens = split_acl_line(line)
    return ["ACL", "SETUSER", name, "reset", *tokens]


@dataclass
class NodeResult:
    before: dict[str, str] | None = None  # every user's ACL LIST line before the change
    after: dict[str, str] | None = None
    error: str | None = None
    maybe_applied: bool = False  # the command may have run (sent, answer unknown or ok)


class Node:
    """One Redis node reached as rkvstore's management user."""

    def __init__(self, label: str, client: redis.Redis) -> None:
        self.label = label
        self.client = client

    def list_users(self) -> dict[str, str]:
        return acl_lines_by_user(self.client.execute_command("ACL", "LIST"))

    def persist_after(self, save_error: redis.ResponseError) -> None:
        """``ACL SAVE`` refused: the users go to redis.conf instead, if there is one."""
        if NO_ACL_FILE not in str(save_error):
            raise save_error
        # No aclfile: users live in redis.conf (redis-acl.md, Persistence).
        try:
            self.client.execute_command("CONFIG", "REWRITE")
        except redis.ResponseError as exc:
            # Neither file (a node started with options only, as the official
            # container runs it): the users live in memory until it restarts.
            # Registration recorded that (accounts_in_memory) and the reconciler
            # puts them back after a restart; there is nothing to write here.
            if NO_CONFIG_FILE not in str(exc):
                raise

    def run(self, commands: Sequence[Sequence[str]], timeout: float | None = None) -> NodeResult:
        """Snapshot, run ``commands``, persist, read back: one round trip."""
        with bounded.exchange(timeout or _socket_timeout(self.client)) as deadline:
            sent = self.send(commands)
            if isinstance(sent, NodeResult):
                return sent
            return self.receive(sent, deadline)

    def send(self, commands: Sequence[Sequence[str]]) -> _Sent | NodeResult:
        """Write the whole batch without waiting: every node works while we write to the next."""
        return self.send_batch(
            [["ACL", "LIST"], *map(list, commands), ["ACL", "SAVE"], ["ACL", "LIST"]]
        )

    def send_batch(self, batch: Sequence[Sequence[str]]) -> _Sent | NodeResult:
        """Write ``batch`` as it is, without waiting for the replies."""
        pool = self.client.connection_pool
        connection = None
        try:
            connection = pool.get_connection()
            connection.send_packed_command(connection.pack_commands(batch))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if connection is not None:
                connection.disconnect()
                pool.release(connection)
            # Unknown whether anything arrived: treat it as maybe applied.
            return NodeResult(error=type(exc).__name__, maybe_applied=connection is not None)
        return _Sent(connection, len(batch))

    def receive(self, sent: _Sent, deadline: float) -> NodeResult:
        """Read the batch's replies, giving up at ``deadline`` (then the socket is dropped)."""
        replies = self.receive_replies(sent, deadline)
        if isinstance(replies, NodeResult):
            return replies
        return self._result(replies)

    def receive_replies(self, sent: _Sent, deadline: float) -> list[Any] | NodeResult:
        """The batch's replies (an error reply as its exception), or the failure to read them."""
        pool = self.client.connection_pool
        connection = sent.connection
        replies: list[Any] = []
        try:
            for _ in range(sent.count):
                # Past the deadline a reply that has arrived is still read: a slow
                # node must not hide what the others answered (and so their
                # snapshots, which a roll-back needs).
                remaining = max(0.0, deadline - time.monotonic())
                if not connection.can_read(timeout=remaining):
                    raise redis.TimeoutError("no answer before the deadline")
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()  # never reuse a socket with a reply pending
            pool.release(connection)
            return NodeResult(error=type(exc).__name__, maybe_applied=True)
        pool.release(connection)
        return replies

    def _result(self, replies: list[Any]) -> NodeResult:
        if isinstance(replies[0], Exception):
            # No snapshot (BUSY, NOPERM, …): the change may still have run after
            # it, and without a snapshot it cannot be put back here; the
            # reconciler will.
            errors = [r for r in replies[1:-2] if isinstance(r, Exception)]
            return NodeResult(error=_short(replies[0]), maybe_applied=not errors)
        result = NodeResult(maybe_applied=True)
        result.before = acl_lines_by_user(replies[0])
        errors = [r for r in replies[1:-2] if isinstance(r, Exception)]
        if errors:
            result.error = _short(errors[0])
            result.maybe_applied = False  # one ACL SETUSER is atomic: a failed one changed nothing
        save = replies[-2]
        if isinstance(save, redis.ResponseError):
            try:
                self.persist_after(save)
            except redis.RedisError as exc:
                result.error = result.error or _short(exc)
        elif isinstance(save, Exception):
            result.error = result.error or _short(save)
        after = replies[-1]
        if not isinstance(after, Exception):
            result.after = acl_lines_by_user(after)
        return result


@dataclass(frozen=True)
class _Sent:
    connection: Any  # redis.connection.Connection, holding the replies to read
    count: int


def _socket_timeout(client: redis.Redis) -> float:
    value = client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(value) if value else 5.0


def _timeout_of(nodes: Sequence[Node]) -> float:
    return max((_socket_timeout(node.client) for node in nodes), default=0.0)


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {text[:120]}"


def batch_failure(replies: list[Any] | str) -> str | None:
    """Why a node's batch (an ``exchange_batches`` answer) did not wholly succeed: no
    answer, or its first error reply; ``None``: every command took."""
    if isinstance(replies, str):
        return replies
    failed = next((r for r in replies if isinstance(r, Exception)), None)
    return None if failed is None else _short(failed)


def exchange_batches(
    batches: Sequence[tuple[Node, Sequence[Sequence[str]]]],
) -> dict[str, list[Any] | str]:
    """Every node its batch at once, one deadline for all; each node's replies (an
    error reply as its exception), or why there are none."""
    out: dict[str, list[Any] | str] = {}
    with bounded.exchange(_timeout_of([node for node, _ in batches])) as deadline:
        sent = [(node, node.send_batch(batch)) for node, batch in batches]
        for node, pending in sent:
            if isinstance(pending, NodeResult):
                out[node.label] = pending.error or "failed"
                continue
            try:
                replies = node.receive_replies(pending, deadline)
            except Exception as exc:  # an odd reply must not stop the other nodes' reads
                pending.connection.disconnect()
                node.client.connection_pool.release(pending.connection)
                out[node.label] = _short(exc)
                continue
            if isinstance(replies, NodeResult):
                out[node.label] = replies.error or "failed"
            else:
                out[node.label] = replies
    return out


class FanOut:
    """Apply changes to every node concurrently; all or nothing."""

    def __init__(self, max_workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fanout")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(
        self, nodes: Sequence[Node], commands: Sequence[Sequence[str]]
    ) -> dict[str, NodeResult]:
        """The same ``commands`` on every node at once."""
        return self.run_each([(node, commands) for node in nodes], fault="fanout-first-node")

    def run_each(
        self,
        batches: Sequence[tuple[Node, Sequence[Sequence[str]]]],
        *,
        fault: str | None = None,
    ) -> dict[str, NodeResult]:
        """Every node its batch, from this thread: write every batch, then read every reply.

        The nodes work in parallel while the replies are read one node after
        another, all against one deadline (the slowest node's, not their sum).
        ``fault``: the crash point (faults.py) a change passes once the first
        node has answered; a reconciler pass or a roll-back names none.
        """
        with bounded.exchange(_timeout_of([node for node, _ in batches])) as deadline:
            return self._send_then_read(batches, deadline, fault)

    def _send_then_read(
        self,
        batches: Sequence[tuple[Node, Sequence[Sequence[str]]]],
        deadline: float,
        fault: str | None,
    ) -> dict[str, NodeResult]:
        sent = [(node, node.send(commands)) for node, commands in batches]
        results: dict[str, NodeResult] = {}
        for node, pending in sent:
            if isinstance(pending, NodeResult):
                results[node.label] = pending
                continue
            try:
                results[node.label] = node.receive(pending, deadline)
            except Exception as exc:  # an odd reply must not stop the other nodes' reads
                pending.connection.disconnect()
                node.client.connection_pool.release(pending.connection)
                results[node.label] = NodeResult(error=_short(exc), maybe_applied=True)
            if len(results) == 1 and fault is not None:
                crash_point(fault)
        return results

    def read_users(self, nodes: Sequence[Node]) -> dict[str, dict[str, str] | str]:
        """Every node's users (``ACL LIST``) at once, or why a node could not say."""
        return self.read_users_and(nodes, ())[0]

    def read_users_and(
        self, nodes: Sequence[Node], extra: Sequence[Sequence[str]]
    ) -> tuple[dict[str, dict[str, str] | str], dict[str, list[Any]]]:
        """``read_users``, and the replies to ``extra`` commands sent in the same
        round trip (by node, in the nodes' order; an error reply as its
        exception; none from a node that could not say)."""
        out: dict[str, dict[str, str] | str] = {}
        more: dict[str, list[Any]] = {}
        batch = [["ACL", "LIST"], *map(list, extra)]
        answers = exchange_batches([(node, batch) for node in nodes])
        for label, replies in answers.items():
            if isinstance(replies, str):
                out[label] = replies
            elif isinstance(replies[0], Exception):
                out[label] = _short(replies[0])
            else:
                more[label] = replies[1:]
                try:
                    out[label] = acl_lines_by_user(replies[0])
                except ValueError as exc:
                    out[label] = _short(exc)
        return out, more

    def run_all_or_nothing(
        self,
        nodes: Sequence[Node],
        commands: Sequence[Sequence[str]],
        undo: Sequence[Sequence[str]],
    ) -> dict[str, NodeResult]:
        """``commands`` on every node, or ``undo`` on those that may have run them."""
        results = self.run(nodes, commands)
        failed = {label: r.error for label, r in results.items() if r.error is not None}
        if not failed:
            return results
        undone = [n for n in nodes if results[n.label].maybe_applied and results[n.label].before]
        with bounded.exchange(_timeout_of(undone), fresh=True):  # its own budget
            undo_results = self.run(undone, undo)
        for label, outcome in undo_results.items():
            if outcome.error:
                log.error(
                    "undoing on node %s failed (%s); the reconciler repairs it",
                    label,
                    outcome.error,
                )
        metrics.count_node_failure(o.error for o in undo_results.values())
        raise NodeFailure({k: v or "failed" for k, v in failed.items()})

    def apply(self, nodes: Sequence[Node], changes: Sequence[UserChange]) -> dict[str, NodeResult]:
        """Every node gets ``changes``, or none keeps them (``NodeFailure``)."""
        commands = [change.command() for change in changes]
        results = self.run(nodes, commands)
        failed = {label: r.error for label, r in results.items() if r.error is not None}
        if not failed:
            return results
        self._roll_back(nodes, results, [c.name for c in changes])
        raise NodeFailure({k: v or "failed" for k, v in failed.items()})

    def _roll_back(
        self, nodes: Sequence[Node], results: dict[str, NodeResult], names: Sequence[str]
    ) -> None:
        batches = []
        for node in nodes:
            result = results[node.label]
            if result.before is not None and result.maybe_applied:
                batches.append(
                    (node, [restore_command(name, result.before.get(name)) for name in names])
                )
        with bounded.exchange(_timeout_of([node for node, _ in batches]), fresh=True):
            rolled = self.run_each(batches)  # its own budget, not the failed change's
        for label, outcome in rolled.items():
            if outcome.error:
                log.error(
                    "rolling back node %s failed (%s); the reconciler will repair it",
                    label,
                    outcome.error,
                )
        metrics.count_node_failure(o.error for o in rolled.values())
