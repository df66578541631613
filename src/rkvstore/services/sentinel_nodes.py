"""A Sentinel-managed deployment's nodes as its Sentinels name them now (issue 13).

Apart from instance_nodes.py (which ``look_again`` reaches it through): the
Sentinels' answer is only what they were told, so every address is checked
against RKVSTORE_REGISTER_NETWORKS before rkvstore connects to it.
"""

from __future__ import annotations

import logging
import threading

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.addresses import OutsideNetworks, allowed, allowed_address, parse_networks
from rkvstore.engine.discovery import DiscoveryError, FoundNode, Topology, discover
from rkvstore.engine.redis_engine import NodeAddress
from rkvstore.engine.sentinel import SentinelError, SentinelSettings, master_of
from rkvstore.services.context import Deps
from rkvstore.services.instance_nodes import instance_tls, node_rows_for, put_management_user_each
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.instances")


def follow_sentinels(deps: Deps, instance: InstanceRow, rows: list[NodeRow]) -> list[NodeRow]:
    """A Sentinel-managed deployment's nodes as its Sentinels' master names them now.

    The master the Sentinels name and the replicas it names (``INFO
    replication``: those connected) replace the recorded nodes, so that a
    failover moves ``ConnectionDomain``/``Port`` to the new master and a node
    that went down is not waited for (it is recorded again, and given what it
    lacks, once it is back as a replica). A node new to rkvstore gets the
    management user through the admin login first. Nothing answers: the
    recorded nodes, as they are. A master outside RKVSTORE_REGISTER_NETWORKS
    (a Sentinel told so, or a node names one) is not followed: nothing connects
    to it, the recorded nodes stay, and the instance is flagged out of line.
    """
    assert instance.sentinel_encrypted is not None
    sentinel = deps.redis.sealed_settings(
        instance.sentinel_encrypted, deps.box.open, SentinelSettings.from_sealed_form
    )
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    tls = instance_tls(deps, instance)
    timeout = deps.settings.node_timeout_seconds
    networks = parse_networks(deps.settings.register_networks)
    try:
        named, port = master_of(sentinel, timeout)
        # Checked (a name resolved once) before any login goes to it.
        host = allowed_address(named, port, networks)
        topology = _discover_as_management(deps, instance, host, port)
        if not allowed(topology.master.host, networks):
            raise OutsideNetworks(f"{topology.master.host}:{topology.master.port}")
    except OutsideNetworks as exc:
        _refuse_outside(deps, instance, str(exc))
        return rows
    except DiscoveryError as exc:
        if exc.kind == "outside":
            _refuse_outside(deps, instance, exc.detail)
        else:
            log.warning("instance %s: Sentinels not followed: %s", instance.instance_id, exc)
        return rows
    except (SentinelError, OSError) as exc:
        # The recorded nodes, which the change then reports if they do not answer.
        log.warning("instance %s: Sentinels not followed: %s", instance.instance_id, exc)
        return rows
    with _OUTSIDE_LOCK:
        _OUTSIDE.pop(instance.instance_id, None)
    known = {(r.host, r.port, r.role) for r in rows}
    found = [n for n in topology.nodes if allowed(n.host, networks)]
    if {(n.host, n.port, n.role) for n in found} == known:
        return rows
    new = [n for n in found if (n.host, n.port) not in {(r.host, r.port) for r in rows}]
    if new and instance.admin_password_encrypted is not None:
        admin = deps.box.open(instance.admin_password_encrypted)
        refused = put_management_user_each(deps, new, admin, instance.admin_user, mgmt, tls)
        found = [n for n in found if n not in refused]
    master = topology.master
    with deps.engine.begin() as conn:
        repo.replace_nodes(conn, instance.instance_id, node_rows_for(instance.instance_id, found))
        repo.update_instance(conn, instance.instance_id, host=master.host, port=master.port)
        fresh = repo.list_nodes(conn, instance.instance_id)
    log.warning(
        "instance %s: followed its Sentinels: master %s:%d, %d node(s)",
        instance.instance_id,
        master.host,
        master.port,
        len(fresh),
    )
    deps.reconciler.mark_dirty(instance.instance_id)  # a node back may lack accounts
    return fresh


# Instances whose Sentinels name a master outside the networks, and that master
# (this process's memory): said and flagged once per master named, not at every
# look (each change and each pass looks again).
_OUTSIDE: dict[str, str] = {}
_OUTSIDE_LOCK = threading.Lock()


def _refuse_outside(deps: Deps, instance: InstanceRow, address: str) -> None:
    """The Sentinels name a master outside RKVSTORE_REGISTER_NETWORKS: not followed
    (nothing connected to it); a warning and the instance flagged out of line."""
    with _OUTSIDE_LOCK:
        if _OUTSIDE.get(instance.instance_id) == address:
            return
        _OUTSIDE[instance.instance_id] = address
    log.warning(
        "instance %s: Sentinels not followed: master %s outside RKVSTORE_REGISTER_NETWORKS",
        instance.instance_id,
        address,
    )
    deps.reconciler.mark_dirty(instance.instance_id)


def _discover_as_management(deps: Deps, instance: InstanceRow, host: str, port: int) -> Topology:
    """``discover`` from ``host:port`` as rkvstore's user; a node that refuses that login
    (a master rkvstore never recorded) gets the user through the admin login first."""
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    tls = instance_tls(deps, instance)

    def look() -> Topology:
        seed = deps.redis.node(NodeAddress(host, port), mgmt, tls=tls)
        return discover(
            host,
            port,
            MANAGEMENT_USER,
            mgmt,
            timeout=deps.settings.node_timeout_seconds,
            seed=seed.client,
            tls=tls,
            networks=parse_networks(deps.settings.register_networks),
        )

    try:
        return look()
    except DiscoveryError as exc:
        if exc.kind != "auth" or instance.admin_password_encrypted is None:
            raise
    admin = deps.box.open(instance.admin_password_encrypted)
    found = FoundNode(host, port, "master", 0)
    put_management_user_each(deps, [found], admin, instance.admin_user, mgmt, tls)
    return look()
