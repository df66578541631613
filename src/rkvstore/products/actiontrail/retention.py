"""Retention: events older than ``RKVSTORE_AUDIT_RETENTION_DAYS`` deleted in the background.

Every process that reconciles runs this loop. It deletes in small batches,
each its own short transaction, so a request's write (on SQLite, the one
writer) waits for one batch at most, never for the whole sweep. Two processes
sweeping at once delete disjoint or already-deleted rows: harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from rkvstore.products.actiontrail import store
from rkvstore.services.context import Deps

log = logging.getLogger("rkvstore.audit")
BATCH = 500
INTERVAL_SECONDS = 60.0


class Retention:
    def __init__(
        self,
        deps: Deps,
        clock: Callable[[], float] = time.time,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.deps = deps
        self.clock = clock
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.deleted = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="audit-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError as exc:
                log.warning("audit retention: the database is unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("audit retention sweep failed; will retry")
            self._stop.wait(self.interval)

    def run_once(self) -> int:
        """Delete every event past the retention, batch by batch; how many."""
        days = self.deps.settings.audit_retention_days
        before_ms = int((self.clock() - days * 86400) * 1000)
        total = 0
        while not self._stop.is_set():
            with self.deps.engine.begin() as conn:
                done = store.delete_older(conn, before_ms, BATCH)
            total += done
            if done < BATCH:
                break
        self.deleted += total
        return total
