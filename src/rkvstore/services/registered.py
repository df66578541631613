"""RegisterInstance (an extension): adopt a deployment someone else runs."""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy.exc import IntegrityError

from rkvstore import errors
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.acl import NodeFailure, UserChange
from rkvstore.engine.discovery import DiscoveryError, discover
from rkvstore.engine.redis_engine import NodeAddress
from rkvstore.errors import ApiError
from rkvstore.secret import Secret
from rkvstore.services.common import (
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
    random_password,
    super_account,
)
from rkvstore.services.context import CallContext
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
    host = host.strip("[]")
    if (
        not sep
        or not host
        or not re.fullmatch(r"[0-9]{1,5}", port_text)
        or not 0 < int(port_text) < 65536
    ):
        raise ApiError(errors.INVALID_PARAMETER, name="Endpoint")
    return host, int(port_text)


def register_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Adopt an existing deployment: discover it, put rkvstore's management user on every node."""
    deps = ctx.deps
    host, port = _parse_endpoint(params["Endpoint"])
    # ``default`` is plain AUTH <password>: the one login Redis before 6.0 knows.
    admin_user: str | None = params["AdminUserName"] or None
    if admin_user == "default":
        admin_user = None
    admin_password: Secret = params["AdminPassword"]
    try:
        topology = discover(
            host, port, admin_user, admin_password, timeout=deps.settings.node_timeout_seconds
        )
    except DiscoveryError as exc:
        log.info("request %s: registering %s failed: %s", ctx.request_id, params["Endpoint"], exc)
        raise ApiError(errors.INVALID_ENDPOINT) from exc
    major = topology.version.split(".")[0]
    if not major.isascii() or not major.isdigit():
        raise ApiError(errors.INVALID_ENDPOINT)
    if int(major) < 4:
        raise ApiError(errors.ENGINE_VERSION_FORMAT)
    legacy = int(major) < 6  # no ACL: requirepass is the one account and rkvstore's login
    with deps.engine.connect() as conn:
        # Two registrations of one node would fight over its management user.
        if repo.nodes_in_use(conn, [(n.host, n.port) for n in topology.nodes]):
            raise ApiError(errors.INVALID_ENDPOINT_REGISTERED)
    if params["DryRun"]:
        raise ApiError(errors.DRY_RUN_OPERATION)

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
        raise ApiError(errors.INVALID_ENDPOINT_REGISTERED) from exc
    if not legacy:
        addresses = [NodeAddress(n.host, n.port) for n in topology.nodes]
        try:
            put_management_user(
                deps, admin_nodes(deps, addresses, admin_password, admin_user), mgmt
            )
        except NodeFailure as exc:
            log.warning(
                "request %s: management user not set on every node: %s", ctx.request_id, exc
            )
            with deps.engine.begin() as conn:
                repo.delete_instance(conn, instance_id)
            raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
    with deps.engine.begin() as conn:
        repo.set_instance_status(conn, instance_id, NORMAL)
    return {
        "InstanceId": instance_id,
        "InstanceName": name,
        "InstanceStatus": NORMAL,
        "EngineVersion": topology.engine_version,
        "ConnectionDomain": domain,
        "Port": master.port,
        "NodeCount": len(topology.nodes),
    }
