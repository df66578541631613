"""RegisterInstance (an extension): adopt a deployment someone else runs."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rkvstore import errors
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.acl import Node, NodeFailure, UserChange
from rkvstore.engine.addresses import allowed, normalize_host, parse_networks, resolve
from rkvstore.engine.discovery import DiscoveryError, FoundNode, discover
from rkvstore.engine.redis_engine import NodeAddress
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.products.kvstore.account_rules import super_account
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.instance_nodes import (
    CLUSTER,
    CREATING,
    MASTER_SLAVE,
    NORMAL,
    REGISTERED,
    STAND_ALONE,
    STANDARD,
    admin_nodes,
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
    nodes = admin_nodes(deps, node_addresses(rows), admin, instance.admin_user)
    try:
        deps.redis.apply(nodes, [UserChange(MANAGEMENT_USER, None)])
    except NodeFailure as exc:
        log.warning(
            "request %s: management user left on %s: %s", ctx.request_id, instance.instance_id, exc
        )


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port_text = endpoint.strip().rpartition(":")
    host = normalize_host(host)
    if (
        not sep
        or not host
        or not _HOST.fullmatch(host)
        or not re.fullmatch(r"[0-9]{1,5}", port_text)
        or not 0 < int(port_text) < 65536
    ):
        raise ApiError(errors.INVALID_PARAMETER, name="Endpoint")
    return host, int(port_text)


# A DNS name or an IP address (IPv6 unbracketed, as normalize_host leaves it).
_HOST = re.compile(r"[a-z0-9.:_-]{1,253}")


def _seed_address(deps: Deps, host: str, port: int) -> str:
    """The IP address to reach ``host`` at, if every address it stands for may be registered.

    A name is resolved once, here, and the connection goes to the address
    found, so that a name cannot point inside the allowed networks when
    checked and elsewhere when used.
    """
    networks = parse_networks(deps.settings.register_networks)
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise ApiError(kvstore_errors.INVALID_ENDPOINT) from exc
    if not addresses or not all(allowed(a, networks) for a in addresses):
        raise ApiError(kvstore_errors.INVALID_ENDPOINT_NOT_ALLOWED)
    return addresses[0]


def _put_management_user_or_forget(
    ctx: CallContext,
    instance_id: str,
    nodes: list[FoundNode],
    admin_user: str | None,
    admin_password: Secret,
    mgmt: Secret,
) -> None:
    """rkvstore's user on every master (all or nothing: else the registration fails) and
    on every replica that takes it; a replica that does not is not recorded: only nodes
    that accepted the management user are rkvstore's. The next change looks again."""
    deps = ctx.deps
    masters = [n for n in nodes if n.role == "master"]
    replicas = [n for n in nodes if n.role != "master"]
    try:
        put_management_user(deps, _admin(deps, masters, admin_password, admin_user), mgmt)
    except NodeFailure as exc:
        log.warning("request %s: management user not set on the masters: %s", ctx.request_id, exc)
        with deps.engine.begin() as conn:
            repo.delete_instance(conn, instance_id)
        raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
    refused = set(put_management_user_each(deps, replicas, admin_password, admin_user, mgmt))
    if refused:
        log.warning(
            "request %s: %d replica(s) of %s did not take the management user; not recorded",
            ctx.request_id,
            len(refused),
            instance_id,
        )
        with deps.engine.begin() as conn:
            repo.forget_nodes(conn, instance_id, [(n.host, n.port) for n in refused])


def _admin(deps: Deps, nodes: list[FoundNode], admin: Secret, admin_user: str | None) -> list[Node]:
    return admin_nodes(deps, [NodeAddress(n.host, n.port) for n in nodes], admin, admin_user)


def register_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Adopt an existing deployment: discover it, put rkvstore's management user on every node."""
    deps = ctx.deps
    host, port = _parse_endpoint(params["Endpoint"])
    # ``default`` is plain AUTH <password>: the one login Redis before 6.0 knows.
    admin_user: str | None = params["AdminUserName"] or None
    if admin_user == "default":
        admin_user = None
    admin_password: Secret = params["AdminPassword"]
    seed = _seed_address(deps, host, port)
    try:
        topology = discover(
            seed, port, admin_user, admin_password, timeout=deps.settings.node_timeout_seconds
        )
    except DiscoveryError as exc:
        log.info("request %s: registering %s:%d failed: %s", ctx.request_id, host, port, exc)
        raise ApiError(kvstore_errors.INVALID_ENDPOINT) from exc
    networks = parse_networks(deps.settings.register_networks)
    if not all(allowed(n.host, networks) for n in topology.nodes):
        # A node the deployment names (a replica, a cluster peer) lies outside.
        raise ApiError(kvstore_errors.INVALID_ENDPOINT_NOT_ALLOWED)
    major = topology.version.split(".")[0]
    if not major.isascii() or not major.isdigit():
        raise ApiError(kvstore_errors.INVALID_ENDPOINT)
    if int(major) < 4:
        raise ApiError(kvstore_errors.ENGINE_VERSION_FORMAT)
    legacy = int(major) < 6  # no ACL: requirepass is the one account and rkvstore's login
    with deps.engine.connect() as conn:
        # Two registrations of one node would fight over its management user.
        if repo.nodes_in_use(conn, [(n.host, n.port) for n in topology.nodes]):
            raise ApiError(kvstore_errors.INVALID_ENDPOINT_REGISTERED)
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
            _put_management_user_or_forget(
                ctx, instance_id, topology.nodes, admin_user, admin_password, mgmt
            )
        with deps.engine.begin() as conn:
            repo.set_instance_status(conn, instance_id, NORMAL)
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
    }
