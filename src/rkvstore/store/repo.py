"""Queries on instances, nodes and accounts; scoped to a tenant wherever a caller asks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, select, update

from rkvstore.engine.addresses import normalize_host
from rkvstore.store.tables import (
    accounts,
    instances,
    nodes,
    pending_users,
    reconcile_state,
    tasks,
    tenants,
)


@dataclass(frozen=True)
class InstanceRow:
    instance_id: str
    account_id: str
    name: str
    status: str
    provider: str
    engine_version: str
    architecture: str
    node_type: str
    shard_count: int
    zone_id: str
    instance_class: str
    charge_type: str
    host: str
    port: int
    mgmt_password_encrypted: str
    admin_user: str | None
    admin_password_encrypted: str | None
    created_at: datetime
    pending_password_encrypted: str | None = None
    release_protection: bool = False
    accounts_in_memory: bool = False
    tls_encrypted: str | None = None
    sentinel_encrypted: str | None = None

    @classmethod
    def of(cls, row: Row[Any]) -> InstanceRow:
        return cls(**row._mapping)


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    instance_id: str
    host: str
    port: int
    role: str
    shard: int
    master_node_id: str | None

    @classmethod
    def of(cls, row: Row[Any]) -> NodeRow:
        return cls(**row._mapping)


@dataclass(frozen=True)
class AccountRow:
    instance_id: str
    name: str
    password_sha256: str
    privilege: str
    account_type: str
    description: str
    created_at: datetime
    previous_sha256: str | None = None  # kept valid beside the current one (a secret's grace)
    managed_by: str | None = None  # the KMS secret managing the account, if any

    @classmethod
    def of(cls, row: Row[Any]) -> AccountRow:
        return cls(**row._mapping)


# Statements on the request path are built once: building one costs several
# times what executing it does (SQLAlchemy's construction and cache key).
_GET_INSTANCE = select(instances).where(
    instances.c.instance_id == bindparam("instance_id"),
    instances.c.account_id == bindparam("account_id"),
)
_SET_PASSWORD = (  # (an UPDATE's parameters may not be named after its columns)
    update(accounts)
    .where(
        accounts.c.instance_id == bindparam("which_instance"),
        accounts.c.name == bindparam("which_account"),
    )
    .values(password_sha256=bindparam("new_sha256"), previous_sha256=None)
)
_LIST_NODES = (
    select(nodes)
    .where(nodes.c.instance_id == bindparam("instance_id"))
    .order_by(nodes.c.shard, nodes.c.role, nodes.c.node_id)
)


def get_instance(conn: Connection, account_id: str, instance_id: str) -> InstanceRow | None:
    """The instance, only if it belongs to ``account_id`` (another tenant's does not exist)."""
    row = conn.execute(_GET_INSTANCE, {"instance_id": instance_id, "account_id": account_id})
    first = row.first()
    return InstanceRow.of(first) if first else None


@dataclass(frozen=True)
class ChangeView:
    """What a change to one account starts from: its instance, the account, the nodes."""

    instance: InstanceRow
    account: AccountRow | None
    nodes: list[NodeRow]


def _labelled(table: Any, prefix: str) -> list[Any]:
    return [c.label(f"{prefix}{c.name}") for c in table.c]


def _unlabel(mapping: Any, prefix: str, table: Any) -> dict[str, Any]:
    return {c.name: mapping[f"{prefix}{c.name}"] for c in table.c}


_CHANGE_VIEW = (
    select(
        *_labelled(instances, "i_"),
        *_labelled(accounts, "a_"),
        *_labelled(nodes, "n_"),
    )
    .select_from(instances)
    .outerjoin(
        accounts,
        (accounts.c.instance_id == instances.c.instance_id)
        & (accounts.c.name == bindparam("account_name")),
    )
    .outerjoin(nodes, nodes.c.instance_id == instances.c.instance_id)
    .where(instances.c.instance_id == bindparam("instance_id"))
    .order_by(nodes.c.shard, nodes.c.role, nodes.c.node_id)
)


@dataclass(frozen=True)
class StatusView:
    """An instance with what its accounts' status depends on: the task holding its
    slot (action, account) and the reconciler's shared state."""

    instance: InstanceRow
    task_action: str | None
    task_account: str | None
    dirty: str | None
    unreachable: str | None


_STATUS_VIEW = (
    select(
        *_labelled(instances, "i_"),
        tasks.c.action.label("t_action"),
        tasks.c.account_name.label("t_account"),
        reconcile_state.c.dirty.label("s_dirty"),
        reconcile_state.c.unreachable.label("s_unreachable"),
    )
    .select_from(instances)
    .outerjoin(tasks, tasks.c.instance_id == instances.c.instance_id)
    .outerjoin(reconcile_state, reconcile_state.c.instance_id == instances.c.instance_id)
    .where(
        instances.c.instance_id == bindparam("instance_id"),
        instances.c.account_id == bindparam("account_id"),
    )
)


def status_view(conn: Connection, account_id: str, instance_id: str) -> StatusView | None:
    """The tenant's instance, its slot's task and its reconcile state: one query."""
    row = conn.execute(_STATUS_VIEW, {"instance_id": instance_id, "account_id": account_id}).first()
    if row is None:
        return None
    m = row._mapping
    instance = InstanceRow(**_unlabel(m, "i_", instances))
    return StatusView(instance, m["t_action"], m["t_account"], m["s_dirty"], m["s_unreachable"])


def change_view(conn: Connection, instance_id: str, account_name: str) -> ChangeView | None:
    """The instance (any tenant's), its account ``account_name`` and its nodes: one query."""
    rows = conn.execute(
        _CHANGE_VIEW, {"instance_id": instance_id, "account_name": account_name}
    ).all()
    if not rows:
        return None
    first = rows[0]._mapping
    instance = InstanceRow(**_unlabel(first, "i_", instances))
    account = None
    if first["a_name"] is not None:
        account = AccountRow(**_unlabel(first, "a_", accounts))
    found = [NodeRow(**_unlabel(r._mapping, "n_", nodes)) for r in rows if r._mapping["n_node_id"]]
    return ChangeView(instance, account, found)


def get_instance_any_tenant(conn: Connection, instance_id: str) -> InstanceRow | None:
    row = conn.execute(select(instances).where(instances.c.instance_id == instance_id)).first()
    return InstanceRow.of(row) if row else None


def list_instances(conn: Connection, account_id: str | None = None) -> list[InstanceRow]:
    query = select(instances).order_by(instances.c.created_at, instances.c.instance_id)
    if account_id is not None:
        query = query.where(instances.c.account_id == account_id)
    return [InstanceRow.of(r) for r in conn.execute(query)]


def insert_instance(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(instances).values(created_at=datetime.now(UTC), **values))


def set_instance_status(conn: Connection, instance_id: str, status: str) -> None:
    conn.execute(
        update(instances).where(instances.c.instance_id == instance_id).values(status=status)
    )


def task_action(conn: Connection, instance_id: str) -> str | None:
    """The action holding the instance's task slot, if any."""
    action = conn.execute(
        select(tasks.c.action).where(tasks.c.instance_id == instance_id)
    ).scalar_one_or_none()
    return None if action is None else str(action)


def instances_with_tasks(conn: Connection) -> list[str]:
    return [str(r.instance_id) for r in conn.execute(select(tasks.c.instance_id))]


def set_management_password(conn: Connection, instance_id: str, sealed: str) -> None:
    conn.execute(
        update(instances)
        .where(instances.c.instance_id == instance_id)
        .values(mgmt_password_encrypted=sealed)
    )


PENDING_KEPT = 8  # Redis before 6.0: passwords of changes begun, kept as a way back in


def pending_tokens(value: str | None) -> list[str]:
    """The sealed pending passwords, newest last (one Fernet token per line)."""
    return value.split("\n") if value else []


def add_pending_password(conn: Connection, instance_id: str, sealed: str) -> None:
    """Remember the password a change is about to set, beside those set before.

    None is dropped when a change is recorded: a holder that stalled past its
    lease may still send an older one to a node later, and only these let
    rkvstore in there again.
    """
    current = conn.execute(
        select(instances.c.pending_password_encrypted).where(instances.c.instance_id == instance_id)
    ).scalar_one_or_none()
    tokens = [*pending_tokens(current), sealed][-PENDING_KEPT:]
    conn.execute(
        update(instances)
        .where(instances.c.instance_id == instance_id)
        .values(pending_password_encrypted="\n".join(tokens))
    )


def update_instance(conn: Connection, instance_id: str, **values: Any) -> None:
    """The instance's own settings (name, release protection)."""
    conn.execute(update(instances).where(instances.c.instance_id == instance_id).values(**values))


def set_legacy_password(conn: Connection, instance_id: str, sealed: str) -> None:
    """Redis before 6.0: the one password is rkvstore's login and the admin's too."""
    conn.execute(
        update(instances)
        .where(instances.c.instance_id == instance_id)
        .values(mgmt_password_encrypted=sealed, admin_password_encrypted=sealed)
    )


def delete_instance(conn: Connection, instance_id: str) -> None:
    conn.execute(delete(reconcile_state).where(reconcile_state.c.instance_id == instance_id))
    conn.execute(delete(pending_users).where(pending_users.c.instance_id == instance_id))
    conn.execute(delete(accounts).where(accounts.c.instance_id == instance_id))
    conn.execute(delete(nodes).where(nodes.c.instance_id == instance_id))
    conn.execute(delete(instances).where(instances.c.instance_id == instance_id))


def list_nodes(conn: Connection, instance_id: str) -> list[NodeRow]:
    return [NodeRow.of(r) for r in conn.execute(_LIST_NODES, {"instance_id": instance_id})]


def nodes_in_use(conn: Connection, addresses: Sequence[tuple[str, int]]) -> bool:
    """Whether any of these host:port pairs is a node of an instance already (however spelt)."""
    wanted = {(normalize_host(host), port) for host, port in addresses}
    rows = conn.execute(
        select(nodes.c.host, nodes.c.port).where(nodes.c.port.in_({p for _, p in wanted}))
    ).all()
    return any((normalize_host(row.host), row.port) in wanted for row in rows)


def lock_tenant(conn: Connection, account_id: str) -> None:
    """A write to the tenant's row: what follows in the transaction is the tenant's alone
    (SQLite: the database's write lock; PostgreSQL: the row's lock)."""
    conn.execute(
        update(tenants).where(tenants.c.account_id == account_id).values(name=tenants.c.name)
    )


def local_usage(conn: Connection, account_id: str) -> tuple[int, int]:
    """The tenant's local instances and their nodes."""
    mine = select(instances.c.instance_id).where(
        instances.c.account_id == account_id, instances.c.provider == "local"
    )
    count = conn.execute(select(func.count()).select_from(mine.subquery())).scalar_one()
    node_count = conn.execute(
        select(func.count()).select_from(nodes).where(nodes.c.instance_id.in_(mine))
    ).scalar_one()
    return int(count), int(node_count)


def ports_in_use(conn: Connection, hosts: Sequence[str]) -> set[int]:
    """The ports recorded for nodes on any of ``hosts`` (normalised spellings)."""
    wanted = {normalize_host(h) for h in hosts}
    rows = conn.execute(select(nodes.c.host, nodes.c.port)).all()
    return {int(row.port) for row in rows if normalize_host(row.host) in wanted}


def forget_nodes(conn: Connection, instance_id: str, addresses: Sequence[tuple[str, int]]) -> None:
    for host, port in addresses:
        conn.execute(
            delete(nodes).where(
                nodes.c.instance_id == instance_id, nodes.c.host == host, nodes.c.port == port
            )
        )


def replace_nodes(conn: Connection, instance_id: str, rows: Sequence[dict[str, Any]]) -> None:
    conn.execute(delete(nodes).where(nodes.c.instance_id == instance_id))
    for values in rows:
        conn.execute(insert(nodes).values(instance_id=instance_id, **values))


def list_accounts(conn: Connection, instance_id: str) -> list[AccountRow]:
    """Ordered by name in code points, the same on every database's collation."""
    rows = conn.execute(select(accounts).where(accounts.c.instance_id == instance_id))
    return sorted((AccountRow.of(r) for r in rows), key=lambda a: a.name)


def get_account(conn: Connection, instance_id: str, name: str) -> AccountRow | None:
    row = conn.execute(
        select(accounts).where(accounts.c.instance_id == instance_id, accounts.c.name == name)
    ).first()
    return AccountRow.of(row) if row else None


def count_custom_accounts(conn: Connection, instance_id: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(accounts)
            .where(accounts.c.instance_id == instance_id, accounts.c.account_type == "Normal")
        ).scalar_one()
    )


