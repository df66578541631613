"""The instance actions (api.md §4): CreateInstance on the local provider, Describe*, Delete."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rkvstore import errors
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.acl import NodeFailure, UserChange
from rkvstore.engine.local import LocalNodeError
from rkvstore.errors import ApiError
from rkvstore.iam import visibility
from rkvstore.iam.policy import decide_resource
from rkvstore.products.kvstore import account_rules as rules
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.products.kvstore import instance_surface
from rkvstore.products.kvstore.account_rules import super_account
from rkvstore.products.kvstore.instance_settings import attribute_config
from rkvstore.products.kvstore.registered import remove_management_user
from rkvstore.secret import Secret
from rkvstore.services import audit
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.instance_nodes import (
    CLUSTER,
    CREATING,
    LOCAL,
    MASTER_SLAVE,
    NORMAL,
    REGISTERED,
    STAND_ALONE,
    STANDARD,
    UNAVAILABLE,
    desired_users,
    instance_nodes,
    is_legacy,
    load_instance,
    new_instance_id,
    node_addresses,
    random_password,
    require_normal,
)
from rkvstore.services.task_slot import recording, slot_again, task_slot
from rkvstore.services.tasks import TaskLost
from rkvstore.store import listing, repo
from rkvstore.store.db import database_unavailable, describe_database_error
from rkvstore.store.repo import InstanceRow
from rkvstore.store.tables import instances as instances_table

log = logging.getLogger("rkvstore.instances")

NODE_TYPES = {
    "STAND_ALONE": STAND_ALONE,
    "single": STAND_ALONE,
    "MASTER_SLAVE": MASTER_SLAVE,
    "double": MASTER_SLAVE,
}
MAX_SHARDS = 32
# Plans of a new instance's ports, should the ones picked be taken meanwhile.
PLAN_ATTEMPTS = 3


# --------------------------------------------------------------------------- CreateInstance


def create_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    settings = deps.settings
    if params["RegionId"] is not None and params["RegionId"] != settings.region:
        raise ApiError(kvstore_errors.INVALID_REGION)
    instance_surface.refuse_what_create_cannot_make(params)
    zone = params["ZoneId"] or settings.zone_ids[0]
    if zone not in settings.zone_ids:
        raise ApiError(kvstore_errors.INVALID_ZONE)
    password: Secret | None = params["Password"]
    if password is not None:
        rules.check_password(password)
    node_type = NODE_TYPES.get(params["NodeType"] or MASTER_SLAVE)
    if node_type is None:
        raise ApiError(errors.INVALID_PARAMETER, name="NodeType")
    shards = params["ShardCount"] or 1
    if shards > MAX_SHARDS:
        raise ApiError(errors.INVALID_PARAMETER, name="ShardCount")
    binary = deps.local.binary_for(params["EngineVersion"])
    if binary is None:
        raise ApiError(kvstore_errors.ENGINE_VERSION_FORMAT)
    if params["DryRun"]:
        raise ApiError(kvstore_errors.DRY_RUN_OPERATION)

    instance_id = new_instance_id()
    name = params["InstanceName"] or instance_id
    mgmt = random_password()
    default_password = password or random_password()
    replicas = node_type == MASTER_SLAVE
    node_count = shards * (2 if replicas else 1)
    digest = default_password.sha256_hex()
    values = {
        "instance_id": instance_id,
        "account_id": ctx.account_id,
        "name": name,
        "status": CREATING,
        "provider": LOCAL,
        "engine_version": binary.engine_version,
        "architecture": CLUSTER if shards > 1 else STANDARD,
        "node_type": node_type,
        "shard_count": shards,
        "zone_id": zone,
        "instance_class": params["InstanceClass"] or "redis.master.small.default",
        "charge_type": params["ChargeType"] or "PostPaid",
        "host": "127.0.0.1",
        "mgmt_password_encrypted": deps.box.seal(mgmt),
        "admin_user": None,
        "admin_password_encrypted": None,
    }
    for _attempt in range(PLAN_ATTEMPTS):
        with deps.engine.connect() as conn:
            in_use = frozenset(repo.ports_in_use(conn, ["127.0.0.1"]))
        node_rows = plan_nodes(deps, instance_id, shards, replicas=replicas, avoid=in_use)
        try:
            with deps.engine.begin() as conn:
                _claim_quota(ctx, conn, node_count)
                repo.insert_instance(conn, {**values, "port": node_rows[0]["port"]})
                repo.replace_nodes(conn, instance_id, node_rows)
                for account_name in ("default", instance_id):
                    repo.insert_account(conn, super_account(instance_id, account_name, digest))
                audit.name_resource(instance_id)
                audit.write_in(conn)
            break
        except IntegrityError:
            # A port the database records was taken between the look and the insert
            # (a registration, another process): plan again, around it.
            audit.rolled_back()
            deps.local.release_ports([int(r["port"]) for r in node_rows])
            log.info(
                "request %s: a planned port was taken meanwhile; planning again", ctx.request_id
            )
        except BaseException:
            deps.local.release_ports([int(r["port"]) for r in node_rows])
            raise
    else:
        raise ApiError(errors.SERVICE_UNAVAILABLE)
    resume_creation(deps, instance_id)
    return {
        "InstanceId": instance_id,
        "InstanceName": name,
        "InstanceStatus": CREATING,
        "ConnectionDomain": "127.0.0.1",
        "Port": node_rows[0]["port"],
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


def _claim_quota(ctx: CallContext, conn: Connection, nodes: int) -> None:
    """The tenant's quota of local instances and nodes, counted under its own row's lock:
    two creations at once are counted one after the other (on SQLite the first write
    takes the database's one write lock; on PostgreSQL the tenant's row is locked)."""
    settings = ctx.deps.settings
    repo.lock_tenant(conn, ctx.account_id)
    instances_now, nodes_now = repo.local_usage(conn, ctx.account_id)
    if instances_now + 1 > settings.tenant_max_instances:
        raise ApiError(
            kvstore_errors.QUOTA_EXCEEDED_INSTANCES, quota=str(settings.tenant_max_instances)
        )
    if nodes_now + nodes > settings.tenant_max_nodes:
        raise ApiError(kvstore_errors.QUOTA_EXCEEDED_NODES, quota=str(settings.tenant_max_nodes))


def plan_nodes(
    deps: Deps,
    instance_id: str,
    shards: int,
    *,
    replicas: bool,
    avoid: frozenset[int] = frozenset(),
) -> list[dict[str, Any]]:
    """Node rows of a new local instance: a master per shard, and a replica each if asked.

    Masters come first, so the first row is where clients connect. No port in
    ``avoid`` (the ports the database records on this host) is used.
    """
    per_shard = 2 if replicas else 1
    ports = deps.local.allocate_ports(shards * per_shard, cluster=shards > 1, avoid=avoid)
    rows: list[dict[str, Any]] = []
    for shard in range(shards):
        rows.append(
            {
                "node_id": f"{instance_id}-{shard}",
                "host": "127.0.0.1",
                "port": ports[shard],
                "role": "master",
                "shard": shard,
                "master_node_id": None,
            }
        )
    if replicas:
        for shard in range(shards):
            rows.append(
                {
                    "node_id": f"{instance_id}-{shards + shard}",
                    "host": "127.0.0.1",
                    "port": ports[shards + shard],
                    "role": "replica",
                    "shard": shard,
                    "master_node_id": f"{instance_id}-{shard}",
                }
            )
    return rows


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


# A build waits this long at most for a database that is away before it starts.
BUILD_PATIENCE_SECONDS = 600.0


class _NotStarted(Exception):
    """The database was away before the build touched any node: it may simply be tried again."""


def _build_local_instance(deps: Deps, instance_id: str) -> None:
    """Build the nodes, then record ``Normal`` (or ``Unavailable``); never left ``Creating``
    by a database that was away for a while."""
    deadline = time.monotonic() + BUILD_PATIENCE_SECONDS
    delay, warned = 0.2, False
    outcome: str | None = UNAVAILABLE
    while True:
        try:
            outcome = _build_once(deps, instance_id)
            break
        except _NotStarted as exc:
            if time.monotonic() >= deadline:
                log.warning("creating instance %s: the database stayed away", instance_id)
                break
            if not warned:
                warned = True
                log.warning(
                    "creating instance %s waits for the database (%s)",
                    instance_id,
                    describe_database_error(exc.__cause__ or exc),
                )
        except Exception:
            log.exception("creating instance %s failed", instance_id)
            break
        time.sleep(delay)
        delay = min(2 * delay, deps.settings.reconcile_interval_seconds)
    if outcome is not None:
        _record_build(deps, instance_id, outcome, deadline)


def _build_once(deps: Deps, instance_id: str) -> str | None:
    """One try: ``Normal``, or ``None`` when there is nothing to build (any more)."""
    # Another process may be building it still (a restart of several on one
    # database): wait, up to its lease, for it to finish or to be taken over.
    patience = deps.settings.task_lease_seconds + 5
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(deps.slots.hold(instance_id, "CreateInstance", wait=patience))
            with deps.engine.connect() as conn:
                instance = repo.get_instance_any_tenant(conn, instance_id)
                rows = repo.list_nodes(conn, instance_id)
            if instance is None or instance.status != CREATING:
                return None  # built, or deleted, meanwhile by another process
            desired = desired_users(deps, instance)
        except SQLAlchemyError as exc:
            if database_unavailable(exc):
                raise _NotStarted(instance_id) from exc
            raise
        deps.local.start_instance(instance, rows, desired)
        # Once more through the engine: every node now shows each user as
        # Redis renders it, which is what the reconciler compares with.
        mgmt = deps.box.open(instance.mgmt_password_encrypted)
        deps.redis.apply(
            deps.redis.nodes(node_addresses(rows), mgmt),
            [UserChange(u.name, u) for u in desired],
        )
    # Normal only once the slot is free, so the first call on it finds it free.
    return NORMAL


def _record_build(deps: Deps, instance_id: str, status: str, deadline: float) -> None:
    """The build's outcome, written as soon as the database answers."""
    delay, warned = 0.2, False
    while True:
        try:
            with deps.engine.begin() as conn:
                repo.set_instance_status(conn, instance_id, status)
            log.info("instance %s is %s", instance_id, status)
            return
        except SQLAlchemyError as exc:
            if not database_unavailable(exc) or time.monotonic() >= deadline:
                log.warning(
                    "instance %s: %s not recorded (%s); a restart resumes it",
                    instance_id,
                    status,
                    describe_database_error(exc),
                )
                return
            if not warned:
                warned = True
                log.warning(
                    "instance %s: recording %s waits for the database (%s)",
                    instance_id,
                    status,
                    describe_database_error(exc),
                )
        time.sleep(delay)
        delay = min(2 * delay, deps.settings.reconcile_interval_seconds)


