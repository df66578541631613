"""Redis Cluster: forming one from fresh nodes, and reading one's shape from any node."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

SLOTS = 16384


@dataclass(frozen=True)
class Member:
    """A node to join: a master serves its shard's slots; a replica follows that master."""

    host: str
    port: int
    role: str  # master | replica
    shard: int


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    host: str
    port: int
    role: str  # master | replica
    master_id: str | None
    slots: tuple[tuple[int, int], ...]
    failed: bool


class ClusterFormationError(Exception):
    """The nodes did not become one healthy cluster in time."""


def slot_ranges(count: int) -> list[tuple[int, int]]:
    """``count`` contiguous ranges covering every slot, as even as can be."""
    bounds = [round(i * SLOTS / count) for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """``CLUSTER NODES`` output, one ``ClusterNode`` a line (nodes without address skipped)."""
    found: list[ClusterNode] = []
    for line in text.strip().splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, master = fields[0], fields[1], fields[2].split(","), fields[3]
        if "noaddr" in flags or "handshake" in flags:
            continue
        host_port = address.split("@", 1)[0]
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            continue
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated
                continue
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        found.append(
            ClusterNode(
                node_id=node_id,
                host=host,
                port=int(port),
                role="master" if "master" in flags else "replica",
                master_id=None if master == "-" else master,
                slots=tuple(slots),
                failed="fail" in flags,
            )
        )
    return found


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _wait(what: str, check: Callable[[], bool], deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.1)
    raise ClusterFormationError(f"{what}: not within the time allowed ({last!r})")


def form_cluster(
    members: Sequence[Member],
    connect: Callable[[Member], redis.Redis],
    *,
    timeout: float = 60.0,
) -> None:
    """Join fresh cluster-enabled nodes into one cluster with every slot served.

    CLUSTER MEET from every node to the first, slots split evenly over the
    masters (ordered by shard), every replica CLUSTER REPLICATE to its
    shard's master, then wait for ``cluster_state:ok`` everywhere and every
    replica's link to be up.
    """
    deadline = time.monotonic() + timeout
    clients = {m: connect(m) for m in members}
    try:
        first = members[0]
        for member in members[1:]:
            clients[member].execute_command("CLUSTER", "MEET", first.host, str(first.port))

        def everyone_met() -> bool:
            return all(
                len(parse_cluster_nodes(_text(c.execute_command("CLUSTER", "NODES"))))
                == len(members)
                for c in clients.values()
            )

        _wait("CLUSTER MEET", everyone_met, deadline)
        masters = sorted((m for m in members if m.role == "master"), key=lambda m: m.shard)
        for member, (start, end) in zip(masters, slot_ranges(len(masters)), strict=True):
            clients[member].execute_command("CLUSTER", "ADDSLOTS", *range(start, end + 1))
        ids = {m.shard: _text(clients[m].execute_command("CLUSTER", "MYID")) for m in masters}
        for member in members:
            if member.role != "replica":
                continue
            client, master_id = clients[member], ids[member.shard]

            def replicated(client: redis.Redis = client, master_id: str = master_id) -> bool:
                client.execute_command("CLUSTER", "REPLICATE", master_id)
                return True

            _wait(f"CLUSTER REPLICATE on {member.port}", replicated, deadline)

        def healthy() -> bool:
            for member, client in clients.items():
                info = _text(client.execute_command("CLUSTER", "INFO"))
                if "cluster_state:ok" not in info:
                    return False
                if member.role == "replica":
                    replication = client.info("replication")
                    if replication.get("master_link_status") != "up":
                        return False
            return True

        _wait("cluster_state:ok", healthy, deadline)
    finally:
        for client in clients.values():
            client.close()


def cluster_topology(client: redis.Redis) -> list[ClusterNode]:
    return parse_cluster_nodes(_text(client.execute_command("CLUSTER", "NODES")))
