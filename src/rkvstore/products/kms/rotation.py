"""Changing a secret's accounts on every node: rotation, end of grace, final deletion.

Every change runs in the instance's task slot and follows one order
(docs/kms.md §5): the new password is written down first (a ``Pending``
version, sealed), then every node gets it (all or nothing), then one
transaction moves the stages and the accounts' passwords. A rotation cut short
by a crash is found ``Pending`` by the next holder of the slot, or by the
scheduler, and finished: the database already holds its target.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from rkvstore import errors
from rkvstore.engine.acl import UserChange
from rkvstore.engine.redis_engine import desired_user
from rkvstore.errors import ApiError
from rkvstore.faults import crash_point
from rkvstore.products.kms import errors as kms_errors
from rkvstore.products.kms import rules, vault
from rkvstore.products.kms import store as kms_store
from rkvstore.products.kms.store import SecretRow, VersionRow
from rkvstore.secret import Secret
from rkvstore.services.context import Deps
from rkvstore.services.instance_nodes import apply_changes, require_normal
from rkvstore.services.task_slot import recording, task_slot
from rkvstore.services.tasks import Task
from rkvstore.store import repo
from rkvstore.store.repo import InstanceRow

log = logging.getLogger("rkvstore.kms")


def new_version_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Stages:
    current: VersionRow
    previous: VersionRow | None
    pending: VersionRow | None

    @classmethod
    def read(cls, conn: Connection, secret_id: str) -> Stages:
        staged = kms_store.staged_versions(conn, secret_id)
        by_stage = {v.stage: v for v in reversed(staged)}  # the newest of each wins
        return cls(
            by_stage[rules.CURRENT], by_stage.get(rules.PREVIOUS), by_stage.get(rules.PENDING)
        )


def set_user(
    deps: Deps,
    instance: InstanceRow,
    name: str,
    current_sha256: str,
    previous_sha256: str | None,
    privilege: str,
) -> None:
    """``name`` with exactly these passwords on every node, or on none (``ServiceUnavailable``)."""
    user = desired_user(
        name, current_sha256, privilege, instance.engine_version, previous_sha256=previous_sha256
    )
    apply_changes(deps, instance, [UserChange(name, user)])


def _instance(deps: Deps, instance_id: str) -> InstanceRow | None:
    with deps.single.connect() as conn:
        return repo.get_instance_any_tenant(conn, instance_id)


def _secret(deps: Deps, secret_id: str) -> SecretRow | None:
    with deps.single.connect() as conn:
        return kms_store.get_secret_by_id(conn, secret_id)


def _task_account(secret: SecretRow, account: str | None) -> str | None:
    """Only the changing account shows ``Unavailable`` meanwhile."""
    return account if secret.sub_type == rules.DUAL_PASSWORD else None


# --------------------------------------------------------------------------- rotation


def rotate(
    deps: Deps,
    secret_id: str,
    version_id: str | None,
    clock: Callable[[], float],
    *,
    scheduled: bool = False,
) -> bool:
    """Rotate ``secret_id`` to a new version (``version_id``, or a generated one).

    ``scheduled``: only if it is still due once the slot is ours (another
    process may have done it meanwhile), and quietly not for a secret pending
    deletion. Answers whether a rotation was done by this call.
    """
    secret = _secret(deps, secret_id)
    if secret is None:
        raise ApiError(kms_errors.NOT_FOUND)
    instance = _instance(deps, secret.instance_id)
    if instance is None:
        if scheduled:  # a rotation written down for nodes now gone can never finish
            drop_pending(deps, secret_id)
            return False
        raise ApiError(errors.INSTANCE_NOT_FOUND)
    require_normal(instance)
    account = secret_account(secret)
    with task_slot(
        deps, instance.instance_id, "RotateSecret", _task_account(secret, account)
    ) as task:
        secret = _secret(deps, secret_id)
        instance = _instance(deps, secret.instance_id) if secret is not None else None
        if secret is None or instance is None:
            if scheduled:
                return False
            raise ApiError(kms_errors.NOT_FOUND)
        require_normal(instance)
        finished = finish_pending(deps, task, secret, instance, clock())
        if finished is not None and finished == version_id:
            return True
        with deps.single.connect() as conn:
            if version_id is not None and kms_store.version_exists(conn, secret_id, version_id):
                return False  # KMS: a retried RotateSecret with the same VersionId
            secret = kms_store.get_secret_by_id(conn, secret_id)
            assert secret is not None
            stages = Stages.read(conn, secret_id)
        if secret.planned_delete_at is not None:
            if scheduled:
                return False
            raise ApiError(kms_errors.IN_DELETE_WINDOW)
        if scheduled and not is_due(secret, clock()):
            return False
        pending = write_pending(deps, task, secret, stages, version_id or new_version_id(), clock())
        crash_point("kms-pending-written")
        complete(deps, task, secret, instance, pending, clock())
        return True


def secret_account(secret: SecretRow) -> str:
    config = rules.stored_config(secret.extended_config)
    return str(config["AccountName"])


def is_due(secret: SecretRow, now: float) -> bool:
    return (
        secret.rotation_enabled
        and secret.next_rotation_at is not None
        and secret.next_rotation_at <= now
    )


def write_pending(
    deps: Deps, task: Task, secret: SecretRow, stages: Stages, version_id: str, now: float
) -> VersionRow:
    """The rotation's target, written down (sealed) before any node is touched."""
    if secret.sub_type == rules.DOUBLE_USERS:
        assert stages.previous is not None
        account = stages.previous.account_name  # KMS: the account ACSPrevious points to
    else:
        account = stages.current.account_name
    password = Secret(rules.new_password())
    with recording(deps, task, intent=True) as conn:
        seq = kms_store.next_seq(conn, secret.secret_id)
        values = {
            "secret_id": secret.secret_id,
            "version_id": version_id,
            "seq": seq,
            "stage": rules.PENDING,
            "account_name": account,
            "password_sealed": vault.seal(deps.box, secret.data_key, password),
            "grace_until": None,
            "created_at": now,
        }
        kms_store.insert_version(conn, values)
    return VersionRow(**values)  # type: ignore[arg-type]


