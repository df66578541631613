"""The instance's task slot as an action holds it: taken, recorded in, taken again."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.services import audit
from rkvstore.services.context import Deps, current_request_id
from rkvstore.services.tasks import Task, TaskLost
from rkvstore.store import repo
from rkvstore.store.db import database_unavailable, describe_database_error
from rkvstore.store.repo import InstanceRow

log = logging.getLogger("rkvstore.instances")


@contextmanager
def task_slot(
    deps: Deps,
    instance_id: str,
    action: str,
    account: str | None = None,
    *,
    read: Callable[[Connection], Any] | None = None,
    taken: Task | None = None,
) -> Iterator[Task]:
    """Hold the instance's task slot; after a dead holder, first bring the nodes in line.

    The call waits for the slot (``RKVSTORE_TASK_WAIT_SECONDS``) behind the
    calls before it, and gets ``TaskExists`` only when that runs out.
    ``account``: the one account the task changes (None: the whole instance);
    meanwhile only it shows ``Unavailable``.

    An action that succeeded while the instance was flagged out of line (a node
    missed by the last pass, a rolled-back change) reached its nodes just now:
    one pass before the slot is released makes ``AccountStatus`` tell the truth
    at once instead of at the reconciler's next interval. (A task may free the
    slot with its record, ``recording(release=True)``, only when it found the
    instance in line.)

    ``read`` runs in the transaction that takes the slot (``Task.seen``);
    ``taken``: a slot already taken (``TaskSlots.try_take``), to hold.
    """
    if taken is None:
        slot = deps.slots.hold(instance_id, action, account=account, read=read)
    else:
        slot = deps.slots.holding(taken)
    with slot as task:
        if task.took_over:
            deps.reconciler.reconcile_instance(instance_id, holding_slot=True)
        yield task
        # A task that freed the slot with its record found the instance in line.
        if deps.slots.holds(task) and not deps.reconciler.in_line(instance_id):
            try:
                deps.reconciler.reconcile_instance(instance_id, holding_slot=True)
            except Exception:  # the action is done; the loop retries the pass
                log.exception("pass over %s after %s failed; will retry", instance_id, action)


@contextmanager
def slot_again(deps: Deps, instance_id: str, action: str) -> Iterator[InstanceRow | None]:
    """The slot once more after a task lost it, waiting out the taker (a takeover
    pass, its change, a pass); the instance as it is then (``None``: deleted)."""
    patience = deps.settings.task_lease_seconds + 2 * deps.settings.node_timeout_seconds
    with deps.slots.hold(instance_id, action, wait=patience):
        with deps.engine.connect() as conn:
            instance = repo.get_instance_any_tenant(conn, instance_id)
        yield instance


@contextmanager
def recording(
    deps: Deps,
    task: Task,
    *,
    release: Callable[[Connection], bool] | None = None,
    intent: bool = False,
) -> Iterator[Connection]:
    """The transaction that records what ``task`` did, if the slot is still its own.

    A task stalled past its lease and taken over meanwhile records nothing:
    the caller gets ``ServiceUnavailable``, and a pass puts back on the nodes
    what the database holds (the taker's change, not this stale one).
    ``release``: the task's last record, which frees the slot in the same
    transaction (one transaction fewer) if ``release(conn)`` says so there.

    The call's audit event goes in the same transaction (``audit.write_in``):
    it exists exactly when the change was recorded. ``intent``: a record made
    before the nodes are touched (a pending user or password, for a later
    repair), which is not the change and carries no event.
    """
    freed = False
    try:
        with deps.engine.begin() as conn:
            freed = release is not None and release(conn)
            if freed:
                deps.slots.release_in(conn, task)
            else:
                deps.slots.fence(conn, task)
            yield conn
            if not intent:
                audit.write_in(conn)
        if freed:
            deps.slots.released(task)
    except TaskLost as exc:
        log.warning(
            "task %s (%s) on %s outlived its lease and was taken over; nothing recorded",
            task.task_id,
            task.action,
            task.instance_id,
        )
        deps.reconciler.mark_dirty(task.instance_id, task.account)
        raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise
        # The nodes have the change and the database may not: a pass puts the
        # nodes back to whatever the database holds once it answers again.
        log.warning(
            "request %s: task %s (%s) on %s: not recorded, the database is unavailable (%s)",
            current_request_id.get(),
            task.task_id,
            task.action,
            task.instance_id,
            describe_database_error(exc),
        )
        deps.reconciler.mark_dirty(task.instance_id, task.account)
        raise ApiError(errors.SERVICE_UNAVAILABLE) from exc
