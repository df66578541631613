"""Keeps every node in line with the database: drift, late commands, restarted nodes.

The work follows what changed (issue 10), and every process on the database
shares one state (table ``reconcile_state``, see ``store/line_state.py``):

- A flag (``mark_dirty``: a change rolled back or not recorded, a node
  restarted, a task whose holder died) asks for a pass at once. It reaches the
  database from a background writer (a caller never waits for the database,
  nor fails with it), and wakes this process's loop; another process's loop
  sees it at its next look, every ``RKVSTORE_RECONCILE_INTERVAL_SECONDS``.
- Every ``Normal`` instance is verified once per
  ``RKVSTORE_VERIFY_INTERVAL_SECONDS``, on a schedule spread evenly over the
  interval. Each verify is claimed by one process with a lease, so processes
  divide the work and none repeats another's.
- An instance a pass left out of line (a node out of reach) is looked at
  again one reconcile interval later; one whose slot was busy, sooner.

A pass holds the instance's task slot (action ``Reconcile``) so that it never
races a change in flight. Claimed instances are passed over in batches (one
tenant's each): slots taken and rows read with a statement or two for the whole
batch, each instance's nodes asked on a thread of its own, the results written
back in one transaction (those slower than ``PATIENCE_SECONDS`` apart, so that
a stalled node holds up only its own instance). Batches run on a pool shared
fairly between tenants: one tenant's instances whose nodes stall hold at most
``PASSES_PER_TENANT`` workers.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack

from sqlalchemy.exc import SQLAlchemyError

from rkvstore.engine.redis_engine import ReconcileReport
from rkvstore.errors import ApiError
from rkvstore.services import reconcile_batch
from rkvstore.services.context import Deps
from rkvstore.services.fair import FairPool
from rkvstore.services.reconcile_flags import LocalFlags
from rkvstore.services.tasks import RECONCILE, Task
from rkvstore.store import line_state, repo
from rkvstore.store.db import database_unavailable, describe_database_error
from rkvstore.store.line_state import ALL, Claimed, Outcome

log = logging.getLogger("rkvstore.reconcile")

# An instance whose slot a task held when its pass came (often the very task
# that flagged it) is tried again this soon.
RETRY_BUSY_SECONDS = 0.2
# Batches passed over at once, and at most this many of one tenant's.
PASS_WORKERS = 8
PASSES_PER_TENANT = 2
# Batches of one tenant queued or running at once; its other claims wait.
TENANT_QUEUE = 2 * PASSES_PER_TENANT
# Instances claimed per look, and per batch.
CLAIM_LIMIT = 128
BATCH_SIZE = 32
# A batch's passes done within this are written back at once, the rest when done.
PATIENCE_SECONDS = 0.25
# Instances without a schedule yet (new ones) are looked for this often at most.
ADOPT_SECONDS = 10.0


def in_line_from(dirty: str | None, unreachable: str | None, account: str | None = None) -> bool:
    """``in_line`` from the columns ``reconcile_state.dirty`` and
    ``reconcile_state.unreachable`` (both NULL when no row joined: in line).

    Every node reached and nothing flagged; with ``account``: nothing flagged for it.
    """
    if unreachable:
        return False
    if not dirty:
        return True
    flagged = dirty.split(" ")
    return account is not None and ALL not in flagged and account not in flagged


class _Busy(Exception):
    """A task holds the instance's slot."""