def finish_pending(
    deps: Deps, task: Task, secret: SecretRow, instance: InstanceRow, now: float
) -> str | None:
    """A rotation a dead (or taken-over) holder left written down: finished now."""
    with deps.single.connect() as conn:
        stages = Stages.read(conn, secret.secret_id)
    if stages.pending is None:
        return None
    log.info("secret %s: finishing an interrupted rotation", secret.secret_id)
    complete(deps, task, secret, instance, stages.pending, now)
    return stages.pending.version_id


def complete(
    deps: Deps,
    task: Task,
    secret: SecretRow,
    instance: InstanceRow,
    pending: VersionRow,
    now: float,
) -> None:
    """Every node gets ``pending``'s password, then the stages move in one transaction.

    DualPassword keeps the current password as the previous one while the
    stages move, even without a grace (``GracePeriod`` 0s): until the record
    says otherwise, GetSecretValue hands out the current one, which must work.
    Without a grace it is removed right after the record.
    """
    with deps.single.connect() as conn:
        stages = Stages.read(conn, secret.secret_id)
        account = repo.get_account(conn, instance.instance_id, pending.account_name)
    if account is None:  # deleted behind the secret's back: nothing to rotate, ever
        drop_pending_after_failure(deps, secret.secret_id, pending.version_id)
        raise ApiError(errors.SERVICE_UNAVAILABLE)
    assert pending.password_sealed is not None
    password = vault.open_sealed(deps.box, secret.data_key, pending.password_sealed)
    current = stages.current
    dual = secret.sub_type == rules.DUAL_PASSWORD
    keep_previous = dual
    previous_sha256 = None
    if keep_previous:
        assert current.password_sealed is not None
        previous_sha256 = vault.open_sealed(
            deps.box, secret.data_key, current.password_sealed
        ).sha256_hex()
    try:
        set_user(
            deps, instance, account.name, password.sha256_hex(), previous_sha256, account.privilege
        )
    except ApiError:
        # Rolled back on every node: the target goes too, and the scheduler (or
        # the caller) tries a new rotation later.
        drop_pending_after_failure(deps, secret.secret_id, pending.version_id)
        raise
    crash_point("kms-nodes-changed")
    grace_until = None
    if dual and secret.grace_period is not None:
        grace_until = now + secret.grace_period
    with recording(deps, task) as conn:
        repo.set_account_passwords(
            conn, instance.instance_id, account.name, password.sha256_hex(), previous_sha256
        )
        if stages.previous is not None:
            kms_store.set_stage(conn, secret.secret_id, stages.previous.version_id, None)
        kms_store.set_stage(
            conn,
            secret.secret_id,
            current.version_id,
            rules.PREVIOUS if (keep_previous or not dual) else None,
            grace_until=grace_until,
        )
        kms_store.set_stage(conn, secret.secret_id, pending.version_id, rules.CURRENT)
        kms_store.record_rotation(conn, secret.secret_id, now)
    if dual and secret.grace_period == 0:
        # Should this fail, the grace (ended now) is ended by the scheduler.
        drop_previous(deps, task, instance, account.name, secret.secret_id, now)


