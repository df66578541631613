"""The instance actions (api.md §4) on the local provider and on registered deployments."""

from __future__ import annotations

import logging
import secrets
import string
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rkvstore import errors
from rkvstore.domain import accounts as rules
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.acl import Node, NodeFailure, UserChange
from rkvstore.engine.discovery import DiscoveryError, discover
from rkvstore.engine.redis_engine import NodeAddress, desired_user, management_user
from rkvstore.errors import ApiError
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.tasks import Task
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.instances")

CREATING, NORMAL, UNAVAILABLE = "Creating", "Normal", "Unavailable"
STAND_ALONE, MASTER_SLAVE = "STAND_ALONE", "MASTER_SLAVE"
NODE_TYPES = {
    "STAND_ALONE": STAND_ALONE,
    "single": STAND_ALONE,
    "MASTER_SLAVE": MASTER_SLAVE,
    "double": MASTER_SLAVE,
}
LOCAL, REGISTERED = "local", "registered"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_instance_id() -> str:
    return "r-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))


def random_password() -> Secret:
    """A password that passes the API's own rule (three classes, 24 characters)."""
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(21))
    return Secret("Aa1" + body)


# --------------------------------------------------------------------------- shared checks


def load_instance(ctx: CallContext, instance_id: str) -> InstanceRow:
    """The caller's instance; another tenant's is ``InvalidInstanceId.NotFound`` too."""
    with ctx.deps.engine.connect() as conn:
        instance = repo.get_instance(conn, ctx.account_id, instance_id)
    if instance is None:
        raise ApiError(errors.INSTANCE_NOT_FOUND)
    return instance


def require_normal(instance: InstanceRow) -> None:
    if instance.status != NORMAL:
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)


def check_account_engine(instance: InstanceRow) -> None:
    """Custom accounts need ACLs: Redis 6.0 or later (api.md §3)."""
    major = int(instance.engine_version.split(".")[0])
    if major < 6:
        raise ApiError(errors.ENGINE_VERSION_FORMAT)


@contextmanager
def task_slot(deps: Deps, instance_id: str, action: str) -> Iterator[Task]:
    """Hold the instance's task slot; after a dead holder, first bring the nodes in line."""
    with deps.slots.hold(instance_id, action) as task:
        if task.took_over:
            deps.reconciler.reconcile_instance(instance_id, holding_slot=True)
        yield task


def node_addresses(rows: list[NodeRow]) -> list[NodeAddress]:
    return [NodeAddress(r.host, r.port) for r in rows]


def instance_nodes(deps: Deps, instance: InstanceRow) -> list[Node]:
    with deps.engine.connect() as conn:
        rows = repo.list_nodes(conn, instance.instance_id)
    return deps.redis.nodes(node_addresses(rows), deps.box.open(instance.mgmt_password_encrypted))


# --------------------------------------------------------------------------- CreateInstance