class Reconciler:
    def __init__(self, deps: Deps, interval: float) -> None:
        self.deps = deps
        self.interval = interval
        self.verify_interval = deps.settings.verify_interval_seconds
        self.in_memory_interval = deps.settings.in_memory_verify_seconds
        # A claim not written back within this (its process died) is free again.
        settings = deps.settings
        self.claim_lease = max(settings.task_lease_seconds, 10 * settings.node_timeout_seconds)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.flags = LocalFlags(deps.engine, self.verify_interval, self._wake.set)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._passes = FairPool(PASS_WORKERS, PASSES_PER_TENANT, "reconcile")
        self._batches = 0  # batches queued or running
        self._tenant_batches: dict[str, int] = {}  # the same, per tenant
        self._soonest = math.inf  # when a put-off instance wants its next look (time.time())
        self._next_adopt = 0.0
        self._claims = itertools.count()
        self._claimer = uuid.uuid4().hex[:12]
        self._database_down = False  # logged once per outage, not once per look
        self._last_look: float | None = None  # time.monotonic() of the loop's last look

    # ------------------------------------------------------------------ state for Describe*

    def in_line(self, instance_id: str, account: str | None = None) -> bool:
        """Every node reached and nothing flagged; with ``account``: nothing flagged for it."""
        return in_line_from(*self.line(instance_id), account)

    def unwritten(self, instance_id: str) -> set[str]:
        """The accounts this process flagged that the shared state may not hold yet.

        Take them BEFORE reading the shared state, never after: the background
        writer commits a flag and only then drops it here, so a snapshot taken
        first meets every flag either here or in the read that follows. Taken
        after, a flag committed just after the read and dropped just before
        the snapshot is in neither, and an account the failed change just
        flagged reads ``Available`` (a hung node's 503 followed at once by
        DescribeAccounts did).
        """
        return self.flags.pending(instance_id)

    def in_line_as_read(
        self, flagged: set[str], dirty: str | None, unreachable: str | None
    ) -> bool:
        """``in_line`` from the state a caller read itself (joined onto its own
        query) and ``flagged``, ``unwritten`` as taken before that read."""
        return in_line_from(*self.line_as_read(flagged, dirty, unreachable))

    @staticmethod
    def line_as_read(
        flagged: set[str], dirty: str | None, unreachable: str | None
    ) -> tuple[str | None, str | None]:
        """``line`` from the state a caller read itself, with ``flagged``
        (``unwritten``, taken before that read)."""
        if flagged:
            dirty = " ".join(sorted(flagged | set(dirty.split(" ") if dirty else ())))
        return dirty, unreachable

    def line(self, instance_id: str) -> tuple[str | None, str | None]:
        """``(dirty, unreachable)`` for ``in_line_from``, read once for many accounts.

        The state every process shares (one primary-key look-up), with the flags
        this process raised that have not reached it yet; the database away
        reads as out of line (the caller meets the outage itself).
        """
        flagged = self.unwritten(instance_id)  # first: see ``unwritten``
        try:
            with self.deps.single.connect() as conn:
                dirty, unreachable = line_state.read(conn, instance_id)
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                raise
            return ALL, None
        return self.line_as_read(flagged, dirty, unreachable)

    def mark_dirty(self, instance_id: str, account: str | None = None) -> None:
        """A change may have left ``account`` (None: any account) out of line: pass soon.

        Never waits for the database and never fails: the flag is written by a
        background writer (tried again while the database is away), and this
        process's ``in_line`` sees it meanwhile.
        """
        self.flags.raise_flag(instance_id, account)

    def forget(self, instance_id: str) -> None:
        """The instance is deleted (its row went with it, by its foreign key)."""
        self.flags.forget(instance_id)

    # ------------------------------------------------------------------ one instance

    def reconcile_instance(
        self, instance_id: str, *, holding_slot: bool = False
    ) -> ReconcileReport | None:
        """One pass over one instance; ``None`` when it is busy or not ``Normal``."""
        try:
            return self._reconcile(instance_id, holding_slot)
        except _Busy:  # a task is running: it brings the nodes in line itself
            return None

    def _reconcile(
        self,
        instance_id: str,
        holding_slot: bool,
        claim: tuple[str, Claimed] | None = None,
    ) -> ReconcileReport | None:
        """The pass one at a time: under a request's slot, or taking over a dead
        holder's (``claim``: the loop's claim it answers)."""
        if self._normal(instance_id) is None:
            return None
        with ExitStack() as slot:
            if not holding_slot:
                try:
                    slot.enter_context(self.deps.slots.hold(instance_id, RECONCILE, wait=0))
                except ApiError as exc:
                    raise _Busy(instance_id) from exc
            instance = self._normal(instance_id)  # again, under the slot
            if instance is None:
                return None
            with self.deps.engine.connect() as conn:
                seen = line_state.flags_of(conn, instance_id)
                before = line_state.read(conn, instance_id)[1]
            raised = self.flags.raised(instance_id)
            report = self._pass(instance)
            now = time.time()
            # Still under the slot, so no task's failure can be flagged in between
            # and then wiped here; a flag raised during the pass stays for the next.
            with self.deps.engine.begin() as conn:
                watched = instance.accounts_in_memory
                if claim is None:
                    outcome = self._outcome(instance_id, seen, report, None, now, watched)
                    line_state.record(conn, outcome, now, self.verify_interval)
                else:
                    outcome = self._outcome(instance_id, seen, report, claim[1], now, watched)
                    line_state.finish(conn, claim[0], [outcome], now)
            self._dropped_local(instance_id, raised, report)
        self._log_pass(instance_id, before, report, outcome, claim[1] if claim else None)
        return report

    def _normal(self, instance_id: str) -> repo.InstanceRow | None:
        with self.deps.engine.connect() as conn:
            instance = repo.get_instance_any_tenant(conn, instance_id)
        return instance if instance is not None and instance.status == "Normal" else None

    def _pass(self, instance: repo.InstanceRow) -> ReconcileReport:
        """One instance's pass, reading what it needs itself."""
        with self.deps.engine.connect() as conn:
            loaded = reconcile_batch.load(conn, [instance.instance_id])
        loaded.instances[instance.instance_id] = instance
        report = reconcile_batch.one_pass(self.deps, loaded, instance.instance_id)
        if loaded.pending.get(instance.instance_id) and report.in_line:
            with self.deps.engine.begin() as conn:
                reconcile_batch.drop_pending(conn, loaded, {instance.instance_id: report})
        return report

    def _dropped_local(self, instance_id: str, raised: int | None, report: ReconcileReport) -> None:
        """This process's flags raised before an in-line pass are answered by it."""
        if report.in_line:
            self.flags.answered(instance_id, raised)

    def _outcome(
        self,
        instance_id: str,
        seen: int,
        report: ReconcileReport,
        claimed: Claimed | None,
        now: float,
        watched: bool = False,
    ) -> Outcome:
        """``watched``: its nodes keep accounts in memory only, so it is looked at again
        every ``in_memory_verify_seconds`` even in line: a restarted node gets its
        accounts back that soon (a round trip per node and a write each time)."""
        due, rnd = (math.inf, 0) if claimed is None else (claimed.due_at, claimed.round)
        if claimed is not None and claimed.scheduled(now):
            # The same phase, the first turn after now: never more than one
            # interval from this pass, however late it ran (a pass late by most
            # of an interval is followed soon by the next).
            steps = math.floor((now - due) / self.verify_interval) + 1
            due, rnd = due + steps * self.verify_interval, rnd + steps
        retry = None if report.in_line else now + self.interval
        if watched:
            retry = min(retry or math.inf, now + self.in_memory_interval)
        if retry is not None:
            self._look_by(retry)
        return Outcome(instance_id, seen, report.in_line, list(report.unreachable), due, rnd, retry)

    def _log_pass(
        self,
        instance_id: str,
        before: str | None,
        report: ReconcileReport,
        outcome: Outcome,
        claimed: Claimed | None,
    ) -> None:
        was = set(before.split("\n")) if before else set()
        for label in sorted(set(report.unreachable) - was):
            log.warning(
                "instance %s: node %s out of reach (%s); its accounts are Unavailable",
                instance_id,
                label,
                report.unreachable[label],
            )
        for label in sorted(was - set(report.unreachable)):
            log.info("instance %s: node %s in reach again", instance_id, label)
        if claimed is not None and outcome.round != claimed.round:
            log.debug(
                "verified %s round %d: %s",
                instance_id,
                outcome.round,
                "in line" if report.in_line else "out of line",
            )
        else:
            log.debug("verified %s out of turn: %s", instance_id, report.in_line)

    # ------------------------------------------------------------------ batches

    def _run_batch(self, token: str, tenant: str, batch: Sequence[Claimed]) -> None:
        try:
            self._verify_batch(token, batch)
        except SQLAlchemyError as exc:
            if not database_unavailable(exc):
                log.exception("reconciling %d instance(s) failed; will retry", len(batch))
            # else: the loop says once that the database is away
        except Exception:
            log.exception("reconciling %d instance(s) failed; will retry", len(batch))
        finally:
            self._batch_done(tenant)
            self._wake.set()

    def _batch_done(self, tenant: str) -> None:
        with self._lock:
            self._batches -= 1
            left = self._tenant_batches.get(tenant, 1) - 1
            if left > 0:
                self._tenant_batches[tenant] = left
            else:
                self._tenant_batches.pop(tenant, None)

    def _verify_batch(self, token: str, batch: Sequence[Claimed]) -> int:
        """Pass over a batch of claimed instances; how many were passed over."""
        deps = self.deps
        by_id = {c.instance_id: c for c in batch}
        with deps.engine.begin() as conn:  # still ours (not claimed again after a lease)
            mine = line_state.renew_claims(conn, token, list(by_id), time.time() + self.claim_lease)
        done = 0
        with deps.slots.hold_free(sorted(mine), RECONCILE) as held:
            slots = {t.instance_id: t for t in held}
            busy = sorted(mine - set(slots))
            if slots:
                with deps.engine.connect() as conn:
                    loaded = reconcile_batch.load(conn, list(slots))
                normal = [i for i in slots if _normal(loaded, i)]
                gone = sorted(set(slots) - set(normal))
                if gone:
                    with deps.engine.begin() as conn:
                        line_state.put_off(conn, token, gone, None)
                done = self._passes_of(token, by_id, loaded, normal, slots)
        # A slot someone holds: a live task (it brings the nodes in line; look
        # again soon all the same), or a dead holder's, taken over one at a time.
        for instance_id in busy:
            try:
                if self._reconcile(instance_id, False, (token, by_id[instance_id])) is not None:
                    done += 1
                    continue
            except _Busy:
                pass
            with deps.engine.begin() as conn:
                line_state.put_off(conn, token, [instance_id], time.time() + RETRY_BUSY_SECONDS)
            self._look_by(time.time() + RETRY_BUSY_SECONDS)
        return done

    def _passes_of(
        self,
        token: str,
        by_id: dict[str, Claimed],
        loaded: reconcile_batch.Loaded,
        normal: list[str],
        slots: dict[str, Task],
    ) -> int:
        """The batch's passes, each on a thread of its own; those done within
        ``PATIENCE_SECONDS`` are written back (and their slots released) at once,
        so that a stalled node holds up its own instance, not its batch-mates."""
        raised = {i: self.flags.raised(i) for i in normal}
        if len(normal) == 1:  # no thread needed
            report = reconcile_batch.one_pass(self.deps, loaded, normal[0])
            self._write_back(token, by_id, loaded, {normal[0]: report}, raised, slots)
            return 1
        with ThreadPoolExecutor(max_workers=len(normal), thread_name_prefix="pass") as pool:
            futures = {
                pool.submit(reconcile_batch.one_pass, self.deps, loaded, i): i for i in normal
            }
            group, later = wait(futures, timeout=PATIENCE_SECONDS)
            written = 0
            while group:
                reports: dict[str, ReconcileReport] = {}
                for future in group:
                    try:
                        reports[futures[future]] = future.result()
                    except Exception:  # its claim runs out; the others are written
                        log.exception("reconciling %s failed; will retry", futures[future])
                written += self._write_back(token, by_id, loaded, reports, raised, slots)
                group, later = wait(later)[0], set()
        return written

    def _write_back(
        self,
        token: str,
        by_id: dict[str, Claimed],
        loaded: reconcile_batch.Loaded,
        reports: dict[str, ReconcileReport],
        raised: dict[str, int | None],
        slots: dict[str, Task],
    ) -> int:
        """What passes found, in one transaction, still under their slots; then the slots go."""
        if not reports:
            return 0
        now = time.time()
        outcomes = [
            self._outcome(i, by_id[i].flags, report, by_id[i], now, _watched(loaded, i))
            for i, report in reports.items()
        ]
        with self.deps.engine.begin() as conn:
            line_state.finish(conn, token, outcomes, now)
            reconcile_batch.drop_pending(conn, loaded, reports)
        self.deps.slots.release_early([slots[i] for i in reports])
        for outcome in outcomes:
            iid = outcome.instance_id
            self._dropped_local(iid, raised[iid], reports[iid])
            self._log_pass(iid, by_id[iid].unreachable, reports[iid], outcome, by_id[iid])
        return len(outcomes)

    def _look_by(self, when: float) -> None:
        with self._lock:
            self._soonest = min(self._soonest, when)

    # ------------------------------------------------------------------ the loop

    def run_once(self) -> int:
        """One look: schedule new instances, claim what is flagged or due, and
        start passing over it in batches; how many instances were claimed."""
        now = time.time()
        with self._lock:
            if self._soonest <= now:  # this look is the one it wanted
                self._soonest = math.inf
        if now >= self._next_adopt:
            self._adopt(now)
        with self._lock:
            # Enough queued: claim when they are done. A tenant with its fill
            # queued (its nodes stalled, say) does not count: it must not keep
            # every other tenant's flagged instances waiting.
            full = sum(n for n in self._tenant_batches.values() if n >= TENANT_QUEUE)
            if self._batches - full >= 2 * PASS_WORKERS:
                return 0
        with self.deps.engine.connect() as conn:
            first = line_state.earliest(conn)
        if first is None or first > now:
            return 0  # nothing wanted yet: no write
        token = f"{self._claimer}-{next(self._claims)}"
        with self.deps.engine.begin() as conn:
            claimed = line_state.claim(conn, token, now, now + self.claim_lease, CLAIM_LIMIT)
        by_tenant: dict[str, list[Claimed]] = {}
        for row in claimed:
            by_tenant.setdefault(row.account_id, []).append(row)
        later: list[str] = []
        for tenant, rows in by_tenant.items():
            # An instance whose nodes were out of reach goes alone: a stalled node
            # holds up its own instance's batch, not thirty others.
            chunks = [[r] for r in rows if r.unreachable] + _chunks(
                [r for r in rows if not r.unreachable], BATCH_SIZE
            )
            for i, chunk in enumerate(chunks):
                with self._lock:
                    if self._tenant_batches.get(tenant, 0) >= TENANT_QUEUE:
                        # Its fill is queued: the rest waits in the database.
                        later += [r.instance_id for c in chunks[i:] for r in c]
                        break
                    self._batches += 1
                    self._tenant_batches[tenant] = self._tenant_batches.get(tenant, 0) + 1
                job = functools.partial(self._run_batch, token, tenant, chunk)
                if not self._passes.submit(tenant, job):
                    self._batch_done(tenant)  # shut down
                    return len(claimed)
        if later:
            with self.deps.engine.begin() as conn:
                line_state.put_off(conn, token, later, now + self.interval)
        return len(claimed) - len(later)

    def _adopt(self, now: float) -> None:
        """Schedule instances never scheduled; a failure here never stops the claims."""
        try:
            with self.deps.engine.begin() as conn:
                line_state.adopt(conn, now, self.verify_interval)
        except SQLAlchemyError as exc:
            log.warning(
                "reconciler: scheduling new instances failed (%s); will retry",
                describe_database_error(exc),
            )
        period = min(ADOPT_SECONDS, max(self.interval, self.verify_interval / 4))
        self._next_adopt = now + period

    def verify_due(self) -> int:
        """Pass over everything flagged or due now, on this thread (a tool for
        profiles and tests); how many passes."""
        total = 0
        for _ in range(10_000):  # bounded: a fleet of 1.28 million instances
            now = time.time()
            token = f"{self._claimer}-{next(self._claims)}"
            with self.deps.engine.begin() as conn:
                claimed = line_state.claim(conn, token, now, now + self.claim_lease, CLAIM_LIMIT)
            if not claimed:
                break
            for chunk in _chunks(claimed, BATCH_SIZE):
                total += self._verify_batch(token, chunk)
        return total

    def seconds_since_look(self) -> float | None:
        """How long ago the loop last looked (done or failed); None where it does not run."""
        last = self._last_look
        return None if last is None else time.monotonic() - last

    def start(self) -> None:
        self._last_look = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._last_look = None
        self.flags.stop()
        # Queued passes are dropped (their claims run out); running ones (bounded
        # by the node timeout) finish before the engine and the database they use
        # are closed.
        self._passes.shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once() >= CLAIM_LIMIT
                if self._database_down:
                    self._database_down = False
                    log.info("reconciler: the database answers again")
            except SQLAlchemyError as exc:
                if not database_unavailable(exc):
                    log.exception("reconciler look failed; will retry")
                elif not self._database_down:
                    self._database_down = True
                    log.warning(
                        "reconciler: the database is unavailable (%s); will retry",
                        describe_database_error(exc),
                    )
            except Exception:
                log.exception("reconciler look failed; will retry")
            self._last_look = time.monotonic()  # a stalled look never gets here (/readyz)
            with self._lock:  # kept until a look comes after it (a wait may end early)
                wait = 0.0 if busy else min(self.interval, max(0.0, self._soonest - time.time()))
            self._wake.wait(wait)
            self._wake.clear()


def _normal(loaded: reconcile_batch.Loaded, instance_id: str) -> bool:
    instance = loaded.instances.get(instance_id)
    return instance is not None and instance.status == "Normal"


def _watched(loaded: reconcile_batch.Loaded, instance_id: str) -> bool:
    instance = loaded.instances.get(instance_id)
    return instance is not None and instance.accounts_in_memory


def _chunks(rows: list[Claimed], size: int) -> list[list[Claimed]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
