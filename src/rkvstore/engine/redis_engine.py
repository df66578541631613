"""The engine's face to the services: reach an instance's nodes, change them, bring them in line."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from rkvstore import metrics
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.domain.privileges import acl_rules, management_rules
from rkvstore.engine import bounded
from rkvstore.engine.acl import DesiredUser, FanOut, Node, NodeResult, UserChange
from rkvstore.engine.legacy import LegacyNodes
from rkvstore.engine.node_tls import NodeTls
from rkvstore.secret import Secret

log = logging.getLogger("rkvstore.engine")
T = TypeVar("T")
# Distinct (rules, rendering) pairs: privileges x engine families x Redis
# releases, a handful. A bound all the same, against anything unforeseen.
_RENDERED_MAX = 10_000


@dataclass(frozen=True)
class NodeAddress:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def desired_user(
    name: str,
    password_sha256: str,
    privilege: str,
    engine_version: str,
    previous_sha256: str | None = None,
) -> DesiredUser:
    return DesiredUser(name, password_sha256, _rules(privilege, engine_version), previous_sha256)


@functools.lru_cache(maxsize=64)
def _rules(privilege: str, engine_version: str) -> tuple[str, ...]:
    """The same few rule lists for every account: built once (and shared) each."""
    return tuple(acl_rules(privilege, engine_version))


def rendering(line: str, user: DesiredUser) -> str | None:
    """How a node shows ``user``'s rules and flags: its ``ACL LIST`` line without
    the name and the passwords, or ``None`` if the passwords are not exactly the
    user's (the current one, and the previous one while it is kept; in any order).

    A password added by hand, or a previous one missing, makes the line out of
    line, so the reconciler puts back exactly the passwords the database lists.
    Redis renders rules its own way (and each release a little differently),
    but the same rules always the same way: what a node showed once after
    ``ACL SETUSER … reset on #<hash> <rules>`` is what "in line" looks like for
    those rules on every node of that release, for every user and password.
    """
    prefix = "user " + user.name + " "
    if not line.startswith(prefix):
        return None
    # Padded, so that every token is " token ": a password is the one token
    # that starts with "#" (rules start with ~ % & + - or a parenthesis).
    rest = " " + line[len(prefix) :] + " "
    hashes = user.password_hashes()
    if rest.count(" #") != len(hashes) or " nopass " in rest:
        return None
    for sha in hashes:
        password = " #" + sha + " "
        if password not in rest:
            return None
        rest = rest.replace(password, " ", 1)
    return rest.strip()


def management_user(password: Secret) -> DesiredUser:
    return DesiredUser(MANAGEMENT_USER, password.sha256_hex(), tuple(management_rules()))


@dataclass(frozen=True)
class Wanted:
    """One instance's part of a batch: its nodes and what they must hold."""

    nodes: Sequence[Node]
    desired: Sequence[DesiredUser]
    strict: bool
    remove: Sequence[str] = ()


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
        # (rules, rendering) seen on a node right after those rules were set:
        # what "in line" looks like (see ``rendering``). Neither per node nor
        # per user nor per password, so a handful of entries serve a fleet of
        # any size, and a process that just started re-applies each list of
        # rules once, not every user on every node.
        self._rendered: set[tuple[tuple[str, ...], str]] = set()
        self.repairs_total = 0
        self.legacy = LegacyNodes(self.fanout._pool, node_timeout)
        # Each instance's sealed settings (TLS, Sentinels) by their token: one
        # NodeTls (and one SSL context) per instance, so its pooled clients are kept.
        self._sealed: dict[str, object] = {}

    def sealed_settings(
        self, token: str, open_token: Callable[[str], Secret], parse: Callable[[str], T]
    ) -> T:
        """The settings sealed in ``token``, opened and parsed the first time only."""
        with self._lock:
            found = self._sealed.get(token)
        if found is None:
            found = parse(open_token(token).reveal())
            with self._lock:
                if len(self._sealed) > _RENDERED_MAX:
                    self._sealed.clear()
                found = self._sealed.setdefault(token, found)
        return found  # type: ignore[return-value]  # one token, one kind of settings

    def close(self) -> None:
        self.fanout.shutdown()
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # ------------------------------------------------------------------ connections

    def node(
        self,
        address: NodeAddress,
        password: Secret,
        user: str = MANAGEMENT_USER,
        tls: NodeTls | None = None,
    ) -> Node:
        """The pooled client of ``address`` logged in as ``user`` (over TLS with ``tls``);
        a new one when the password or the TLS settings changed."""
        key = (address.host, address.port, user)
        with self._lock:
            client = self._clients.get(key)
            kwargs = None if client is None else client.connection_pool.connection_kwargs
            if (
                client is None
                or kwargs is None
                or kwargs.get("password") != password.reveal()
                or kwargs.get("tls") is not tls
            ):
                if client is not None:  # the password changed (a rotation): drop the old sockets
                    client.close()
                client = bounded.client(
                    address.host,
                    address.port,
                    username=user,
                    password=password.reveal(),
                    timeout=self.node_timeout,
                    tls=tls,
                )
                self._clients[key] = client
        return Node(address.label, client)

    def nodes(
        self, addresses: Sequence[NodeAddress], password: Secret, tls: NodeTls | None = None
    ) -> list[Node]:
        return [self.node(a, password, tls=tls) for a in addresses]

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
        for result in results.values():
            if result.after is None:
                continue
            for user in desired:
                line = result.after.get(user.name)
                shown = None if line is None else rendering(line, user)
                if shown is not None and (user.rules, shown) not in self._rendered:
                    with self._lock:
                        if len(self._rendered) > _RENDERED_MAX:
                            self._rendered.clear()  # re-learnt, at one re-apply each
                        self._rendered.add((user.rules, shown))

    # ------------------------------------------------------------------ reconciliation

    def reconcile(
        self,
        nodes: Sequence[Node],
        desired: Sequence[DesiredUser],
        *,
        strict: bool,
        remove: Sequence[str] = (),
        listed: dict[str, dict[str, str] | str] | None = None,
    ) -> ReconcileReport:
        """Bring every reachable node to ``desired``; ``strict`` also removes unknown users,
        and ``remove`` names users to take off in any case (unless desired).
        ``listed``: every node's users as just read (``read_users``), not read again."""
        return self.reconcile_many([Wanted(nodes, desired, strict, remove)], listed)[0]

    def read_users(
        self, nodes: Sequence[Node], extra: Sequence[Sequence[str]] = ()
    ) -> tuple[dict[str, dict[str, str] | str], dict[str, list[Any]]]:
        """Every node's users, and its replies to ``extra``: one round trip per node."""
        return self.fanout.read_users_and(nodes, extra)

    def reconcile_many(
        self,
        instances: Sequence[Wanted],
        listed: dict[str, dict[str, str] | str] | None = None,
    ) -> list[ReconcileReport]:
        """``reconcile`` for several instances at once, one report each.

        From the calling thread, every node of every instance at once: each
        node's users in one exchange (unless ``listed`` holds them already),
        then the repairs where needed in a second (each bounded by the node
        timeout), so a batch never takes a worker from another's, and costs
        two round trips however many instances it holds.
        """
        reports = [ReconcileReport() for _ in instances]
        everyone = [node for wanted in instances for node in wanted.nodes]
        if listed is None:
            listed = self.fanout.read_users(everyone) if everyone else {}
        batches: list[tuple[Node, Sequence[Sequence[str]]]] = []
        owner: dict[str, tuple[int, list[str]]] = {}
        for index, wanted in enumerate(instances):
            report = reports[index]
            for node in wanted.nodes:
                users = listed[node.label]
                if isinstance(users, str):
                    node.client.connection_pool.disconnect()
                    report.unreachable[node.label] = users.split(":")[0]
                    continue
                commands, repairing = self._repairs(
                    users, wanted.desired, wanted.strict, wanted.remove
                )
                if commands:
                    batches.append((node, commands))
                    owner[node.label] = (index, repairing)
        if not batches:
            return reports
        results = self.fanout.run_each(batches)
        for node, _commands in batches:
            index, names = owner[node.label]
            report, result = reports[index], results[node.label]
            if result.error is not None:
                report.unreachable[node.label] = result.error.split(":")[0]
                continue
            self._learn({node.label: result}, instances[index].desired)
            before, after = result.before or {}, result.after or {}
            repaired = [n for n in names if before.get(n) != after.get(n)]
            if repaired:
                self._repaired(report, node.label, repaired)
        return reports

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
        metrics.RECONCILE_REPAIRS.inc(len(names))
        with self._lock:  # passes over several instances run at once
            self.repairs_total += len(names)
            total = self.repairs_total
        log.warning(
            "repaired drift on node %s: users %s (repairs since start: %d)",
            label,
            ", ".join(names),
            total,
        )

    def _repairs(
        self,
        users: dict[str, str],
        desired: Sequence[DesiredUser],
        strict: bool,
        remove: Sequence[str] = (),
    ) -> tuple[list[list[str]], list[str]]:
        """The commands that bring one node's ``users`` to ``desired``, and the users they touch."""
        commands: list[list[str]] = []
        names: list[str] = []
        known = self._rendered
        for user in desired:
            actual = users.get(user.name)
            shown = None if actual is None else rendering(actual, user)
            if shown is None or (user.rules, shown) not in known:
                commands.append(user.setuser_command())
                names.append(user.name)
        wanted = {u.name for u in desired}
        unwanted = set(users) if strict else set(remove) & set(users)
        for name in sorted(unwanted - wanted):
            commands.append(["ACL", "DELUSER", name])
            names.append(name)
        return commands, names
