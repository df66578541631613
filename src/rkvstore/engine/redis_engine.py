"""The engine's face to the services: reach an instance's nodes, change them, bring them in line."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.domain.privileges import acl_rules, management_rules
from rkvstore.engine.acl import DesiredUser, FanOut, Node, NodeResult, UserChange
from rkvstore.engine.legacy import LegacyNodes
from rkvstore.secret import Secret

log = logging.getLogger("rkvstore.engine")
_RENDERED_MAX = 100_000


@dataclass(frozen=True)
class NodeAddress:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def desired_user(
    name: str, password_sha256: str, privilege: str, engine_version: str
) -> DesiredUser:
    return DesiredUser(name, password_sha256, tuple(acl_rules(privilege, engine_version)))


def management_user(password: Secret) -> DesiredUser:
    return DesiredUser(MANAGEMENT_USER, password.sha256_hex(), tuple(management_rules()))


@dataclass
class ReconcileReport:
    repaired: dict[str, list[str]] = field(default_factory=dict)  # node -> user names
    unreachable: dict[str, str] = field(default_factory=dict)  # node -> reason

    @property
    def in_line(self) -> bool:
        return not self.unreachable


class RedisEngine:
    def __init__(self, *, node_timeout: float = 2.0, max_workers: int = 32) -> None:
        self.node_timeout = node_timeout
        self.fanout = FanOut(max_workers)
        self._clients: dict[tuple[str, int, str], redis.Redis] = {}
        self._lock = threading.Lock()
        # (node label, desired user) -> the ACL LIST line that node showed after
        # applying it: what "in line" looks like there (Redis renders rules its own way).
        self._rendered: dict[tuple[str, DesiredUser], str] = {}
        self.repairs_total = 0
        self.legacy = LegacyNodes(self.fanout._pool, node_timeout)

    def close(self) -> None:
        self.fanout.shutdown()
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # ------------------------------------------------------------------ connections

    def node(self, address: NodeAddress, password: Secret, user: str = MANAGEMENT_USER) -> Node:
        key = (address.host, address.port, user)
        with self._lock:
            client = self._clients.get(key)
            if (
                client is None
                or client.connection_pool.connection_kwargs.get("password") != password.reveal()
            ):
                if client is not None:  # the password changed (a rotation): drop the old sockets
                    client.close()
                client = redis.Redis(
                    host=address.host,
                    port=address.port,
                    username=user,
                    password=password.reveal(),
                    socket_timeout=self.node_timeout,
                    socket_connect_timeout=self.node_timeout,
                    retry=Retry(NoBackoff(), 0),
                    decode_responses=False,
                )
                self._clients[key] = client
        return Node(address.label, client)

    def nodes(self, addresses: Sequence[NodeAddress], password: Secret) -> list[Node]:
        return [self.node(a, password) for a in addresses]

    # ------------------------------------------------------------------ changes

    def apply(self, nodes: Sequence[Node], changes: Sequence[UserChange]) -> None:
        """All nodes get ``changes`` or none keeps them (raises ``NodeFailure``)."""
        results = self.fanout.apply(nodes, changes)
        self._learn(results, [c.desired for c in changes if c.desired is not None])

    def run_all_or_nothing(
        self,
        nodes: Sequence[Node],
        commands: Sequence[Sequence[str]],
        undo: Sequence[Sequence[str]],
    ) -> None:
        self.fanout.run_all_or_nothing(nodes, commands, undo)

    def _learn(self, results: dict[str, NodeResult], desired: Sequence[DesiredUser]) -> None:
        for label, result in results.items():
            if result.after is None:
                continue
            for user in desired:
                line = result.after.get(user.name)
                if line is not None:
                    if len(self._rendered) > _RENDERED_MAX:  # one entry per password ever set
                        self._rendered.clear()  # re-learnt on the next pass, at one re-apply each
                    self._rendered[(label, user)] = line

    # ------------------------------------------------------------------ reconciliation

    def reconcile(
        self, nodes: Sequence[Node], desired: Sequence[DesiredUser], *, strict: bool
    ) -> ReconcileReport:
        """Bring every reachable node to ``desired``; ``strict`` also removes unknown users."""
        report = ReconcileReport()
        try:
            futures = {
                n.label: self.fanout._pool.submit(self._reconcile_node, n, desired, strict)
                for n in nodes
            }
        except RuntimeError:  # the pool is shut down: no node is reached
            report.unreachable.update({n.label: "RuntimeError" for n in nodes})
            return report
        for label, future in futures.items():
            try:
                repaired = future.result()
            except (redis.RedisError, OSError, ValueError, CancelledError) as exc:
                report.unreachable[label] = type(exc).__name__
                continue
            if repaired:
                self._repaired(report, label, repaired)
        return report

    def reconcile_legacy(
        self,
        addresses: Sequence[NodeAddress],
        current: Secret,
        pending: Sequence[Secret],
        account: str,
    ) -> ReconcileReport:
        """Redis before 6.0: every reachable node's ``requirepass`` to ``current``."""
        report = ReconcileReport()
        by_address = {(a.host, a.port): a for a in addresses}
        for key, outcome in self.legacy.reconcile(list(by_address), current, pending).items():
            label = by_address[key].label
            if outcome.error is not None:
                report.unreachable[label] = outcome.error.split(":")[0]
            elif outcome.repaired:
                self._repaired(report, label, [account])
        return report

    def _repaired(self, report: ReconcileReport, label: str, names: list[str]) -> None:
        report.repaired[label] = names
        with self._lock:  # passes over several instances run at once
            self.repairs_total += len(names)
            total = self.repairs_total
        log.warning(
            "repaired drift on node %s: users %s (repairs since start: %d)",
            label,
            ", ".join(names),
            total,
        )

    def _reconcile_node(
        self, node: Node, desired: Sequence[DesiredUser], strict: bool
    ) -> list[str]:
        try:
            users = node.list_users()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            node.client.connection_pool.disconnect()
            raise
        commands: list[list[str]] = []
        names: list[str] = []
        for user in desired:
            actual = users.get(user.name)
            if actual is None or actual != self._rendered.get((node.label, user)):
                commands.append(user.setuser_command())
                names.append(user.name)
        wanted = {u.name for u in desired}
        if strict:
            for name in users:
                if name not in wanted:
                    commands.append(["ACL", "DELUSER", name])
                    names.append(name)
        if not commands:
            return []
        result = node.run(commands)
        if result.error is not None:
            raise redis.ConnectionError(result.error)
        self._learn({node.label: result}, desired)
        before, after = result.before or {}, result.after or {}
        return [name for name in names if before.get(name) != after.get(name)]
