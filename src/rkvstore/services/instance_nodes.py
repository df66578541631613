"""An instance as every product sees it: its states, its lookup, its nodes, rkvstore's user."""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Sequence

from rkvstore import errors
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine import bounded
from rkvstore.engine.acl import DesiredUser, Node, NodeFailure, UserChange
from rkvstore.engine.addresses import allowed, parse_networks
from rkvstore.engine.discovery import DiscoveryError, FoundNode, discover
from rkvstore.engine.node_tls import NodeTls
from rkvstore.engine.redis_engine import NodeAddress, desired_user, management_user
from rkvstore.errors import ApiError
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext, Deps, current_request_id
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow

log = logging.getLogger("rkvstore.instances")

CREATING, NORMAL, UNAVAILABLE = "Creating", "Normal", "Unavailable"
STAND_ALONE, MASTER_SLAVE = "STAND_ALONE", "MASTER_SLAVE"
LOCAL, REGISTERED = "local", "registered"
STANDARD, CLUSTER = "standard", "cluster"
# Where the nodes keep accounts (AccountsPersistence): an ACL file or redis.conf,
# or memory only (a node started with options alone; the reconciler watches it).
FILE, MEMORY = "File", "Memory"
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
    with ctx.deps.single.connect() as conn:
        instance = repo.get_instance(conn, ctx.account_id, instance_id)
    if instance is None:
        raise ApiError(errors.INSTANCE_NOT_FOUND)
    return instance


def require_normal(instance: InstanceRow) -> None:
    if instance.status != NORMAL:
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)


def is_legacy(instance: InstanceRow) -> bool:
    """Redis before 6.0: no ACL, one account (the instance ID's), ``requirepass``."""
    return int(instance.engine_version.split(".")[0]) < 6


def pending_passwords(deps: Deps, instance: InstanceRow) -> list[Secret]:
    """Redis before 6.0: passwords of changes begun but maybe never recorded."""
    return [deps.box.open(t) for t in repo.pending_tokens(instance.pending_password_encrypted)]


def node_addresses(rows: list[NodeRow]) -> list[NodeAddress]:
    return [NodeAddress(r.host, r.port) for r in rows]


def instance_nodes(
    deps: Deps, instance: InstanceRow, rows: list[NodeRow] | None = None
) -> list[Node]:
    """Every node a change must reach, as rkvstore's management user.

    A registered deployment is looked at again first, so that a replica or
    shard added since registration is changed too (and gets the management
    user, through the stored admin login). A node that no longer answers stays
    on the list: a change must not pretend it reached it.
    """
    return deps.redis.nodes(
        instance_addresses(deps, instance, rows),
        deps.box.open(instance.mgmt_password_encrypted),
        instance_tls(deps, instance),
    )


def recorded_nodes(deps: Deps, instance: InstanceRow, rows: list[NodeRow]) -> list[Node]:
    """The nodes as recorded, as rkvstore's user (no discovery: a read stays one
    bounded exchange)."""
    return deps.redis.nodes(
        node_addresses(rows),
        deps.box.open(instance.mgmt_password_encrypted),
        instance_tls(deps, instance),
    )


def instance_tls(deps: Deps, instance: InstanceRow) -> NodeTls | None:
    """How to reach the instance's nodes over TLS; ``None``: plain TCP."""
    if instance.tls_encrypted is None:
        return None
    return deps.redis.sealed_settings(
        instance.tls_encrypted, deps.box.open, NodeTls.from_sealed_form
    )


def instance_addresses(
    deps: Deps, instance: InstanceRow, rows: list[NodeRow] | None = None
) -> list[NodeAddress]:
    """Where the instance's nodes are (``rows``: as just read; else read now); a
    registered deployment's looked at again first."""
    if rows is None:
        with deps.single.connect() as conn:
            rows = repo.list_nodes(conn, instance.instance_id)
    if instance.provider == REGISTERED:
        rows = look_again(deps, instance, rows)
    return node_addresses(rows)


