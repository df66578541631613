"""Finding a deployment's nodes from any one of them, through INFO replication."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from rkvstore.engine import bounded
from rkvstore.engine.addresses import IpNetwork, OutsideNetworks, allowed_address, normalize_host
from rkvstore.engine.cluster import ClusterNode, cluster_topology, parse_cluster_nodes
from rkvstore.engine.node_tls import NodeTls, tls_reason
from rkvstore.secret import Secret


@dataclass(frozen=True)
class FoundNode:
    host: str  # normalised (engine/addresses.py): one spelling per address
    port: int
    role: str  # master | replica
    shard: int
    master: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", normalize_host(self.host))
        if self.master is not None:
            object.__setattr__(self, "master", (normalize_host(self.master[0]), self.master[1]))


@dataclass
class Topology:
    version: str  # "7.0.15"
    cluster: bool
    nodes: list[FoundNode] = field(default_factory=list)
    # The address given, with a host name turned into the IP that was
    # connected to, so that it compares with the addresses nodes report.
    seed: tuple[str, int] | None = None

    @property
    def engine_version(self) -> str:
        return f"{self.version.split('.')[0]}.0"

    @property
    def master(self) -> FoundNode:
        return next(n for n in self.nodes if n.role == "master")


class DiscoveryError(Exception):
    """The deployment cannot be found from the seed: why (``kind``) and at which node.

    ``kind``: ``unreachable`` (no answer, or not as Redis), ``auth`` (the login
    refused), ``noperm`` (``detail``: the command refused), ``master`` (the
    seed is a replica; ``detail``: its master, out of reach), ``outside`` (the seed
    is a replica; ``detail``: its master, outside the allowed networks: never
    connected to), ``cluster``
    (``detail``: what keeps the cluster from being managed as a whole).
    """

    def __init__(self, kind: str, node: str, detail: str = "") -> None:
        self.kind, self.node, self.detail = kind, node, detail
        super().__init__(f"{kind} at {node}" + (f": {detail}" if detail else ""))


def failure_kind(exc: BaseException) -> tuple[str, str]:
    """``(kind, detail)`` of ``DiscoveryError`` for what a node answered or failed with."""
    if isinstance(exc, redis.AuthenticationError):  # WRONGPASS, invalid password, NOAUTH
        return "auth", ""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return "noperm", refused_command(str(exc))
    if isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS")):
        return "auth", ""
    if isinstance(exc, redis.ConnectionError) and "[SSL" in str(exc):
        return "tls", tls_reason(str(exc))
    return "unreachable", type(exc).__name__


def refused_command(message: str) -> str:
    """The command a NOPERM reply names (``'acl|setuser'`` -> ``ACL SETUSER``)."""
    found = re.search(r"run the '([^']+)' command", message)
    return found.group(1).replace("|", " ").upper() if found else "a command"


def _label(host: str, port: int) -> str:
    return f"{host}:{port}"  # as NodeAddress.label


def _connect(
    host: str,
    port: int,
    user: str | None,
    password: Secret,
    timeout: float,
    tls: NodeTls | None = None,
) -> redis.Redis:
    return bounded.client(
        host,
        port,
        username=user or None,
        password=password.reveal(),
        timeout=timeout,
        decode_responses=True,
        protocol=2,  # RESP2: Redis before 6.0 has no HELLO
        tls=tls,
    )


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    """``INFO section`` as redis-py parses it (``slaveN`` entries are dicts)."""
    info = client.execute_command("INFO", section)
    if not isinstance(info, dict):
        raise ValueError("INFO did not parse")
    return {str(k): v for k, v in info.items()}


def _server_address(client: redis.Redis, host: str, port: int) -> tuple[str, int]:
    """``host:port`` with the host as the IP address this connection reached.

    Replicas and cluster peers name each other by IP; a host name given by the
    operator becomes the address rkvstore actually connected to, so that
    ``localhost`` and ``127.0.0.1`` are one node. It is the client's side of the
    connection (``getpeername``), not the server's idea of itself, so a node
    behind a port forward or NAT keeps the address it is reached at.
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.connect()  # a no-op when connected, as after the INFO calls
        sock = getattr(connection, "_sock", None)
        peer = sock.getpeername() if sock is not None else None
    finally:
        pool.release(connection)
    if not peer or not isinstance(peer[0], str):
        return normalize_host(host), port
    return normalize_host(str(peer[0])), port


def _replicas(info: dict[str, Any]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict):
            found.append((normalize_host(str(value["ip"])), int(value["port"])))
    return found


def cluster_nodes(nodes: list[ClusterNode]) -> list[FoundNode]:
    """Masters (those serving slots, shards numbered by their first slot) and their replicas."""
    masters = sorted(
        (n for n in nodes if n.role == "master" and n.slots), key=lambda n: min(n.slots)
    )
    shard_of = {m.node_id: shard for shard, m in enumerate(masters)}
    address = {n.node_id: (n.host, n.port) for n in nodes}
    found = [FoundNode(m.host, m.port, "master", shard_of[m.node_id]) for m in masters]
    for node in nodes:
        if node.role == "replica" and node.master_id in shard_of:
            found.append(
                FoundNode(
                    node.host,
                    node.port,
                    "replica",
                    shard_of[node.master_id],
                    address[node.master_id],
                )
            )
    return found


