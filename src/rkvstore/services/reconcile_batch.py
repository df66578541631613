"""One batch of passes: what the instances must be, read in four statements
(the caller holds their slots), then a pass over each.

A pass used to read its instance, accounts, nodes and pending users with a
statement each; at ten thousand instances that cost more than the nodes'
answers. Here the rows of a whole batch come in one query per table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from rkvstore.engine import bounded
from rkvstore.engine.discovery import named_addresses, topology_commands
from rkvstore.engine.redis_engine import ReconcileReport, desired_user, management_user
from rkvstore.services.context import Deps
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow, NodeRow
from rkvstore.store.tables import accounts, instances, nodes, pending_users

log = logging.getLogger("rkvstore.reconcile")


@dataclass
class Loaded:
    """What a batch's instances must be, as the database holds it now."""

    instances: dict[str, InstanceRow] = field(default_factory=dict)
    nodes: dict[str, list[NodeRow]] = field(default_factory=dict)
    # (name, password_sha256, privilege, previous_sha256) of each account, by name
    accounts: dict[str, list[tuple[str, str, str, str | None]]] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)


def load(conn: Connection, instance_ids: Sequence[str]) -> Loaded:
    """Four statements for the whole batch (read under the slots: what a task
    recorded just before releasing one is what the nodes must match)."""
    out = Loaded()
    ids = list(instance_ids)
    for row in conn.execute(select(instances).where(instances.c.instance_id.in_(ids))):
        out.instances[row.instance_id] = InstanceRow.of(row)
    node_rows = conn.execute(
        select(nodes)
        .where(nodes.c.instance_id.in_(ids))
        .order_by(nodes.c.instance_id, nodes.c.shard, nodes.c.role, nodes.c.node_id)
    )
    for row in node_rows:
        out.nodes.setdefault(row.instance_id, []).append(NodeRow.of(row))
    account_rows = conn.execute(
        select(
            accounts.c.instance_id,
            accounts.c.name,
            accounts.c.password_sha256,
            accounts.c.privilege,
            accounts.c.previous_sha256,
        ).where(accounts.c.instance_id.in_(ids))
    )
    for iid, name, sha, privilege, previous in account_rows:
        out.accounts.setdefault(iid, []).append((name, sha, privilege, previous))
    for found in out.accounts.values():
        found.sort()  # by name in code points, the same on every collation
    pending_rows = conn.execute(
        select(pending_users.c.instance_id, pending_users.c.name).where(
            pending_users.c.instance_id.in_(ids)
        )
    )
    for row in pending_rows:
        out.pending.setdefault(row.instance_id, []).append(str(row.name))
    for names in out.pending.values():
        names.sort()
    return out


def one_pass(deps: Deps, loaded: Loaded, instance_id: str) -> ReconcileReport:
    """A pass over one of the batch's instances (``Normal``, its slot held).

    One deadline for its node work: every node's users read (all at once;
    a registered deployment's nodes also say whom they know), a registered
    deployment looked at again if they name a node not on the list, the repairs.
    """
    from rkvstore.services.instance_nodes import (
        CLUSTER,
        LOCAL,
        REGISTERED,
        instance_addresses,
        instance_tls,
        is_legacy,
        look_again,
        node_addresses,
        pending_passwords,
        restore_management_user,
    )
    from rkvstore.services.sentinel_nodes import follow_sentinels

    instance = loaded.instances[instance_id]
    mgmt = deps.box.open(instance.mgmt_password_encrypted)
    with bounded.exchange(deps.settings.node_timeout_seconds):
        if is_legacy(instance):
            return deps.redis.reconcile_legacy(
                instance_addresses(deps, instance),
                mgmt,
                pending_passwords(deps, instance),
                instance_id,
            )
        rows = loaded.nodes.get(instance_id, [])
        if instance.sentinel_encrypted is not None:  # a failover moves the nodes
            rows = follow_sentinels(deps, instance, rows)
        tls = instance_tls(deps, instance)
        nodes = deps.redis.nodes(node_addresses(rows), mgmt, tls)
        listed = None
        if instance.provider == REGISTERED:
            # Nodes added to the deployment since: every node says whom it
            # knows in the round trip that reads its users; only a name not on
            # the list costs the whole look (discover, the new nodes recorded).
            cluster = instance.architecture == CLUSTER
            listed, facts = deps.redis.read_users(nodes, topology_commands(cluster))
            named = named_addresses(facts.values(), cluster)
            if named is None or named - {(r.host, r.port) for r in rows}:
                rows = look_again(deps, instance, rows)
                nodes, listed = deps.redis.nodes(node_addresses(rows), mgmt, tls), None
            # A node that refuses rkvstore's login lost its users (restarted, when it
            # keeps them in memory only): the admin login gives the management user
            # back, and this pass the accounts.
            locked_out = [r for r in rows if _refused_login(listed, f"{r.host}:{r.port}")]
            if restore_management_user(deps, instance, locked_out, tls):
                listed = None
        desired = [management_user(mgmt)] + [
            desired_user(name, sha, privilege, instance.engine_version, previous)
            for name, sha, privilege, previous in loaded.accounts.get(instance_id, [])
        ]
        # A user a failed CreateAccount may have left on a node, never recorded.
        leftover = sorted(set(loaded.pending.get(instance_id, [])) - {u.name for u in desired})
        return deps.redis.reconcile(
            nodes,
            desired,
            strict=instance.provider == LOCAL,
            remove=leftover,
            listed=listed,
        )


def _refused_login(listed: dict[str, dict[str, str] | str] | None, label: str) -> bool:
    reason = None if listed is None else listed.get(label)
    return isinstance(reason, str) and reason.startswith("AuthenticationError")


def drop_pending(conn: Connection, loaded: Loaded, reports: dict[str, ReconcileReport]) -> None:
    """Every node reached: none of them holds a pending user any more."""
    for instance_id, report in reports.items():
        names = loaded.pending.get(instance_id)
        if names and report.in_line:
            repo.drop_pending_users(conn, instance_id, names)
