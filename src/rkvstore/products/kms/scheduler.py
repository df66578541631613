"""Rotation that runs by itself (issue 12 item 3, docs/kms.md §5 "Scheduler").

Every process that reconciles also runs this loop. Each look is one indexed
statement per kind of work (rotations due, graces ended, deletions due,
rotations a dead process left unfinished). Two processes may pick the same
secret: each change re-checks, in the instance's task slot, that it is still
to be done, so each due rotation is done once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from rkvstore import metrics
from rkvstore.errors import ApiError
from rkvstore.products.kms import rotation
from rkvstore.products.kms import store as kms_store
from rkvstore.products.kms.rotation import Stages
from rkvstore.services.context import Deps

log = logging.getLogger("rkvstore.kms")
BATCH = 50
# A secret whose work failed (its instance not Normal, a node away) is left
# alone for this many looks: it cannot take every look from the others.
RETRY_LOOKS = 30


class Scheduler:
    def __init__(self, deps: Deps, clock: Callable[[], float] = time.time) -> None:
        self.deps = deps
        self.clock = clock
        self.interval = deps.settings.kms_scheduler_interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rotations_done = 0
        self.rotations_failed = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kms-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)  # one change at most, bounded by its slot and nodes

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError as exc:
                log.warning("kms scheduler: the database is unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("kms scheduler look failed; will retry")
            self._stop.wait(self.interval)

    def run_once(self) -> int:
        """One look, and the work it found; how many changes were made."""
        deps = self.deps
        now = self.clock()
        settings = deps.settings
        stale_before = now - settings.task_lease_seconds - 2 * settings.node_timeout_seconds
        with deps.single.connect() as conn:
            due = kms_store.due_secret_ids(conn, now, stale_before, BATCH)
        done = 0
        for secret_id in due:
            if self._stop.is_set():
                break
            try:
                done += self._work(secret_id)
            except ApiError as exc:  # a node away, the slot busy: a later look tries again
                self.rotations_failed += 1
                metrics.KMS_ROTATIONS.labels("failed").inc()
                log.warning("kms scheduler: secret %s: %s", secret_id, exc.code)
            self._back_off_if_due(secret_id, now, stale_before)
        return done

    def _back_off_if_due(self, secret_id: str, now: float, stale_before: float) -> None:
        """Work still due after its attempt could not be done now: its next try waits
        (the others due meanwhile go first)."""
        with self.deps.engine.begin() as conn:
            if kms_store.still_due(conn, secret_id, now, stale_before):
                kms_store.retry_later(conn, secret_id, now + RETRY_LOOKS * self.interval)

    def _work(self, secret_id: str) -> int:
        deps = self.deps
        now = self.clock()
        with deps.single.connect() as conn:
            secret = kms_store.get_secret_by_id(conn, secret_id)
            stages = Stages.read(conn, secret_id) if secret is not None else None
        if secret is None or stages is None:
            return 0
        if secret.planned_delete_at is not None and secret.planned_delete_at <= now:
            return int(rotation.release(deps, secret_id, now))
        done = 0
        previous = stages.previous
        if (
            previous is not None
            and previous.grace_until is not None
            and previous.grace_until <= now
        ):
            done += int(rotation.end_grace(deps, secret_id, now))
        if stages.pending is not None or rotation.is_due(secret, now):
            if rotation.rotate(deps, secret_id, None, self.clock, scheduled=True):
                self.rotations_done += 1
                metrics.KMS_ROTATIONS.labels("done").inc()
                done += 1
            elif rotation.is_due(secret, now):
                self._not_rotatable(secret_id, now)
        return done

    def _not_rotatable(self, secret_id: str, now: float) -> None:
        """Due but not rotated (its instance gone): the next try is an interval away."""
        with self.deps.single.connect() as conn:
            secret = kms_store.get_secret_by_id(conn, secret_id)
        if secret is None or not rotation.is_due(secret, now) or not secret.rotation_interval:
            return
        with self.deps.engine.begin() as conn:
            kms_store.update_secret(
                conn, secret_id, next_rotation_at=now + secret.rotation_interval
            )
