"""RegisterInstance (an extension): adopt a deployment someone else runs."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rkvstore import errors
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.acl import Node, NodeFailure, UserChange
from rkvstore.engine.addresses import (
    OutsideNetworks,
    allowed,
    allowed_address,
    normalize_host,
    parse_networks,
)
from rkvstore.engine.discovery import DiscoveryError, FoundNode, Topology, discover
from rkvstore.engine.node_tls import NodeTls
from rkvstore.engine.redis_engine import NodeAddress
from rkvstore.engine.sentinel import SentinelSettings
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.products.kvstore.account_rules import super_account
from rkvstore.products.kvstore.registration_checks import (
    Where,
    accounts_in_memory,
    explain_discovery,
    explain_node_failure,
    master_by_sentinels,
    tls_settings,
)
from rkvstore.secret import Secret
from rkvstore.services import audit
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.instance_nodes import (
    CLUSTER,
    CREATING,
    FILE,
    MASTER_SLAVE,
    MEMORY,
    NORMAL,
    REGISTERED,
    STAND_ALONE,
    STANDARD,
    admin_nodes,
    instance_tls,
    new_instance_id,
    node_addresses,
    node_rows_for,
    put_management_user,
    put_management_user_each,
    random_password,
)
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.instances")


def remove_management_user(ctx: CallContext, instance: InstanceRow, rows: list[NodeRow]) -> None:
    """Forgetting a registered deployment takes rkvstore's user off it (accounts stay)."""
    deps = ctx.deps
    assert instance.admin_password_encrypted is not None
    admin = deps.box.open(instance.admin_password_encrypted)
    tls = instance_tls(deps, instance)
    nodes = admin_nodes(deps, node_addresses(rows), admin, instance.admin_user, tls)
    try:
        deps.redis.apply(nodes, [UserChange(MANAGEMENT_USER, None)])
    except NodeFailure as exc:
        log.warning(
            "request %s: management user left on %s: %s", ctx.request_id, instance.instance_id, exc
        )


def _parse_endpoint(endpoint: str, name: str = "Endpoint") -> tuple[str, int]:
    host, sep, port_text = endpoint.strip().rpartition(":")
    host = normalize_host(host)
    if (
        not sep
        or not host
        or not _HOST.fullmatch(host)
        or not re.fullmatch(r"[0-9]{1,5}", port_text)
        or not 0 < int(port_text) < 65536
    ):
        raise ApiError(errors.INVALID_PARAMETER, name=name)
    return host, int(port_text)


# A DNS name or an IP address (IPv6 unbracketed, as normalize_host leaves it).
_HOST = re.compile(r"[a-z0-9.:_-]{1,253}")


def _seed_address(deps: Deps, host: str, port: int) -> str:
    """The IP address to reach ``host`` at, if every address it stands for may be
    registered (``allowed_address``)."""
    networks = parse_networks(deps.settings.register_networks)
    try:
        return allowed_address(host, port, networks)
    except OutsideNetworks as exc:
        raise ApiError(kvstore_errors.INVALID_ENDPOINT_NOT_ALLOWED) from exc
    except OSError as exc:
        raise ApiError(kvstore_errors.INVALID_ENDPOINT, node=f"{host}:{port}") from exc


def _sentinel_settings(deps: Deps, params: dict[str, Any]) -> SentinelSettings | None:
    """The Sentinels to ask for the master (each address allowed, as an endpoint), or None."""
    listed: str = params["SentinelEndpoints"] or ""
    name: str = params["SentinelMasterName"] or ""
    if not listed and not name:
        return None
    if not name:
        raise ApiError(errors.MISSING_PARAMETER, name="SentinelMasterName")
    if not listed:
        raise ApiError(errors.MISSING_PARAMETER, name="SentinelEndpoints")
    if params["Endpoint"]:  # one or the other: which would be the truth?
        raise ApiError(errors.INVALID_PARAMETER, name="Endpoint")
    endpoints = []
    for item in listed.split(","):
        host, port = _parse_endpoint(item, "SentinelEndpoints")
        endpoints.append((_seed_address(deps, host, port), port))
    password: Secret | None = params["SentinelPassword"] or None
    return SentinelSettings(tuple(endpoints[:16]), name, password)