def create_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    settings = deps.settings
    if params["RegionId"] is not None and params["RegionId"] != settings.region:
        raise ApiError(errors.INVALID_REGION)
    zone = params["ZoneId"] or settings.zone_ids[0]
    if zone not in settings.zone_ids:
        raise ApiError(errors.INVALID_ZONE)
    password: Secret | None = params["Password"]
    if password is not None:
        rules.check_password(password)
    node_type = NODE_TYPES.get(params["NodeType"] or MASTER_SLAVE)
    if node_type is None:
        raise ApiError(errors.INVALID_PARAMETER, name="NodeType")
    shards = params["ShardCount"] or 1
    if shards > 1:
        # Cluster instances come with the cluster engine; until then, say so plainly.
        raise ApiError(errors.INVALID_PARAMETER, name="ShardCount")
    binary = deps.local.binary_for(params["EngineVersion"])
    if binary is None:
        raise ApiError(errors.ENGINE_VERSION_FORMAT)
    if params["DryRun"]:
        raise ApiError(errors.DRY_RUN_OPERATION)

    instance_id = new_instance_id()
    name = params["InstanceName"] or instance_id
    mgmt = random_password()
    default_password = password or random_password()
    ports = deps.local.allocate_ports(2 if node_type == MASTER_SLAVE else 1)
    node_rows = [
        {
            "node_id": f"{instance_id}-0",
            "host": "127.0.0.1",
            "port": ports[0],
            "role": "master",
            "shard": 0,
            "master_node_id": None,
        }
    ]
    if node_type == MASTER_SLAVE:
        node_rows.append(
            {
                "node_id": f"{instance_id}-1",
                "host": "127.0.0.1",
                "port": ports[1],
                "role": "replica",
                "shard": 0,
                "master_node_id": f"{instance_id}-0",
            }
        )
    digest = default_password.sha256_hex()
    with deps.engine.begin() as conn:
        repo.insert_instance(
            conn,
            {
                "instance_id": instance_id,
                "account_id": ctx.account_id,
                "name": name,
                "status": CREATING,
                "provider": LOCAL,
                "engine_version": binary.engine_version,
                "architecture": "standard",
                "node_type": node_type,
                "shard_count": 1,
                "zone_id": zone,
                "instance_class": params["InstanceClass"] or "redis.master.small.default",
                "charge_type": params["ChargeType"] or "PostPaid",
                "host": "127.0.0.1",
                "port": ports[0],
                "mgmt_password_encrypted": deps.box.seal(mgmt),
                "admin_user": None,
                "admin_password_encrypted": None,
            },
        )
        repo.replace_nodes(conn, instance_id, node_rows)
        for account_name in ("default", instance_id):
            repo.insert_account(
                conn,
                {
                    "instance_id": instance_id,
                    "name": account_name,
                    "password_sha256": digest,
                    "privilege": "Super",
                    "account_type": "Super",
                    "description": "",
                },
            )
    resume_creation(deps, instance_id)
    return {
        "InstanceId": instance_id,
        "InstanceName": name,
        "InstanceStatus": CREATING,
        "ConnectionDomain": "127.0.0.1",
        "Port": ports[0],
        "RegionId": settings.region,
        "ZoneId": zone,
        "ChargeType": params["ChargeType"] or "PostPaid",
        "NodeType": node_type,
        "NetworkType": "CLASSIC",
        "Config": "{}",
        "Capacity": 0,
        "QPS": 0,
        "Bandwidth": 0,
        "Connections": 0,
        "UserName": instance_id,
    }


def desired_users(deps: Deps, instance: InstanceRow) -> list[Any]:
    with deps.engine.connect() as conn:
        accounts = repo.list_accounts(conn, instance.instance_id)
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    return [management_user(mgmt)] + [
        desired_user(a.name, a.password_sha256, a.privilege, instance.engine_version)
        for a in accounts
    ]


def resume_creation(deps: Deps, instance_id: str) -> None:
    """Start (or, after a restart, restart) building an instance's nodes in the background."""
    thread = threading.Thread(
        target=_build_local_instance,
        args=(deps, instance_id),
        name=f"create-{instance_id}",
        daemon=True,
    )
    deps.builds[:] = [t for t in deps.builds if t.is_alive()]
    deps.builds.append(thread)
    thread.start()


def _build_local_instance(deps: Deps, instance_id: str) -> None:
    try:
        with deps.slots.hold(instance_id, "CreateInstance"):
            with deps.engine.connect() as conn:
                instance = repo.get_instance_any_tenant(conn, instance_id)
                rows = repo.list_nodes(conn, instance_id)
            assert instance is not None
            desired = desired_users(deps, instance)
            deps.local.start_instance(instance, rows, desired)
            # Once more through the engine: every node now shows each user as
            # Redis renders it, which is what the reconciler compares with.
            deps.redis.apply(
                instance_nodes(deps, instance), [UserChange(u.name, u) for u in desired]
            )
        # Normal only once the slot is free, so the first call on it cannot meet TaskExists.
        with deps.engine.begin() as conn:
            repo.set_instance_status(conn, instance_id, NORMAL)
        log.info("instance %s is Normal", instance_id)
    except Exception:
        log.exception("creating instance %s failed", instance_id)
        with deps.engine.begin() as conn:
            repo.set_instance_status(conn, instance_id, UNAVAILABLE)


