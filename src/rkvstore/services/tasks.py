"""The per-instance task slot (api.md §6): one mutating task at a time, across processes.

The slot is a row whose primary key is the instance ID, so taking it is one
INSERT that either wins or finds the row there, on every engine; no process
lock is involved. A caller who finds the slot busy waits for it, up to
``wait_seconds``, and only then gets ``TaskExists``. Waiters of one process
queue in arrival order and only the first of them looks at the database:
woken at once when a task of this process releases the slot, and otherwise
(a holder in another process) polling with a backoff that stops at
``POLL_MAX_SECONDS``. A waiting call sleeps; it costs next to no CPU.

The holder renews a lease while it works. A slot whose lease ran out (its
holder died somewhere) is taken over by the next caller, who is told so and
must bring the instance's nodes back in line before its own change. A holder
known to be dead is taken over at once, without waiting out its lease: a
process on this host (same boot, same PID namespace) that is gone, or whose
PID now belongs to a newer process; or a task of this very process that is
over but whose row could not be deleted (the database was away).

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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from rkvstore import errors, metrics
from rkvstore.errors import ApiError
from rkvstore.store.db import database_unavailable, describe_database_error
from rkvstore.store.tables import instances, tasks

log = logging.getLogger("rkvstore.tasks")
RECONCILE = "Reconcile"
# The head waiter's look at a slot held by another process: first after
# POLL_MIN_SECONDS, doubling up to POLL_MAX_SECONDS.
POLL_MIN_SECONDS = 0.01
POLL_MAX_SECONDS = 0.25
# A slot held by a task of this process is waited for without polling; its
# release wakes the waiter. Looked at again this often all the same.
LOCAL_HOLDER_RECHECK_SECONDS = 1.0


# --------------------------------------------------------------------------- who holds a slot


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (ticks since boot); ``None``: there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else "?"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return "?"


def _identity() -> tuple[str, str, str]:
    """This machine's boot and PID namespace: where a PID means one process."""
    boot = (_read("/proc/sys/kernel/random/boot_id") or "?").replace("-", "")[:12]
    return socket.gethostname(), boot, _pid_namespace()


_HOST, _BOOT, _PID_NS = _identity()


def _holder() -> str:
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_start_time(pid) or '?'}:{_BOOT}:{_PID_NS}"


HOLDER = _holder()

# Tasks this process holds or is taking, across every ``TaskSlots`` of it.
_live_tasks: set[str] = set()
_live_lock = threading.Lock()


def _forked() -> None:
    """In a child forked after import (``serve --workers``): a process of its own.

    Its tasks must name it, not the parent: a sibling worker would otherwise
    read its live tasks as its own and, not finding them, as dead.
    """
    global HOLDER, _live_lock
    HOLDER = _holder()
    _live_lock = threading.Lock()
    _live_tasks.clear()


os.register_at_fork(after_in_child=_forked)


def holder_is_dead(holder: str, task_id: str) -> bool:
    """Whether the holder of a slot is known to be gone (never a guess: unknown is alive)."""
    if holder == HOLDER:
        with _live_lock:
            return task_id not in _live_tasks
    parts = holder.split(":")
    if len(parts) != 5:
        return False  # another format (an older rkvstore): wait out its lease
    host, pid_text, started, boot, pid_ns = parts
    if (host, boot, pid_ns) != (_HOST, _BOOT, _PID_NS) or "?" in (boot, pid_ns):
        return False  # another machine, boot or container: its PIDs mean nothing here
    if not pid_text.isdigit():
        return False
    now = _start_time(int(pid_text))
    if now is None:
        return True
    return started != "?" and now != "?" and now != started  # the PID was reused


# --------------------------------------------------------------------------- the slots


class TaskLost(Exception):
    """The task's lease ran out and another task took the slot over."""


@dataclass(frozen=True)
class Task:
    instance_id: str
    task_id: str
    action: str
    took_over: bool  # the previous holder died mid-task: reconcile before changing
    account: str | None = None
    # What ``read`` returned, in the transaction that took the slot: the state the
    # task starts from, read once (``hold(read=…)``).
    seen: Any = field(default=None, compare=False, repr=False)


@dataclass(eq=False)
class _Waiter:
    wake: threading.Event = field(default_factory=threading.Event)
    busy: bool = False  # the slot was not free at the first look (metrics)