def _put_management_user_or_forget(
    ctx: CallContext,
    instance_id: str,
    topology: Topology,
    login: _Login,
    mgmt: Secret,
) -> None:
    """rkvstore's user on every master (all or nothing: else the registration fails) and
    on every replica that takes it; a replica that does not is not recorded: only nodes
    that accepted the management user are rkvstore's. The next change looks again."""
    deps = ctx.deps
    masters = [n for n in topology.nodes if n.role == "master"]
    replicas = [n for n in topology.nodes if n.role != "master"]
    try:
        put_management_user(deps, login.nodes(deps, masters), mgmt)
    except NodeFailure as exc:
        log.warning("request %s: management user not set on the masters: %s", ctx.request_id, exc)
        with deps.engine.begin() as conn:
            repo.delete_instance(conn, instance_id)
        raise explain_node_failure(
            exc.failed,
            login.where,
            topology.cluster,
            login.tls,
            deps.settings.node_timeout_seconds,
        ) from exc
    refused = set(
        put_management_user_each(deps, replicas, login.password, login.user, mgmt, login.tls)
    )
    if refused:
        log.warning(
            "request %s: %d replica(s) of %s did not take the management user; not recorded",
            ctx.request_id,
            len(refused),
            instance_id,
        )
        with deps.engine.begin() as conn:
            repo.forget_nodes(conn, instance_id, [(n.host, n.port) for n in refused])


@dataclass(frozen=True)
class _Login:
    """The operator's admin login to the deployment, and how to reach its nodes."""

    user: str | None  # None: plain AUTH <password> (default, or Redis before 6.0)
    password: Secret
    tls: NodeTls | None
    where: Where

    def nodes(self, deps: Deps, found: list[FoundNode]) -> list[Node]:
        addresses = [NodeAddress(n.host, n.port) for n in found]
        return admin_nodes(deps, addresses, self.password, self.user, self.tls)


def _discover(deps: Deps, seed: str, port: int, login: _Login) -> Topology:
    timeout = deps.settings.node_timeout_seconds
    networks = parse_networks(deps.settings.register_networks)
    try:
        return discover(
            seed,
            port,
            login.user,
            login.password,
            timeout=timeout,
            tls=login.tls,
            networks=networks,
        )
    except DiscoveryError as exc:
        raise explain_discovery(exc, login.where, login.tls, timeout) from exc


def _check_version(topology: Topology, where: Where) -> bool:
    """Whether the deployment is before 6.0 (no ACL); ``VersionTooOld`` before 4.0."""
    major = topology.version.split(".")[0]
    if not major.isascii() or not major.isdigit():
        raise ApiError(kvstore_errors.INVALID_ENDPOINT, node=where.given)
    if int(major) < 4:
        raise ApiError(
            kvstore_errors.INVALID_ENDPOINT_VERSION, node=where.given, version=topology.version
        )
    return int(major) < 6


def _keeps_accounts_in_memory(deps: Deps, topology: Topology, login: _Login) -> bool:
    """Whether a node would keep accounts in memory only; refused if the operator says so."""
    node = accounts_in_memory(
        login.nodes(deps, topology.nodes),
        topology.nodes,
        login.where,
        topology.cluster,
        login.tls,
        deps.settings.node_timeout_seconds,
    )
    if node is not None and deps.settings.refuse_nonpersistent_nodes:
        raise ApiError(kvstore_errors.INVALID_ENDPOINT_NOT_PERSISTENT, node=node)
    return node is not None