def drop_pending_after_failure(deps: Deps, secret_id: str, version_id: str) -> None:
    """A rotation whose node change was rolled back: its written-down target goes."""
    with deps.engine.begin() as conn:
        kms_store.drop_version(conn, secret_id, version_id)


def drop_pending(deps: Deps, secret_id: str) -> None:
    """Every rotation written down for ``secret_id`` and not finished goes (its instance is
    gone: no node holds its password that the database would still need)."""
    with deps.engine.begin() as conn:
        for version in kms_store.staged_versions(conn, secret_id):
            if version.stage == rules.PENDING:
                kms_store.drop_version(conn, secret_id, version.version_id)


# --------------------------------------------------------------------------- grace and deletion


def end_grace(deps: Deps, secret_id: str, now: float) -> bool:
    """The previous password of a DualPassword secret whose grace is over leaves every node."""
    secret = _secret(deps, secret_id)
    if secret is None:
        return False
    instance = _instance(deps, secret.instance_id)
    if instance is None:  # its nodes are gone with it: the grace ends in the record alone
        with deps.engine.begin() as conn:
            previous = Stages.read(conn, secret_id).previous
            if previous is None or previous.grace_until is None or previous.grace_until > now:
                return False
            kms_store.set_stage(conn, secret_id, previous.version_id, None)
            kms_store.update_secret(conn, secret_id, updated_at=now)
        return True
    if instance.status != "Normal":
        return False  # the scheduler tries again later
    account = secret_account(secret)
    with task_slot(
        deps, instance.instance_id, "RotateSecret", _task_account(secret, account)
    ) as task:
        return drop_previous(deps, task, instance, account, secret_id, now)


def drop_previous(
    deps: Deps, task: Task, instance: InstanceRow, account: str, secret_id: str, now: float
) -> bool:
    """The previous password, its grace over, off every node; then its stage (slot held)."""
    with deps.single.connect() as conn:
        stages = Stages.read(conn, secret_id)
        row = repo.get_account(conn, instance.instance_id, account)
    previous = stages.previous
    if previous is None or previous.grace_until is None or previous.grace_until > now:
        return False
    if row is None:
        return False
    set_user(deps, instance, row.name, row.password_sha256, None, row.privilege)
    with recording(deps, task) as conn:
        repo.set_account_passwords(conn, instance.instance_id, row.name, row.password_sha256, None)
        kms_store.set_stage(conn, secret_id, previous.version_id, None)
        kms_store.update_secret(conn, secret_id, updated_at=now)
    return True


def release(deps: Deps, secret_id: str, now: float) -> bool:
    """The final deletion: the accounts become ordinary hash-only accounts again.

    Each keeps its current password; a previous one still in grace is removed
    first (nothing would end its grace once the secret is gone). The sealed
    passwords and the data key go with the secret's rows.
    """
    secret = _secret(deps, secret_id)
    if secret is None:
        return False
    instance = _instance(deps, secret.instance_id)
    if instance is None:
        with deps.engine.begin() as conn:
            kms_store.delete_secret(conn, secret_id)
        return True
    with task_slot(deps, instance.instance_id, "DeleteSecret") as task:
        fresh = _secret(deps, secret_id)
        if fresh is None or fresh.planned_delete_at is None or fresh.planned_delete_at > now:
            return False  # restored, or done by another process
        instance = _instance(deps, secret.instance_id)
        names = rules.stored_account_names(fresh.extended_config)
        with deps.single.connect() as conn:
            rows = [repo.get_account(conn, fresh.instance_id, n) for n in names]
        held = [r for r in rows if r is not None]
        if instance is not None and instance.status == "Normal":
            for row in held:
                if row.previous_sha256 is not None:
                    set_user(deps, instance, row.name, row.password_sha256, None, row.privilege)
        with recording(deps, task) as conn:
            for row in held:
                repo.set_account_passwords(
                    conn, fresh.instance_id, row.name, row.password_sha256, None
                )
            repo.set_account_managed_by(conn, fresh.instance_id, [r.name for r in held], None)
            kms_store.delete_secret(conn, secret_id)
        return True
