"""Flags raised in this process, on their way to the shared state.

``mark_dirty`` is called on a failure path (a change rolled back, a record
the database refused): it must never wait for the database nor fail with it.
A flag is kept here and written by a background writer at once, or, while the
database is away, every ``FLUSH_RETRY_SECONDS`` until it answers; meanwhile this
process's ``in_line`` sees it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from rkvstore.store import line_state
from rkvstore.store.db import describe_database_error
from rkvstore.store.line_state import ALL

log = logging.getLogger("rkvstore.reconcile")

FLUSH_RETRY_SECONDS = 1.0


class LocalFlags:
    def __init__(self, engine: Engine, verify_interval: float, written: Callable[[], None]) -> None:
        self.engine = engine
        self.verify_interval = verify_interval
        self._written = written  # told after each write (the loop looks at once)
        self._lock = threading.Lock()
        # instance -> accounts flagged here and not written yet; and how many
        # times each instance was flagged here: a pass drops only the flags
        # raised before it began.
        self._unflushed: dict[str, set[str]] = {}
        self._raised: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def raise_flag(self, instance_id: str, account: str | None) -> None:
        with self._lock:
            self._unflushed.setdefault(instance_id, set()).add(account or ALL)
            self._raised[instance_id] = self._raised.get(instance_id, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()  # raised after a stop (a change finishing): write it
                self._thread = threading.Thread(
                    target=self._write_forever, name="reconcile-flags", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def pending(self, instance_id: str) -> set[str]:
        """Accounts flagged here that the shared state may not hold yet."""
        with self._lock:
            return set(self._unflushed.get(instance_id, ()))

    def raised(self, instance_id: str) -> int | None:
        with self._lock:
            return self._raised.get(instance_id)

    def answered(self, instance_id: str, raised: int | None) -> None:
        """A pass that began when ``raised`` flags had been raised left the instance in line."""
        with self._lock:
            if self._raised.get(instance_id) == raised:
                self._unflushed.pop(instance_id, None)

    def forget(self, instance_id: str) -> None:
        with self._lock:
            self._unflushed.pop(instance_id, None)
            self._raised.pop(instance_id, None)

    def stop(self) -> None:
        """One last write, then the writer ends."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _write_forever(self) -> None:
        while True:
            self._wake.wait(FLUSH_RETRY_SECONDS if self._failing else None)
            self._wake.clear()
            self.write()
            if self._stop.is_set():
                return

    def write(self) -> bool:
        """Write the flags raised here to the shared state; False: the database is away."""
        with self._lock:
            batch = {i: (set(a), self._raised.get(i, 0)) for i, a in self._unflushed.items()}
        if not batch:
            return True
        now = time.time()
        try:
            with self.engine.begin() as conn:
                for instance_id, (accounts, _) in batch.items():
                    line_state.flag(conn, instance_id, accounts, now, self.verify_interval)
        except Exception as exc:  # the flags stay here until it works
            if not self._failing:
                self._failing = True
                log.warning(
                    "reconciler: %d flag(s) not written (%s); kept here, will retry",
                    len(batch),
                    describe_database_error(exc),
                )
            return False
        if self._failing:
            self._failing = False
            log.info("reconciler: flags written again")
        with self._lock:
            for instance_id, (_, raised) in batch.items():
                if self._raised.get(instance_id) == raised:  # none raised since
                    self._unflushed.pop(instance_id, None)
        self._written()
        return True