def insert_account(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(accounts).values(created_at=datetime.now(UTC), **values))


def set_account_password(
    conn: Connection, instance_id: str, name: str, password_sha256: str
) -> None:
    conn.execute(
        _SET_PASSWORD,
        {"which_instance": instance_id, "which_account": name, "new_sha256": password_sha256},
    )


def set_account_passwords(
    conn: Connection,
    instance_id: str,
    name: str,
    current_sha256: str,
    previous_sha256: str | None,
) -> None:
    """Both passwords the nodes must hold (a secret's rotation); no previous: only one."""
    conn.execute(
        update(accounts)
        .where(accounts.c.instance_id == instance_id, accounts.c.name == name)
        .values(password_sha256=current_sha256, previous_sha256=previous_sha256)
    )


def set_account_managed_by(
    conn: Connection, instance_id: str, names: Sequence[str], secret_id: str | None
) -> None:
    """Mark ``names`` as managed by the secret ``secret_id`` (None: by none)."""
    if names:
        conn.execute(
            update(accounts)
            .where(accounts.c.instance_id == instance_id, accounts.c.name.in_(list(names)))
            .values(managed_by=secret_id)
        )


def update_account(conn: Connection, instance_id: str, name: str, **values: Any) -> None:
    conn.execute(
        update(accounts)
        .where(accounts.c.instance_id == instance_id, accounts.c.name == name)
        .values(**values)
    )


def delete_account(conn: Connection, instance_id: str, name: str) -> None:
    conn.execute(
        delete(accounts).where(accounts.c.instance_id == instance_id, accounts.c.name == name)
    )


# --------------------------------------------------------------------------- pending users


def add_pending_user(conn: Connection, instance_id: str, name: str) -> None:
    exists = conn.execute(
        select(pending_users.c.name).where(
            pending_users.c.instance_id == instance_id, pending_users.c.name == name
        )
    ).first()
    if exists is None:
        conn.execute(
            insert(pending_users).values(
                instance_id=instance_id, name=name, created_at=datetime.now(UTC)
            )
        )


def drop_pending_users(conn: Connection, instance_id: str, names: Sequence[str]) -> None:
    if names:
        conn.execute(
            delete(pending_users).where(
                pending_users.c.instance_id == instance_id, pending_users.c.name.in_(names)
            )
        )


def pending_user_names(conn: Connection, instance_id: str) -> list[str]:
    """Users that may be on the nodes without an account (a create that failed)."""
    rows = conn.execute(
        select(pending_users.c.name).where(pending_users.c.instance_id == instance_id)
    )
    return sorted(str(r.name) for r in rows)