def discover(
    host: str,
    port: int,
    user: str | None,
    password: Secret,
    *,
    timeout: float = 3.0,
    seed: redis.Redis | None = None,
    tls: NodeTls | None = None,
    networks: Sequence[IpNetwork],
) -> Topology:
    """The topology of the deployment that ``host:port`` belongs to, standard or cluster.

    Bounded as a whole by ``timeout``, however slowly the nodes answer. ``seed``:
    a client of ``host:port`` logged in already (pooled, kept open), instead of
    a connection opened (and logged in) for this look alone. ``tls``: how to
    reach every node over TLS. ``networks``: where a node the seed names may be
    (RKVSTORE_REGISTER_NETWORKS); a master elsewhere is never connected to, so
    that no login goes to an address a node was told. Raises ``DiscoveryError``.
    """
    with bounded.exchange(timeout):
        return _discover(host, port, user, password, timeout, seed, tls, networks)


def _discover(
    host: str,
    port: int,
    user: str | None,
    password: Secret,
    timeout: float,
    pooled: redis.Redis | None,
    tls: NodeTls | None,
    networks: Sequence[IpNetwork],
) -> Topology:
    at = _label(host, port)
    try:
        seed = pooled or _connect(host, port, user, password, timeout, tls)
        try:
            server = _info(seed, "server")
            replication = _info(seed, "replication")
            given = _server_address(seed, host, port)
            cluster = str(_info(seed, "cluster").get("cluster_enabled")) == "1"
            if cluster:
                nodes = cluster_nodes(cluster_topology(seed))
                if not any(n.role == "master" for n in nodes):
                    raise DiscoveryError("cluster", at, "no node serves slots")
                return Topology(
                    version=str(server["redis_version"]), cluster=True, nodes=nodes, seed=given
                )
        finally:
            if pooled is None:
                seed.close()
        version = server["redis_version"]
        host, port = given
    except (redis.RedisError, OSError) as exc:
        raise DiscoveryError(*_kind_at(exc, at)) from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise DiscoveryError("unreachable", at, type(exc).__name__) from exc
    if replication.get("role") == "slave":
        replica = at
        host = normalize_host(str(replication.get("master_host", "")))
        port = int(replication.get("master_port", 0))
        at = _label(host, port)
        try:
            # Checked (a name resolved once) before the admin login goes there.
            host = allowed_address(host, port, networks)
        except OutsideNetworks as exc:
            raise DiscoveryError("outside", replica, at) from exc
        except OSError as exc:
            raise DiscoveryError("master", replica, at) from exc
        try:
            master = _connect(host, port, user, password, timeout, tls)
            try:
                replication = _info(master, "replication")
                host, port = _server_address(master, host, port)
            finally:
                master.close()
        except (redis.RedisError, OSError, KeyError, ValueError, TypeError) as exc:
            kind, node, detail = _kind_at(exc, at)
            if kind == "unreachable":  # the replica answered; its master does not
                raise DiscoveryError("master", replica, at) from exc
            raise DiscoveryError(kind, node, detail) from exc
    try:
        replicas = _replicas(replication)
    except (KeyError, ValueError, TypeError) as exc:
        raise DiscoveryError("unreachable", at, type(exc).__name__) from exc
    topology = Topology(version=str(version), cluster=cluster, seed=given)
    topology.nodes.append(FoundNode(host, port, "master", 0))
    for replica_host, replica_port in replicas:
        topology.nodes.append(FoundNode(replica_host, replica_port, "replica", 0, (host, port)))
    return topology


def _kind_at(exc: BaseException, at: str) -> tuple[str, str, str]:
    if isinstance(exc, DiscoveryError):
        return exc.kind, exc.node, exc.detail
    kind, detail = failure_kind(exc)
    return kind, at, detail


def topology_commands(cluster: bool) -> list[list[str]]:
    """What a verify asks each node beside its users, in the same round trip, to
    see whether the deployment names a node not on the list (``named_addresses``)."""
    return [["CLUSTER", "NODES"]] if cluster else [["INFO", "replication"]]


def named_addresses(replies: Iterable[Sequence[Any]], cluster: bool) -> set[tuple[str, int]] | None:
    """Every node the deployment's nodes name in their replies to ``topology_commands``
    (in the nodes' order): at least the nodes ``discover`` would find from the
    first of them that answers. ``None``: no reply understood (look the whole way).

    Standard: a replica names its master, a master its connected replicas (every
    node's reply: a few lines each). Cluster: the masters serving slots and their
    replicas as the first node that answers sees them, as ``discover`` does (each
    reply names every node: one is parsed, not one per node).
    """
    named: set[tuple[str, int]] = set()
    understood = answered = False
    for reply in replies:
        answered = True
        if len(reply) != 1 or isinstance(reply[0], Exception):
            if cluster:
                continue  # discover too goes on to the next node
            return None
        text = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        try:
            if cluster:
                found = cluster_nodes(parse_cluster_nodes(text))
                if not any(n.role == "master" for n in found):
                    continue
                return {(n.host, n.port) for n in found}
            named.update(_replication_peers(text))
            understood = True
        except (KeyError, ValueError):  # a reply of another shape: look the whole way
            return None
    return named if understood or not answered else None


def _replication_peers(text: str) -> list[tuple[str, int]]:
    """``INFO replication``: a replica's master, or a master's connected replicas."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value
    if fields.get("role") == "slave":
        return [(normalize_host(fields["master_host"]), int(fields["master_port"]))]
    peers = []
    for key, value in fields.items():
        if key.startswith("slave") and key[5:].isdigit():
            entry = dict(part.partition("=")[::2] for part in value.split(","))
            peers.append((normalize_host(entry["ip"]), int(entry["port"])))
    return peers