# --------------------------------------------------------------------------- Describe*


def _instance_fields(deps: Deps, instance: InstanceRow, node_count: int) -> dict[str, Any]:
    """DescribeInstanceAttribute's fields (instance_surface.py says which and why)."""
    return {
        **_common_fields(deps, instance, node_count),
        **instance_surface.attribute_fields(instance),
    }


def _listing_fields(deps: Deps, instance: InstanceRow, node_count: int) -> dict[str, Any]:
    """DescribeInstances' fields: from the row alone, no node read per instance."""
    return {
        **_common_fields(deps, instance, node_count),
        **instance_surface.listing_fields(instance),
    }


def _common_fields(deps: Deps, instance: InstanceRow, node_count: int) -> dict[str, Any]:
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


def describe_instances(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Filtered, counted and paged by the database, a RAM user's permissions included."""
    deps = ctx.deps
    page, size = params["PageNumber"], params["PageSize"]
    wanted = None
    if params["InstanceIds"]:
        wanted = frozenset(i.strip() for i in params["InstanceIds"].split(",") if i.strip())
    query = listing.InstanceFilter(
        ctx.account_id,
        instance_ids=wanted,
        equals={key: params[key] for key in listing.INSTANCE_EQUALS if params[key]},
        search=params["SearchKey"],
    )
    with deps.engine.connect() as conn:
        total, shown = _visible_page(ctx, conn, query, (page - 1) * size, size)
    return {
        "PageNumber": page,
        "PageSize": size,
        "TotalCount": total,
        "Instances": {"KVStoreInstance": [_listing_fields(deps, r, n) for r, n in shown]},
    }


def _visible_page(
    ctx: CallContext, conn: Connection, query: listing.InstanceFilter, offset: int, limit: int
) -> tuple[int, list[tuple[InstanceRow, int]]]:
    """(how many the caller may see, the page of them with their node counts).

    A RAM user sees an instance only if its policies allow DescribeInstances on that
    instance's ARN, so a Deny on one instance hides it. Its policies become one SQL
    condition on the id where they can (``iam.visibility``); where they cannot, the
    ids (and only the ids) are evaluated here, one ARN at a time.
    """
    if query.instance_ids is not None and not query.instance_ids:
        return 0, []
    if ctx.caller.is_root:
        return listing.page_instances(conn, query, offset, limit)
    granted = visibility.caller_rules(
        conn, ctx.caller, "kvstore:DescribeInstances", ctx.condition_context()
    )
    prefix = f"acs:kvstore:{ctx.region}:{ctx.account_id}:instance/"
    dialect = conn.dialect.name
    condition = visibility.id_condition(granted, prefix, instances_table.c.instance_id, dialect)
    if condition is True:  # allowed on every instance: as the root
        return listing.page_instances(conn, query, offset, limit)
    if condition is False:
        return 0, []
    if condition is not None:
        return listing.page_instances(conn, query, offset, limit, also=condition)
    ids = [
        i
        for i in listing.instance_ids(conn, query)
        if decide_resource(granted, prefix + i) == "Allow"
    ]
    shown = listing.instances_by_id(conn, ids[offset : offset + limit])
    counts = listing.node_counts(conn, [r.instance_id for r in shown])
    return len(ids), [(r, counts[r.instance_id]) for r in shown]


def describe_instance_attribute(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = load_instance(ctx, params["InstanceId"])
    with ctx.deps.single.connect() as conn:  # the count and Config's master from one read
        rows = repo.list_nodes(conn, instance.instance_id)
    return {
        "Instances": {
            "DBInstanceAttribute": [
                {
                    **_instance_fields(ctx.deps, instance, len(rows)),
                    "Engine": "Redis",
                    "InstanceReleaseProtection": instance.release_protection,
                    "Config": attribute_config(ctx.deps, instance, rows),
                }
            ]
        }
    }


# --------------------------------------------------------------------------- DeleteInstance


# A registration takes seconds; one still Creating after this was abandoned (its
# process died, or the database was away when it failed) and may be deleted.
ABANDONED_REGISTRATION_SECONDS = 120.0


def _abandoned_registration(instance: InstanceRow) -> bool:
    if instance.provider != REGISTERED:
        return False
    created = instance.created_at
    if created.tzinfo is None:  # SQLite gives naive datetimes back
        created = created.replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds() > ABANDONED_REGISTRATION_SECONDS


def delete_instance(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    instance = load_instance(ctx, params["InstanceId"])
    if instance.status == CREATING and not _abandoned_registration(instance):
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)
    with deps.engine.connect() as conn:
        rows = repo.list_nodes(conn, instance.instance_id)
    if instance.provider == LOCAL and not deps.local.holds(instance, rows):
        # Its processes and files belong to another rkvstore process's data
        # dir, which would restart what this one stopped.
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)
    if instance.release_protection:
        raise ApiError(kvstore_errors.RELEASE_PROTECTED)
    with task_slot(deps, instance.instance_id, "DeleteInstance"):
        # Protection may have been set while this call waited for the slot.
        if load_instance(ctx, instance.instance_id).release_protection:
            raise ApiError(kvstore_errors.RELEASE_PROTECTED)
        if instance.provider == LOCAL:
            deps.local.delete_instance(instance, rows)
        elif not is_legacy(instance):  # before 6.0 rkvstore added no user
            remove_management_user(ctx, instance, rows)
        with deps.engine.begin() as conn:
            repo.delete_instance(conn, instance.instance_id)
            audit.write_in(conn)
    deps.reconciler.forget(instance.instance_id)
    return {}


# ------------------------------------------------------------------ RotateManagementPassword


def _restore_masterauth(ctx: CallContext, instance_id: str) -> None:
    """Replicas back on the recorded management login, under the slot again (the
    taker may be a rotation that has not recorded its own yet)."""
    deps = ctx.deps
    try:
        with slot_again(deps, instance_id, "RotateManagementPassword") as current:
            if current is not None:
                deps.local.manager.set_management_password(
                    instance_id, deps.box.open(current.mgmt_password_encrypted)
                )
    except (ApiError, LocalNodeError) as exc:
        log.warning(
            "request %s: masterauth of %s not restored: %s", ctx.request_id, instance_id, exc
        )


def rotate_management_password(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """(extension) A new password for rkvstore's management user, without breaking replication.

    The new password is added beside the old one on every node (all or
    nothing), replicas learn it (``CONFIG SET masterauth``), the database
    records it, and only then is the old one removed. A replica that
    reconnects at any moment finds a password its master accepts.
    """
    deps = ctx.deps
    instance = load_instance(ctx, params["InstanceId"])
    if is_legacy(instance):  # no management user: its login is the account's password
        raise ApiError(kvstore_errors.ENGINE_VERSION_FORMAT)
    require_normal(instance)
    with deps.engine.connect() as conn:
        rows = repo.list_nodes(conn, instance.instance_id)
    if instance.provider == LOCAL and not deps.local.holds(instance, rows):
        # Only the process that supervises the nodes can give them masterauth.
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)
    with task_slot(deps, instance.instance_id, "RotateManagementPassword") as task:
        # Read again under the slot: a rotation just finished changed the login.
        instance = load_instance(ctx, instance.instance_id)
        require_normal(instance)
        old = deps.box.open(instance.mgmt_password_encrypted)
        new = random_password()
        nodes = instance_nodes(deps, instance)
        add = [["ACL", "SETUSER", MANAGEMENT_USER, f"#{new.sha256_hex()}"]]
        try:
            deps.redis.run_all_or_nothing(
                nodes, add, undo=[["ACL", "SETUSER", MANAGEMENT_USER, f"!{new.sha256_hex()}"]]
            )
        except NodeFailure as exc:
            log.warning(
                "request %s: rotation on %s rolled back: %s",
                ctx.request_id,
                instance.instance_id,
                exc,
            )
            raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
        if instance.provider == LOCAL:
            try:
                deps.local.manager.set_management_password(instance.instance_id, new)
            except LocalNodeError as exc:
                # Back to the old password everywhere; the nodes never lost it.
                log.warning(
                    "request %s: masterauth not set on %s (%s); rolling back",
                    ctx.request_id,
                    instance.instance_id,
                    exc,
                )
                with contextlib.suppress(LocalNodeError):
                    deps.local.manager.set_management_password(instance.instance_id, old)
                undo = [["ACL", "SETUSER", MANAGEMENT_USER, f"!{new.sha256_hex()}"]]
                deps.redis.fanout.run(instance_nodes(deps, instance), undo)
                raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
        try:
            with recording(deps, task) as conn:
                repo.set_management_password(conn, instance.instance_id, deps.box.seal(new))
        except ApiError as exc:
            # The nodes keep the recorded login (a pass resets the user to it);
            # replicas must use it too. Taken over while stalled: under the slot
            # again (the taker may be a rotation). The database away: the slot is
            # still ours, and the old password is the one it holds.
            if instance.provider == LOCAL:
                if isinstance(exc.__cause__, TaskLost):
                    _restore_masterauth(ctx, instance.instance_id)
                else:
                    with contextlib.suppress(LocalNodeError):
                        deps.local.manager.set_management_password(instance.instance_id, old)
            raise
        refreshed = load_instance(ctx, instance.instance_id)
        drop = [["ACL", "SETUSER", MANAGEMENT_USER, f"!{old.sha256_hex()}"]]
        results = deps.redis.fanout.run(instance_nodes(deps, refreshed), drop)
        if any(r.error for r in results.values()):
            deps.reconciler.mark_dirty(instance.instance_id)  # it resets the user to the new one
    log.info("request %s: management password of %s rotated", ctx.request_id, instance.instance_id)
    return {}