def look_again(deps: Deps, instance: InstanceRow, rows: list[NodeRow]) -> list[NodeRow]:
    """A registered deployment's nodes now: as its Sentinels' master names them, or
    the recorded ones with those found since."""
    if instance.sentinel_encrypted is not None:
        from rkvstore.services.sentinel_nodes import follow_sentinels  # it imports this module

        return follow_sentinels(deps, instance, rows)
    return _include_new_nodes(deps, instance, rows)


def _include_new_nodes(deps: Deps, instance: InstanceRow, rows: list[NodeRow]) -> list[NodeRow]:
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    # Before 6.0 there are no users: rkvstore logs in with requirepass alone.
    login = None if is_legacy(instance) else MANAGEMENT_USER
    tls = instance_tls(deps, instance)
    networks = parse_networks(deps.settings.register_networks)
    topology = None
    for row in rows:
        # As the management user: the engine's pooled, logged-in connection to the
        # node (a look per change and per verify opens none of its own).
        seed = (
            None
            if login is None
            else deps.redis.node(NodeAddress(row.host, row.port), mgmt, tls=tls)
        )
        try:
            topology = discover(
                row.host,
                row.port,
                login,
                mgmt,
                timeout=deps.settings.node_timeout_seconds,
                seed=None if seed is None else seed.client,
                tls=tls,
                networks=networks,
            )
            break
        except DiscoveryError:
            continue
    if topology is None:
        return rows
    known = {(r.host, r.port) for r in rows}
    new = [n for n in topology.nodes if (n.host, n.port) not in known]
    # A node the deployment names now, outside the networks that may be
    # registered, gets neither the admin login nor anything else.
    outside = [n for n in new if not allowed(n.host, networks)]
    if outside:
        log.warning(
            "instance %s: %d node(s) outside RKVSTORE_REGISTER_NETWORKS left alone: %s",
            instance.instance_id,
            len(outside),
            ", ".join(f"{n.host}:{n.port}" for n in outside),
        )
        new = [n for n in new if n not in outside]
    with deps.engine.connect() as conn:  # a node another instance manages is not ours
        new = [n for n in new if not repo.nodes_in_use(conn, [(n.host, n.port)])]
    if not new:
        return rows
    log.info("instance %s: %d node(s) found since registration", instance.instance_id, len(new))
    if not is_legacy(instance):
        # Only a node that took the management user is recorded (and so claimed).
        if instance.admin_password_encrypted is None:
            return rows
        admin = deps.box.open(instance.admin_password_encrypted)
        refused = put_management_user_each(deps, new, admin, instance.admin_user, mgmt, tls)
        new = [n for n in new if n not in refused]
        if not new:
            return rows
    found = [n for n in topology.nodes if (n.host, n.port) in known or n in new]
    merged = found + [
        FoundNode(r.host, r.port, r.role, r.shard)
        for r in rows
        if (r.host, r.port) not in {(n.host, n.port) for n in found}
    ]
    with deps.engine.begin() as conn:
        repo.replace_nodes(conn, instance.instance_id, node_rows_for(instance.instance_id, merged))
        fresh = repo.list_nodes(conn, instance.instance_id)
    deps.reconciler.mark_dirty(instance.instance_id)  # the new nodes lack the accounts
    return fresh


def admin_nodes(
    deps: Deps,
    addresses: list[NodeAddress],
    admin: Secret,
    admin_user: str | None,
    tls: NodeTls | None = None,
) -> list[Node]:
    """A registered deployment's nodes, logged in to as the operator's admin."""
    return [deps.redis.node(a, admin, user=admin_user or "default", tls=tls) for a in addresses]


def put_management_user(deps: Deps, nodes: list[Node], mgmt: Secret) -> None:
    """rkvstore's management user on every node, all or nothing (``NodeFailure``)."""
    user = management_user(mgmt)
    deps.redis.apply(nodes, [UserChange(user.name, user)])


