"""The per-instance task slot (api.md §6): one mutating task at a time, across processes.

The slot is a row whose primary key is the instance ID, so taking it is one
INSERT that either wins or fails on every engine; no process lock is
involved. The holder renews a lease while it works; a slot whose lease ran
out (its holder died) is taken over by the next caller, who is told so and
must bring the instance's nodes back in line before its own change.

A holder that was only stalled (a stopped process, a long pause) past its
lease may wake after such a takeover. It must not record its result then:
the transaction that records it first ``fence``s the slot, which fails once
the row is another task's, and which holds the row until the commit, so a
takeover comes strictly before or strictly after the record.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, update
from sqlalchemy.exc import IntegrityError

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.store import repo
from rkvstore.store.tables import tasks

log = logging.getLogger("rkvstore.tasks")
HOLDER = f"{socket.gethostname()}:{os.getpid()}"
RECONCILE = "Reconcile"


class TaskLost(Exception):
    """The task's lease ran out and another task took the slot over."""


@dataclass(frozen=True)
class Task:
    instance_id: str
    task_id: str
    action: str
    took_over: bool  # the previous holder died mid-task: reconcile before changing


class TaskSlots:
    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.clock = clock
        # One thread renews the leases of every task this process holds.
        self._held: dict[str, Task] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def acquire(self, instance_id: str, action: str, *, wait_for_reconcile: float = 5.0) -> Task:
        """Take the slot or raise ``TaskExists`` at once (no waiting, no queue).

        The reconciler's short passes are not tasks a caller should see: a
        caller who meets one waits (bounded) for it instead.
        """
        task_id = str(uuid.uuid4())
        took_over = False
        deadline = time.monotonic() + wait_for_reconcile
        for _attempt in range(1000):
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(tasks).values(
                            instance_id=instance_id,
                            task_id=task_id,
                            action=action,
                            holder=HOLDER,
                            lease_expires_at=self.clock() + self.lease_seconds,
                        )
                    )
                return Task(instance_id, task_id, action, took_over)
            except IntegrityError:
                if self._free_if_expired(instance_id):
                    took_over = True
                    continue
                holder = self._holder_action(instance_id)
                if holder is None:
                    continue  # released between our INSERT and this look: try again
                if holder == RECONCILE and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                break
        raise ApiError(errors.TASK_EXISTS)

    def _holder_action(self, instance_id: str) -> str | None:
        with self.engine.connect() as conn:
            return repo.task_action(conn, instance_id)

    def _free_if_expired(self, instance_id: str) -> bool:
        with self.engine.begin() as conn:
            freed = conn.execute(
                delete(tasks).where(
                    tasks.c.instance_id == instance_id,
                    tasks.c.lease_expires_at < self.clock(),
                )
            ).rowcount
        if freed:
            log.warning(
                "task slot of %s: lease expired, holder presumed dead; taking over", instance_id
            )
        return bool(freed)

    def renew(self, task: Task) -> bool:
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(tasks)
                .where(tasks.c.task_id == task.task_id)
                .values(lease_expires_at=self.clock() + self.lease_seconds)
            ).rowcount
        return bool(renewed)

    def fence(self, conn: Connection, task: Task) -> None:
        """Within the transaction that records ``task``'s result: still ours, or ``TaskLost``.

        Renewing the lease writes the row, so a takeover (which deletes it)
        waits for this transaction or has already happened; never between.
        """
        renewed = conn.execute(
            update(tasks)
            .where(tasks.c.task_id == task.task_id)
            .values(lease_expires_at=self.clock() + self.lease_seconds)
        ).rowcount
        if not renewed:
            raise TaskLost(task.task_id)

    def release(self, task: Task) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(tasks).where(tasks.c.task_id == task.task_id))

    @contextmanager
    def hold(
        self,
        instance_id: str,
        action: str,
        *,
        wait_for_reconcile: float = 5.0,
        patience: float = 0.0,
    ) -> Iterator[Task]:
        """Hold the slot for the block, renewing its lease; released however the block ends.

        ``patience`` (background work only, never a caller's request): keep
        trying that long instead of raising ``TaskExists`` at once.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                task = self.acquire(instance_id, action, wait_for_reconcile=wait_for_reconcile)
                break
            except ApiError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        with self._held_lock:
            self._held[task.task_id] = task
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_forever, name="task-leases", daemon=True
                )
                self._renewer.start()
        try:
            yield task
        finally:
            with self._held_lock:
                self._held.pop(task.task_id, None)
            self.release(task)

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lease_seconds / 3)
            with self._held_lock:
                held = list(self._held.values())
            for task in held:
                try:
                    if not self.renew(task):
                        log.error("task %s on %s lost its slot", task.task_id, task.instance_id)
                except Exception:
                    log.exception("renewing the lease of task %s failed; will retry", task.task_id)