@dataclass(frozen=True)
class _Busy:
    local: bool  # held by a live task of this process


class TaskSlots:
    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = 30.0,
        wait_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.clock = clock
        self._insert = _insert_if_free(engine)
        self._take_if_normal = _take_if_normal(engine)
        # Waiters of this process, per instance, in arrival order.
        self._queues: dict[str, deque[_Waiter]] = {}
        self._queue_lock = threading.Lock()
        # One thread renews the leases of every task this process holds, and
        # deletes the rows of tasks whose release failed.
        self._held: dict[str, Task] = {}
        self._unreleased: dict[str, Task] = {}
        self._released_early: set[str] = set()  # freed with their record, block not over
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    # ------------------------------------------------------------------ taking the slot

    def acquire(
        self,
        instance_id: str,
        action: str,
        *,
        account: str | None = None,
        wait: float | None = None,
        read: Callable[[Connection], Any] | None = None,
    ) -> Task:
        """Take the slot, waiting for it up to ``wait`` seconds; else ``TaskExists``.

        ``wait`` defaults to the configured bound; 0 fails at once, and never
        goes ahead of callers already waiting. ``read`` runs in the transaction
        that takes the slot; the task's ``seen`` is what it returned.
        """
        wait = self.wait_seconds if wait is None else wait
        deadline = time.monotonic() + wait
        waiter = _Waiter()
        with self._queue_lock:
            queue = self._queues.setdefault(instance_id, deque())
            if wait <= 0 and queue:
                raise ApiError(errors.TASK_EXISTS)
            queue.append(waiter)
        started = time.monotonic()
        try:
            task = self._acquire_in_turn(
                instance_id, action, account, queue, waiter, deadline, read
            )
        except ApiError:
            if waiter.busy:
                _count_wait("task_exists", started)
            raise
        else:
            if waiter.busy:
                _count_wait("taken", started)
            return task
        finally:
            with self._queue_lock:
                queue.remove(waiter)
                if queue:
                    queue[0].wake.set()  # the next in line looks now
                elif self._queues.get(instance_id) is queue:
                    del self._queues[instance_id]

    def _acquire_in_turn(
        self,
        instance_id: str,
        action: str,
        account: str | None,
        queue: deque[_Waiter],
        waiter: _Waiter,
        deadline: float,
        read: Callable[[Connection], Any] | None,
    ) -> Task:
        poll = POLL_MIN_SECONDS
        while True:
            while True:  # until first in line
                with self._queue_lock:
                    if queue[0] is waiter:
                        break
                    waiter.wake.clear()
                waiter.busy = True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ApiError(errors.TASK_EXISTS)
                waiter.wake.wait(remaining)
            # A release from now on sets the event: it is not lost while we look.
            waiter.wake.clear()
            outcome = self._try_take(instance_id, action, account, read)
            if isinstance(outcome, Task):
                return outcome
            waiter.busy = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApiError(errors.TASK_EXISTS)
            if outcome.local:
                waiter.wake.wait(min(LOCAL_HOLDER_RECHECK_SECONDS, remaining))
                poll = POLL_MIN_SECONDS
            else:
                waiter.wake.wait(min(poll, remaining))
                poll = min(poll * 2, POLL_MAX_SECONDS)

    def _try_take(
        self,
        instance_id: str,
        action: str,
        account: str | None,
        read: Callable[[Connection], Any] | None = None,
    ) -> Task | _Busy:
        values = _new_task_row(instance_id, action, account)
        task_id = values["task_id"]
        why: str | None = None
        try:
            with self.engine.begin() as conn:
                outcome, why = self._take_in(conn, instance_id, values)
                if read is not None and isinstance(outcome, Task):
                    outcome = replace(outcome, seen=read(conn))
        except IntegrityError:  # another taker was quicker
            outcome = _Busy(False)
        except BaseException:
            self._forget(task_id)
            raise
        if isinstance(outcome, _Busy):
            self._forget(task_id)
        elif why is not None:
            log.warning("task slot of %s: %s; taking over", instance_id, why)
        return outcome

    def _take_in(
        self, conn: Connection, instance_id: str, values: dict[str, Any]
    ) -> tuple[Task | _Busy, str | None]:
        """Within one transaction: the slot, taken over if its holder is gone (and why)."""
        task = Task(instance_id, values["task_id"], values["action"], False, values["account_name"])
        lease = self.clock() + self.lease_seconds
        inserted = conn.execute(self._insert, {"lease_expires_at": lease, **values}).first()
        if inserted is not None:
            return task, None
        row = conn.execute(
            select(tasks.c.task_id, tasks.c.holder, tasks.c.lease_expires_at).where(
                tasks.c.instance_id == instance_id
            )
        ).first()
        if row is None:  # released between the two statements: look again soon
            return _Busy(False), None
        if row.lease_expires_at < self.clock():
            why = "lease expired, holder presumed dead"
        elif holder_is_dead(str(row.holder), str(row.task_id)):
            why = "its holder is gone"
        else:
            with _live_lock:
                local = str(row.holder) == HOLDER and str(row.task_id) in _live_tasks
            return _Busy(local), None
        if not conn.execute(delete(tasks).where(tasks.c.task_id == row.task_id)).rowcount:
            return _Busy(False), None  # another taker was quicker
        conn.execute(insert(tasks).values(lease_expires_at=lease, **values))
        return replace(task, took_over=True), why

    @staticmethod
    def _forget(task_id: str) -> None:
        with _live_lock:
            _live_tasks.discard(task_id)

    def take_over_dead_holders(self) -> list[str]:
        """At start: free every slot whose holder is known dead; the instances they held."""
        freed: list[str] = []
        with self.engine.begin() as conn:
            for row in conn.execute(select(tasks.c.instance_id, tasks.c.task_id, tasks.c.holder)):
                if holder_is_dead(str(row.holder), str(row.task_id)):
                    conn.execute(delete(tasks).where(tasks.c.task_id == row.task_id))
                    freed.append(str(row.instance_id))
        for instance_id in freed:
            log.warning("task slot of %s: its holder is gone; freed at start", instance_id)
        return freed

    # ------------------------------------------------------------------ holding it

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
            _RENEW_TASK,
            {"which_task": task.task_id, "lease": self.clock() + self.lease_seconds},
        ).rowcount
        if not renewed:
            raise TaskLost(task.task_id)

    def release_in(self, conn: Connection, task: Task) -> None:
        """Within the transaction that records ``task``'s result: free the slot with it.

        Deleting the row fences like ``fence`` (it fails once the row is
        another task's, and holds the row until the commit). Once that
        transaction has committed, call ``released``.
        """
        if not conn.execute(_DELETE_TASK, {"task_id": task.task_id}).rowcount:
            raise TaskLost(task.task_id)

    def released(self, task: Task) -> None:
        """``task``'s slot was freed by the transaction that recorded it: it is over."""
        with self._held_lock:
            self._held.pop(task.task_id, None)
            self._released_early.add(task.task_id)
        self._forget(task.task_id)
        self._wake_next(task.instance_id)

    def holds(self, task: Task) -> bool:
        """Whether ``task`` still holds its slot (not freed with its record)."""
        with self._held_lock:
            return task.task_id not in self._released_early

    def release(self, task: Task) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(_DELETE_TASK, {"task_id": task.task_id})
        finally:
            self._forget(task.task_id)  # over either way: this process's waiters may take it
            self._wake_next(task.instance_id)

    def _wake_next(self, instance_id: str) -> None:
        with self._queue_lock:
            queue = self._queues.get(instance_id)
            if queue:
                queue[0].wake.set()

    @contextmanager
    def hold(
        self,
        instance_id: str,
        action: str,
        *,
        account: str | None = None,
        wait: float | None = None,
        read: Callable[[Connection], Any] | None = None,
    ) -> Iterator[Task]:
        """Hold the slot for the block, renewing its lease; released however the block
        ends (unless the block's record already freed it: ``release_in``)."""
        task = self.acquire(instance_id, action, account=account, wait=wait, read=read)
        with self.holding(task):
            yield task

    def try_take(
        self,
        instance_id: str,
        action: str,
        *,
        account: str | None,
        tenant: str,
        read: Callable[[Connection], Any] | None = None,
    ) -> Task | None:
        """The slot of ``tenant``'s ``Normal`` instance in one transaction, or ``None``.

        One attempt, no wait: ``None`` when the slot is busy, when callers of
        this process are already waiting for it (never ahead of them), or when
        the instance is not ``tenant``'s or not ``Normal`` — the caller then
        looks at the instance and waits its turn (``hold``). Hold the task
        returned with ``holding``.
        """
        with self._queue_lock:
            if self._queues.get(instance_id):
                return None
        values = _new_task_row(instance_id, action, account)
        values.update(lease_expires_at=self.clock() + self.lease_seconds, tenant=tenant)
        task_id = values["task_id"]
        found: Task | None = None
        try:
            with self.engine.begin() as conn:
                if conn.execute(self._take_if_normal, values).first() is not None:
                    task = Task(instance_id, task_id, action, False, account)
                    found = replace(task, seen=read(conn)) if read is not None else task
        except IntegrityError:  # another taker was quicker
            found = None
        except BaseException:
            # The commit itself may have failed (or landed unacknowledged): the
            # task is over either way, so its row, if any, is a dead holder's.
            self._forget(task_id)
            raise
        if found is None:
            self._forget(task_id)
        return found

    @contextmanager
    def holding(self, task: Task) -> Iterator[Task]:
        """Hold a taken slot for the block, renewing its lease; released however the
        block ends (unless the block's record already freed it: ``release_in``)."""
        with self._held_lock:
            self._held[task.task_id] = task
            self._start_renewer()
        failure: BaseException | None = None
        try:
            yield task
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with self._held_lock:
                self._held.pop(task.task_id, None)
                freed = task.task_id in self._released_early
                self._released_early.discard(task.task_id)
            if not freed:
                self._end(task, release_now=not _database_away(failure))

    def _end(self, task: Task, *, release_now: bool) -> None:
        """Release a held task's slot; when the database is away (or just failed the
        task: a release now would only wait out its bound again), leave the row to
        the renewer. Either way this process's callers may take the slot at once."""
        if release_now:
            try:
                self.release(task)
                return
            except SQLAlchemyError as exc:
                log.warning(
                    "task %s on %s: releasing its slot failed (%s); will retry",
                    task.task_id,
                    task.instance_id,
                    describe_database_error(exc),
                )
        else:
            self._forget(task.task_id)
            self._wake_next(task.instance_id)
        with self._held_lock:
            self._unreleased[task.task_id] = task

    def _start_renewer(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(
                target=self._renew_forever, name="task-leases", daemon=True
            )
            self._renewer.start()

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lease_seconds / 3)
            with self._held_lock:
                held = list(self._held.values())
                unreleased = list(self._unreleased.values())
            for task in unreleased:
                try:
                    self.release(task)
                except Exception:  # noqa: S112 (the database still away: the next round)
                    continue
                with self._held_lock:
                    self._unreleased.pop(task.task_id, None)
            for task in held:
                try:
                    renewed = self.renew(task)
                except Exception as exc:  # never the end of the renewer
                    log.warning(
                        "renewing the lease of task %s failed (%s); will retry",
                        task.task_id,
                        describe_database_error(exc),
                    )
                    continue
                with self._held_lock:
                    still_held = task.task_id in self._held
                # A task released since the list was taken has no row: not a loss.
                if not renewed and still_held:
                    log.error("task %s on %s lost its slot", task.task_id, task.instance_id)

    # ------------------------------------------------------------------ many (the reconciler)

    @contextmanager
    def hold_free(self, instance_ids: Sequence[str], action: str) -> Iterator[list[Task]]:
        """Take, in one statement, those of the slots that are free; hold them for the
        block (leases renewed) and release them in one statement.

        For the reconciler's batches: it never waits, never takes a slot over (a
        dead holder's slot is left to the one-at-a-time path), and never goes
        ahead of a caller of this process already waiting for a slot.
        """
        with self._queue_lock:
            wanted = [i for i in dict.fromkeys(instance_ids) if not self._queues.get(i)]
        candidates = {i: Task(i, str(uuid.uuid4()), action, False) for i in wanted}
        with _live_lock:  # live before their rows exist: never mistaken for dead ones
            _live_tasks.update(t.task_id for t in candidates.values())
        taken: list[Task] = []
        try:
            if candidates:
                lease = self.clock() + self.lease_seconds
                rows = [
                    {
                        "instance_id": t.instance_id,
                        "task_id": t.task_id,
                        "action": action,
                        "account_name": None,
                        "holder": HOLDER,
                        "lease_expires_at": lease,
                    }
                    for t in candidates.values()
                ]
                with self.engine.begin() as conn:  # one statement, many rows (cached)
                    won = conn.execute(self._insert.returning(tasks.c.instance_id), rows).all()
                taken = [candidates[str(r.instance_id)] for r in won]
        finally:
            lost = {t.task_id for t in candidates.values()} - {t.task_id for t in taken}
            with _live_lock:
                _live_tasks.difference_update(lost)
        with self._held_lock:
            for task in taken:
                self._held[task.task_id] = task
            if taken:
                self._start_renewer()
        failure: BaseException | None = None
        try:
            yield taken
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with self._held_lock:  # those not released early (``release_early``)
                left = [t for t in taken if self._held.pop(t.task_id, None) is not None]
            self._end_many(left, release_now=not _database_away(failure))

    def release_early(self, held: Sequence[Task]) -> None:
        """Release some of the slots a ``hold_free`` block holds before the block ends."""
        with self._held_lock:
            mine = [t for t in held if self._held.pop(t.task_id, None) is not None]
        self._end_many(mine, release_now=True)

    def _end_many(self, held: list[Task], *, release_now: bool) -> None:
        if not held:
            return
        if release_now:
            try:
                with self.engine.begin() as conn:
                    ids = [t.task_id for t in held]
                    conn.execute(delete(tasks).where(tasks.c.task_id.in_(ids)))
            except SQLAlchemyError as exc:
                log.warning(
                    "releasing %d reconciler slots failed (%s); will retry",
                    len(held),
                    describe_database_error(exc),
                )
                release_now = False
        for task in held:
            self._forget(task.task_id)
            self._wake_next(task.instance_id)
        if not release_now:
            with self._held_lock:  # the renewer deletes them when the database answers
                for task in held:
                    self._unreleased[task.task_id] = task


