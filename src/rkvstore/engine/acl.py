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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger("rkvstore.engine")


@dataclass(frozen=True)
class DesiredUser:
    """What one ACL user must be on every node. Only the password's SHA-256 is known."""

    name: str
    password_sha256: str
    rules: tuple[str, ...]

    def setuser_command(self) -> list[str]:
        return ["ACL", "SETUSER", self.name, "reset", "on", f"#{self.password_sha256}", *self.rules]


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
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else str(raw)
        name, _ = split_acl_line(line)
        out[name] = line
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

    def persist(self) -> None:
        try:
            self.client.execute_command("ACL", "SAVE")
        except redis.ResponseError as exc:
            if "ACL file" not in str(exc):
                raise
            # No aclfile: users live in redis.conf (redis-acl.md, Persistence).
            self.client.execute_command("CONFIG", "REWRITE")

    def run(self, commands: Sequence[Sequence[str]]) -> NodeResult:
        """Snapshot, run ``commands``, persist, read back: one round trip."""
        result = NodeResult()
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("ACL", "LIST")
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute_command("ACL", "SAVE")
        pipe.execute_command("ACL", "LIST")
        try:
            result.maybe_applied = True
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            result.error = type(exc).__name__
            self.client.connection_pool.disconnect()  # never reuse a socket with a reply pending
            return result
        result.before = acl_lines_by_user(replies[0])
        errors = [r for r in replies[1:-2] if isinstance(r, Exception)]
        if errors:
            result.error = _short(errors[0])
            result.maybe_applied = False  # one ACL SETUSER is atomic: a failed one changed nothing
        save = replies[-2]
        if isinstance(save, redis.ResponseError):
            try:
                self.persist()
            except redis.RedisError as exc:
                result.error = result.error or _short(exc)
        elif isinstance(save, Exception):
            result.error = result.error or _short(save)
        after = replies[-1]
        if not isinstance(after, Exception):
            result.after = acl_lines_by_user(after)
        return result


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n")[0]
    return f"{type(exc).__name__}: {text[:120]}"


class FanOut:
    """Apply changes to every node concurrently; all or nothing."""

    def __init__(self, max_workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fanout")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(
        self, nodes: Sequence[Node], commands: Sequence[Sequence[str]]
    ) -> dict[str, NodeResult]:
        """Every node at once: the others on the pool, the first on this thread."""
        if not nodes:
            return {}
        first, *others = nodes
        futures = {node.label: self._pool.submit(node.run, commands) for node in others}
        results = {first.label: first.run(commands)}
        results.update({label: future.result() for label, future in futures.items()})
        return results

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
        to_restore = [
            node
            for node in nodes
            if results[node.label].before is not None and results[node.label].maybe_applied
        ]

        def restore(node: Node) -> NodeResult:
            before = results[node.label].before or {}
            return node.run([restore_command(name, before.get(name)) for name in names])

        futures = {node.label: self._pool.submit(restore, node) for node in to_restore}
        for label, future in futures.items():
            outcome = future.result()
            if outcome.error:
                log.error(
                    "rolling back node %s failed (%s); the reconciler will repair it",
                    label,
                    outcome.error,
                )
