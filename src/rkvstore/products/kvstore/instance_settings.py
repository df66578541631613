"""The instance updates (issue 11): name, default password, release protection,
Redis parameters and the whitelist.

Each change that reaches the nodes takes the instance's task slot and reaches
every node or none, like the account actions. Redis parameters are not kept
in the database: the nodes (and their config files) are their record, and a
Describe reads them there.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from rkvstore import errors
from rkvstore.domain.accounts import DEFAULT_USER
from rkvstore.engine import bounded
from rkvstore.engine import parameters as node_parameters
from rkvstore.engine.acl import NodeFailure, UserChange
from rkvstore.engine.node_facts import DEFAULT_IP_GROUP, security_ips
from rkvstore.engine.redis_engine import desired_user
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import account_rules as rules
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.products.kvstore import parameter_rules as allowed
from rkvstore.products.kvstore.accounts import _set_requirepass
from rkvstore.products.kvstore.instance_surface import node_facts
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.instance_nodes import (
    LOCAL,
    NORMAL,
    apply_changes,
    instance_nodes,
    is_legacy,
    load_instance,
    recorded_nodes,
    require_normal,
)
from rkvstore.services.task_slot import recording, task_slot
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.instances")

MAX_SECURITY_IPS = 1000


# ------------------------------------------------------------------ ModifyInstanceAttribute


def modify_instance_attribute(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    instance = load_instance(ctx, params["InstanceId"])
    password: Secret | None = params["NewPassword"]
    if password is not None:
        rules.check_password(password)
    values: dict[str, Any] = {}
    if params["InstanceName"] is not None:
        values["name"] = params["InstanceName"]
    if params["InstanceReleaseProtection"] is not None:
        values["release_protection"] = params["InstanceReleaseProtection"]
    if password is None and not values:
        return {}
    require_normal(instance)
    with task_slot(deps, instance.instance_id, "ModifyInstanceAttribute") as task:
        instance = load_instance(ctx, instance.instance_id)
        require_normal(instance)
        if password is None:
            with recording(deps, task) as conn:
                repo.update_instance(conn, instance.instance_id, **values)
            return {}
        digest = password.sha256_hex()
        legacy = is_legacy(instance)
        if legacy:
            names = [instance.instance_id]
            _set_requirepass(ctx, instance, task, password)
        else:
            names = _set_default_password(ctx, instance, digest)
        with recording(deps, task) as conn:
            for name in names:
                repo.set_account_password(conn, instance.instance_id, name, digest)
            if legacy:
                repo.set_legacy_password(conn, instance.instance_id, deps.box.seal(password))
            if values:
                repo.update_instance(conn, instance.instance_id, **values)
    return {}


def _set_default_password(ctx: CallContext, instance: InstanceRow, digest: str) -> list[str]:
    """The instance's default accounts (``default``, the instance ID's) on every node, or none.

    Both are the "default account" of Alibaba's NewPassword: created with one
    password, they keep one. The names changed are returned.
    """
    deps = ctx.deps
    with deps.engine.connect() as conn:
        found = [
            repo.get_account(conn, instance.instance_id, n)
            for n in (DEFAULT_USER, instance.instance_id)
        ]
    accounts = [a for a in found if a is not None]
    if not accounts:
        raise ApiError(kvstore_errors.ACCOUNT_NAME_NOT_FOUND)
    if any(a.managed_by is not None for a in accounts):  # a KMS secret rotates it
        raise ApiError(kvstore_errors.ACCOUNT_MANAGED_BY_SECRET)
    changes = [
        UserChange(a.name, desired_user(a.name, digest, a.privilege, instance.engine_version))
        for a in accounts
    ]
    apply_changes(deps, instance, changes)
    return [a.name for a in accounts]


# --------------------------------------------------------------------------- parameters


def _require_acl_engine(instance: InstanceRow) -> None:
    """Before 6.0 rkvstore reaches nodes only through requirepass: parameters are not managed."""
    if is_legacy(instance):
        raise ApiError(kvstore_errors.ENGINE_VERSION_FORMAT)


def _rows(deps: Deps, instance: InstanceRow) -> list[NodeRow]:
    with deps.engine.connect() as conn:
        return repo.list_nodes(conn, instance.instance_id)


def _master(rows: list[NodeRow]) -> NodeRow:
    return sorted(rows, key=lambda r: (r.role != "master", r.shard, r.node_id))[0]


def _read_one(deps: Deps, instance: InstanceRow, row: NodeRow) -> dict[str, str] | None:
    """The allow-listed parameters as ``row``'s node holds them; ``None``: it cannot say."""
    node = recorded_nodes(deps, instance, [row])[0]
    with bounded.exchange(deps.settings.node_timeout_seconds):
        seen = node_parameters.read([node], allowed.NAMES)[node.label]
    if seen.error is not None:
        log.warning(
            "instance %s: node %s did not say its parameters: %s",
            instance.instance_id,
            node.label,
            seen.error,
        )
        return None
    return seen.values


def attribute_config(deps: Deps, instance: InstanceRow, rows: list[NodeRow]) -> str:
    """DescribeInstanceAttribute's ``Config``: the master's allow-listed parameters
    (``rows``: the instance's nodes, as just read).

    ``"{}"`` while the instance is not Normal, before 6.0, or when the master
    does not answer within the node timeout (the Describe still answers).
    """
    if instance.status != NORMAL or is_legacy(instance):
        return "{}"
    if not rows:
        return "{}"
    values = _read_one(deps, instance, _master(rows))
    return "{}" if values is None else allowed.config_json(values)