def register_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Adopt an existing deployment: discover it, put rkvstore's management user on every node."""
    deps = ctx.deps
    sentinel = _sentinel_settings(deps, params)
    if sentinel is not None:
        host, port = master_by_sentinels(sentinel, deps.settings.node_timeout_seconds)
    elif params["Endpoint"]:
        host, port = _parse_endpoint(params["Endpoint"])
    else:
        raise ApiError(errors.MISSING_PARAMETER, name="Endpoint")
    # ``default`` is plain AUTH <password>: the one login Redis before 6.0 knows.
    admin_user: str | None = params["AdminUserName"] or None
    if admin_user == "default":
        admin_user = None
    admin_password: Secret = params["AdminPassword"]
    tls = tls_settings(params)
    seed = _seed_address(deps, host, port)
    where = Where(f"{host}:{port}", f"{seed}:{port}", admin_user or "default")
    login = _Login(admin_user, admin_password, tls, where)
    topology = _discover(deps, seed, port, login)
    networks = parse_networks(deps.settings.register_networks)
    if not all(allowed(n.host, networks) for n in topology.nodes):
        # A node the deployment names (a replica, a cluster peer) lies outside.
        raise ApiError(kvstore_errors.INVALID_ENDPOINT_NOT_ALLOWED)
    legacy = _check_version(topology, where)  # no ACL: requirepass is the one account
    with deps.engine.connect() as conn:
        # Two registrations of one node would fight over its management user.
        if repo.nodes_in_use(conn, [(n.host, n.port) for n in topology.nodes]):
            raise ApiError(kvstore_errors.INVALID_ENDPOINT_REGISTERED)
    in_memory = not legacy and _keeps_accounts_in_memory(deps, topology, login)
    if params["DryRun"]:
        raise ApiError(kvstore_errors.DRY_RUN_OPERATION)

    instance_id = new_instance_id()
    mgmt = admin_password if legacy else random_password()
    master = topology.master
    # Clients keep the name they were given for the master; the node rows
    # hold the address as the nodes see it (one node, one row, however named).
    domain = host if topology.seed == (master.host, master.port) else master.host
    masters = [n for n in topology.nodes if n.role == "master"]
    replicas = [n for n in topology.nodes if n.role == "replica"]
    name = params["InstanceName"] or instance_id
    # The rows first, while Creating: the unique node address claims the
    # deployment before its management user is touched, so of two
    # registrations at once only one ever sets it.
    try:
        with deps.engine.begin() as conn:
            repo.insert_instance(
                conn,
                {
                    "instance_id": instance_id,
                    "account_id": ctx.account_id,
                    "name": name,
                    "status": CREATING,
                    "provider": REGISTERED,
                    "engine_version": topology.engine_version,
                    "architecture": CLUSTER if topology.cluster else STANDARD,
                    "node_type": MASTER_SLAVE if replicas else STAND_ALONE,
                    "shard_count": len(masters),
                    "zone_id": deps.settings.zone_ids[0],
                    "instance_class": "registered",
                    "charge_type": "PostPaid",
                    "host": domain,
                    "port": master.port,
                    "mgmt_password_encrypted": deps.box.seal(mgmt),
                    "admin_user": None if legacy else admin_user,
                    "admin_password_encrypted": deps.box.seal(admin_password),
                    "accounts_in_memory": in_memory,
                    "tls_encrypted": None
                    if tls is None
                    else deps.box.seal(Secret(tls.sealed_form())),
                    "sentinel_encrypted": None
                    if sentinel is None
                    else deps.box.seal(Secret(sentinel.sealed_form())),
                },
            )
            repo.replace_nodes(conn, instance_id, node_rows_for(instance_id, topology.nodes))
            if legacy:
                # Before 6.0 the one account is the instance ID's; requirepass its password.
                repo.insert_account(
                    conn, super_account(instance_id, instance_id, admin_password.sha256_hex())
                )
    except IntegrityError as exc:
        raise ApiError(kvstore_errors.INVALID_ENDPOINT_REGISTERED) from exc
    try:
        if not legacy:
            _put_management_user_or_forget(ctx, instance_id, topology, login, mgmt)
        with deps.engine.begin() as conn:
            repo.set_instance_status(conn, instance_id, NORMAL)
            audit.name_resource(instance_id)
            audit.write_in(conn)  # the event goes with the record that makes it Normal
        if in_memory:  # its first pass now, and one every in_memory_verify_seconds after
            deps.reconciler.mark_dirty(instance_id)
    except BaseException:
        # Never left Creating (which nothing would finish): the claim goes. Should
        # the database be away for this too, DeleteInstance can remove it later.
        with contextlib.suppress(SQLAlchemyError), deps.engine.begin() as conn:
            repo.delete_instance(conn, instance_id)
        raise
    return {
        "InstanceId": instance_id,
        "InstanceName": name,
        "InstanceStatus": NORMAL,
        "EngineVersion": topology.engine_version,
        "ConnectionDomain": domain,
        "Port": master.port,
        "NodeCount": len(topology.nodes),
        "AccountsPersistence": MEMORY if in_memory else FILE,
    }