def put_management_user_each(
    deps: Deps,
    nodes: list[FoundNode],
    admin: Secret,
    admin_user: str | None,
    mgmt: Secret,
    tls: NodeTls | None = None,
) -> list[FoundNode]:
    """rkvstore's management user on each of ``nodes`` that takes it; those that did not."""
    if not nodes:
        return []
    user = management_user(mgmt)
    addresses = [NodeAddress(n.host, n.port) for n in nodes]
    results = deps.redis.fanout.run(
        admin_nodes(deps, addresses, admin, admin_user, tls), [user.setuser_command()]
    )
    refused = [n for n, a in zip(nodes, addresses, strict=True) if results[a.label].error]
    for node in refused:
        log.warning(
            "node %s:%d did not take the management user: %s",
            node.host,
            node.port,
            results[NodeAddress(node.host, node.port).label].error,
        )
    return refused


def restore_management_user(
    deps: Deps, instance: InstanceRow, rows: list[NodeRow], tls: NodeTls | None
) -> bool:
    """Put rkvstore's user back, through the stored admin login, on nodes that refused
    its login: a node that keeps accounts in memory only and restarted, or one whose
    users someone reloaded. Whether any took it (then read the nodes again)."""
    if is_legacy(instance) or instance.admin_password_encrypted is None or not rows:
        return False
    found = [FoundNode(r.host, r.port, r.role, r.shard) for r in rows]
    admin = deps.box.open(instance.admin_password_encrypted)
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    refused = put_management_user_each(deps, found, admin, instance.admin_user, mgmt, tls)
    back = [f"{n.host}:{n.port}" for n in found if n not in refused]
    if back:
        log.warning(
            "instance %s: management user put back on %s (the node lost it: restarted?)",
            instance.instance_id,
            ", ".join(back),
        )
    return bool(back)


def node_rows_for(instance_id: str, found: list[FoundNode]) -> list[dict[str, object]]:
    """Node rows for discovered nodes: masters first (by shard), replicas pointing at theirs."""
    ordered = sorted(found, key=lambda n: (n.role != "master", n.shard, n.port))
    ids = {(n.host, n.port): f"{instance_id}-{i}" for i, n in enumerate(ordered)}
    return [
        {
            "node_id": ids[(n.host, n.port)],
            "host": n.host,
            "port": n.port,
            "role": n.role,
            "shard": n.shard,
            "master_node_id": ids.get(n.master) if n.master else None,
        }
        for n in ordered
    ]


def desired_users(deps: Deps, instance: InstanceRow) -> list[DesiredUser]:
    with deps.engine.connect() as conn:
        accounts = repo.list_accounts(conn, instance.instance_id)
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    return [management_user(mgmt)] + [
        desired_user(
            a.name, a.password_sha256, a.privilege, instance.engine_version, a.previous_sha256
        )
        for a in accounts
    ]


def apply_changes(
    deps: Deps,
    instance: InstanceRow,
    changes: Sequence[UserChange],
    node_rows: list[NodeRow] | None = None,
) -> None:
    """``changes`` on every node of ``instance``, or on none (``ServiceUnavailable``).

    One deadline for the whole of it: looking at a registered deployment's nodes
    again, and changing them. A roll-back flags the users for the reconciler
    (a node that did not answer may still hold the change).
    """
    try:
        with bounded.exchange(deps.settings.node_timeout_seconds):
            deps.redis.apply(instance_nodes(deps, instance, node_rows), changes)
    except NodeFailure as exc:
        log.warning(  # node labels and reasons only: never a password
            "request %s: %s on %s rolled back: %s",
            current_request_id.get(),
            ", ".join(c.name for c in changes),
            instance.instance_id,
            exc,
        )
        for change in changes:
            deps.reconciler.mark_dirty(instance.instance_id, change.name)
        raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