def _values_of(ctx: CallContext, instance: InstanceRow, node_id: str | None) -> dict[str, str]:
    deps = ctx.deps
    _require_acl_engine(instance)
    require_normal(instance)
    rows = _rows(deps, instance)
    if node_id is None:
        row = _master(rows)
    else:
        chosen = [r for r in rows if r.node_id == node_id]
        if not chosen:
            raise ApiError(errors.INVALID_PARAMETER, name="NodeId")
        row = chosen[0]
    values = _read_one(deps, instance, row)
    if values is None:
        raise ApiError(errors.SERVICE_UNAVAILABLE)
    return values


def describe_instance_config(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = load_instance(ctx, params["InstanceId"])
    values = _values_of(ctx, instance, None)
    return {
        "Config": allowed.config_json(values),
        # What is true of every rkvstore instance: Redis's own asynchronous
        # replication, no Sentinel compatibility mode.
        "ParamReplMode": "async",
        "ParamNoLooseSentinelEnabled": "no",
        "ParamNoLooseSentinelPasswordFreeAccess": "no",
        "ParamNoLooseSentinelPasswordFreeCommands": "",
        "ParamSentinelCompatEnable": "0",
    }


def describe_parameters(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    instance = load_instance(ctx, params["DBInstanceId"])
    values = _values_of(ctx, instance, params["NodeId"])
    items = [
        {
            "ParameterName": p.name,
            "ParameterValue": values.get(p.name, ""),
            "ModifiableStatus": "true",
            "ForceRestart": "false",
            "CheckingCode": p.checking_code,
            "ParameterDescription": p.description,
        }
        for p in allowed.ALLOWED.values()
    ]
    return {
        "Engine": "redis",
        "EngineVersion": instance.engine_version,
        # Set parameters are persisted as they are set: the file holds what runs.
        "ConfigParameters": {"Parameter": items},
        "RunningParameters": {"Parameter": items},
    }


def modify_instance_config(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.deps
    instance = load_instance(ctx, params["InstanceId"])
    values = allowed.parse_config(params["Config"])
    _require_acl_engine(instance)
    require_normal(instance)
    if not values:
        return {}
    local = instance.provider == LOCAL
    if local and not deps.local.holds(instance, _rows(deps, instance)):
        # Its redis.conf files belong to another rkvstore process's data dir.
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)
    with task_slot(deps, instance.instance_id, "ModifyInstanceConfig"):
        instance = load_instance(ctx, instance.instance_id)
        require_normal(instance)
        rows = _rows(deps, instance)
        with bounded.exchange(deps.settings.node_timeout_seconds):
            nodes = instance_nodes(deps, instance, rows)
            seen = node_parameters.read(nodes, list(values))
        silent = {label: p.error for label, p in seen.items() if p.error is not None}
        if silent:
            log.warning(
                "request %s: parameters of %s not changed, nodes did not answer: %s",
                ctx.request_id,
                instance.instance_id,
                silent,
            )
            raise ApiError(errors.SERVICE_UNAVAILABLE)
        if not local:  # local nodes: rkvstore writes their redis.conf itself
            for node in nodes:
                if not seen[node.label].config_file:
                    raise ApiError(kvstore_errors.NO_CONFIG_FILE, node=node.label)
        before = {label: p.values for label, p in seen.items()}
        try:
            with bounded.exchange(deps.settings.node_timeout_seconds):
                node_parameters.set_all_or_nothing(nodes, before, values, rewrite=not local)
        except NodeFailure as exc:
            log.warning(
                "request %s: parameters of %s rolled back: %s",
                ctx.request_id,
                instance.instance_id,
                exc,
            )
            raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
        if local:
            try:
                deps.local.write_parameters(instance, rows, values)
            except OSError as exc:
                log.warning(
                    "request %s: parameters of %s not written to redis.conf (%s); rolled back",
                    ctx.request_id,
                    instance.instance_id,
                    exc,
                )
                node_parameters.put_back(nodes, before, list(values), rewrite=False)
                raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
    log.info(
        "request %s: parameters %s of %s set",
        ctx.request_id,
        ", ".join(sorted(values)),
        instance.instance_id,
    )
    return {}


# --------------------------------------------------------------------------- ModifySecurityIps


def _networks(text: str) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries or len(entries) > MAX_SECURITY_IPS:
        raise ApiError(kvstore_errors.SECURITY_IPS_FORMAT)
    try:
        return {ipaddress.ip_network(e, strict=False) for e in entries}
    except ValueError as exc:
        raise ApiError(kvstore_errors.SECURITY_IPS_FORMAT) from exc


def modify_security_ips(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Accepted only when it asks for what is already true (a no-op); else refused.

    Redis cannot filter clients by address, so rkvstore cannot change who may connect.
    What is true is read as DescribeSecurityIps reads it, on every engine version
    (before 6.0 through ``requirepass``).
    """
    instance = load_instance(ctx, params["InstanceId"])
    asked = _networks(params["SecurityIps"])
    require_normal(instance)
    current = security_ips(node_facts(ctx, instance))
    now = {ipaddress.ip_network(current)}
    mode = params["ModifyMode"] or "Cover"
    wanted = asked if mode == "Cover" else now | asked if mode == "Append" else now - asked
    group = params["SecurityIpGroupName"] or DEFAULT_IP_GROUP
    # A group attribute ("hidden") would be a record no Describe could answer truly.
    hidden = params["SecurityIpGroupAttribute"] is not None
    if group != DEFAULT_IP_GROUP or hidden or wanted != now:
        raise ApiError(kvstore_errors.SECURITY_IPS_NOT_ENFORCEABLE, current=current)
    return {}