def _count_wait(result: str, started: float) -> None:
    metrics.TASK_SLOT_WAITS.labels(result).inc()
    metrics.TASK_SLOT_WAIT_SECONDS.observe(time.monotonic() - started)


def _database_away(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is the database being unavailable."""
    for _ in range(8):  # a short chain of causes
        if error is None:
            return False
        if isinstance(error, SQLAlchemyError) and database_unavailable(error):
            return True
        error = error.__cause__
    return False


def _insert_if_free(engine: Engine) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING``: a busy slot returns no row instead of an error.

    (Returning the row, because psycopg reports no row count for it.)
    """
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(tasks).on_conflict_do_nothing(index_elements=["instance_id"])
    return statement.returning(tasks.c.task_id)


def _new_task_row(instance_id: str, action: str, account: str | None) -> dict[str, Any]:
    """A new task's row, its task live from now on (never mistaken for a dead one)."""
    task_id = str(uuid.uuid4())
    with _live_lock:
        _live_tasks.add(task_id)
    return {
        "instance_id": instance_id,
        "task_id": task_id,
        "action": action,
        "account_name": account,
        "holder": HOLDER,
    }


def _take_if_normal(engine: Engine) -> Any:
    """The slot, if free, of an instance of the tenant that is ``Normal``: one
    ``INSERT … SELECT … ON CONFLICT DO NOTHING``, which returns no row otherwise."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    columns = ["instance_id", "task_id", "action", "account_name", "holder", "lease_expires_at"]
    eligible: Any = select(*(bindparam(c, type_=tasks.c[c].type) for c in columns)).where(
        instances.c.instance_id == bindparam("instance_id"),
        instances.c.account_id == bindparam("tenant"),
        instances.c.status == "Normal",
    )
    statement = dialect.insert(tasks).from_select(columns, eligible)
    return statement.on_conflict_do_nothing(index_elements=["instance_id"]).returning(
        tasks.c.task_id
    )


# Built once: the request path takes and frees a slot on every change.
_DELETE_TASK = delete(tasks).where(tasks.c.task_id == bindparam("task_id"))
# (An UPDATE's parameters may not be named after its columns.)
_RENEW_TASK = (
    update(tasks)
    .where(tasks.c.task_id == bindparam("which_task"))
    .values(lease_expires_at=bindparam("lease"))
)