# --------------------------------------------------------------------------- Describe*


def _instance_fields(deps: Deps, instance: InstanceRow, node_count: int) -> dict[str, Any]:
    return {
        "InstanceId": instance.instance_id,
        "InstanceName": instance.name,
        "InstanceStatus": instance.status,
        "InstanceClass": instance.instance_class,
        "InstanceType": "Redis",
        "EngineVersion": instance.engine_version,
        "ArchitectureType": instance.architecture,
        "NodeType": instance.node_type,
        "ShardCount": instance.shard_count,
        "ReplicaCount": max(0, node_count // max(1, instance.shard_count) - 1),
        "RegionId": deps.settings.region,
        "ZoneId": instance.zone_id,
        "ChargeType": instance.charge_type,
        "NetworkType": "CLASSIC",
        "ConnectionDomain": instance.host,
        "Port": instance.port,
        "PrivateIp": instance.host,
        "Capacity": 0,
        "QPS": 0,
        "Bandwidth": 0,
        "Connections": 0,
        "Config": "{}",
        "CreateTime": instance.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "IsRds": True,
        "UserName": instance.instance_id,
        "NodeCount": node_count,
        "Provider": instance.provider,
    }


def _node_counts(deps: Deps, instances: list[InstanceRow]) -> dict[str, int]:
    with deps.engine.connect() as conn:
        return {i.instance_id: len(repo.list_nodes(conn, i.instance_id)) for i in instances}


def describe_instances(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    with deps.engine.connect() as conn:
        rows = repo.list_instances(conn, ctx.account_id)
    if params["InstanceIds"]:
        wanted = {i.strip() for i in params["InstanceIds"].split(",") if i.strip()}
        rows = [r for r in rows if r.instance_id in wanted]
    for key, column in (
        ("InstanceStatus", "status"),
        ("ArchitectureType", "architecture"),
        ("EngineVersion", "engine_version"),
        ("NodeType", "node_type"),
        ("ZoneId", "zone_id"),
        ("ChargeType", "charge_type"),
    ):
        if params[key]:
            rows = [r for r in rows if getattr(r, column) == params[key]]
    if params["SearchKey"]:
        key = params["SearchKey"]
        rows = [r for r in rows if key in r.instance_id or key in r.name]
    page, size = params["PageNumber"], params["PageSize"]
    shown = rows[(page - 1) * size : page * size]
    counts = _node_counts(deps, shown)
    return {
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": len(rows),
        "Instances": {
            "KVStoreInstance": [_instance_fields(deps, r, counts[r.instance_id]) for r in shown]
        },
    }


def describe_instance_attribute(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = load_instance(ctx, params["InstanceId"])
    counts = _node_counts(ctx.deps, [instance])
    return {
        "Instances": {
            "DBInstanceAttribute": [
                {
                    **_instance_fields(ctx.deps, instance, counts[instance.instance_id]),
                    "Engine": "Redis",
                }
            ]
        }
    }


# --------------------------------------------------------------------------- DeleteInstance


def delete_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    instance = load_instance(ctx, params["InstanceId"])
    if instance.status == CREATING:
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)
    with task_slot(deps, instance.instance_id, "DeleteInstance"):
        with deps.engine.connect() as conn:
            rows = repo.list_nodes(conn, instance.instance_id)
        if instance.provider == LOCAL:
            deps.local.delete_instance(instance, rows)
        else:
            _remove_management_user(ctx, instance, rows)
        with deps.engine.begin() as conn:
            repo.delete_instance(conn, instance.instance_id)
    deps.reconciler.forget(instance.instance_id)
    return {}


# --------------------------------------------------------------------------- RegisterInstance


def _remove_management_user(ctx: CallContext, instance: InstanceRow, rows: list[NodeRow]) -> None:
    """Forgetting a registered deployment takes rkvstore's user off it (accounts stay)."""
    deps = ctx.deps
    assert instance.admin_password_encrypted is not None
    admin = deps.box.open(instance.admin_password_encrypted)
    nodes = [
        deps.redis.node(a, admin, user=instance.admin_user or "default")
        for a in node_addresses(rows)
    ]
    try:
        deps.redis.apply(nodes, [UserChange(MANAGEMENT_USER, None)])
    except NodeFailure as exc:
        log.warning(
            "request %s: management user left on %s: %s", ctx.request_id, instance.instance_id, exc
        )


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port_text = endpoint.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ApiError(errors.INVALID_PARAMETER, name="Endpoint")
    return host, int(port_text)


def register_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Adopt an existing deployment: discover it, put rkvstore's management user on every node."""
    deps = ctx.deps
    host, port = _parse_endpoint(params["Endpoint"])
    admin_user: str | None = params["AdminUserName"]
    admin_password: Secret = params["AdminPassword"]
    try:
        topology = discover(
            host, port, admin_user, admin_password, timeout=deps.settings.node_timeout_seconds
        )
    except DiscoveryError as exc:
        log.info("request %s: registering %s failed: %s", ctx.request_id, params["Endpoint"], exc)
        raise ApiError(errors.INVALID_ENDPOINT) from exc
    if topology.cluster:
        # Cluster deployments are adopted through CLUSTER NODES by the cluster engine.
        raise ApiError(errors.INVALID_PARAMETER, name="Endpoint")
    if int(topology.version.split(".")[0]) < 6:
        raise ApiError(errors.ENGINE_VERSION_FORMAT)
    with deps.engine.connect() as conn:
        # Two registrations of one node would fight over its management user.
        if repo.nodes_in_use(conn, [(n.host, n.port) for n in topology.nodes]):
            raise ApiError(errors.INVALID_ENDPOINT_REGISTERED)
    if params["DryRun"]:
        raise ApiError(errors.DRY_RUN_OPERATION)

    instance_id = new_instance_id()
    mgmt = random_password()
    admin_nodes = [
        deps.redis.node(NodeAddress(n.host, n.port), admin_password, user=admin_user or "default")
        for n in topology.nodes
    ]
    user = management_user(mgmt)
    try:
        deps.redis.apply(admin_nodes, [UserChange(user.name, user)])
    except NodeFailure as exc:
        log.warning("request %s: management user not set on every node: %s", ctx.request_id, exc)
        raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
    master = topology.master
    name = params["InstanceName"] or instance_id
    with deps.engine.begin() as conn:
        repo.insert_instance(
            conn,
            {
                "instance_id": instance_id,
                "account_id": ctx.account_id,
                "name": name,
                "status": NORMAL,
                "provider": REGISTERED,
                "engine_version": topology.engine_version,
                "architecture": "standard",
                "node_type": MASTER_SLAVE if len(topology.nodes) > 1 else STAND_ALONE,
                "shard_count": 1,
                "zone_id": deps.settings.zone_ids[0],
                "instance_class": "registered",
                "charge_type": "PostPaid",
                "host": master.host,
                "port": master.port,
                "mgmt_password_encrypted": deps.box.seal(mgmt),
                "admin_user": admin_user,
                "admin_password_encrypted": deps.box.seal(admin_password),
            },
        )
        repo.replace_nodes(
            conn,
            instance_id,
            [
                {
                    "node_id": f"{instance_id}-{i}",
                    "host": n.host,
                    "port": n.port,
                    "role": n.role,
                    "shard": n.shard,
                    "master_node_id": f"{instance_id}-0" if n.role == "replica" else None,
                }
                for i, n in enumerate([master, *[n for n in topology.nodes if n is not master]])
            ],
        )
    return {
        "InstanceId": instance_id,
        "InstanceName": name,
        "InstanceStatus": NORMAL,
        "EngineVersion": topology.engine_version,
        "ConnectionDomain": master.host,
        "Port": master.port,
        "NodeCount": len(topology.nodes),
    }
