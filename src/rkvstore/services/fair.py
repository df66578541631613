"""A thread pool shared fairly: at most ``per_key`` jobs of one key (a tenant) run at once.

Jobs wait in a queue per key and are started in turn across keys whenever a
worker is free, so one tenant's slow jobs (an instance whose nodes stall)
hold at most ``per_key`` workers, and the other tenants' jobs start on the
rest without waiting behind them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("rkvstore.fair")


class FairPool:
    def __init__(self, workers: int, per_key: int, name: str) -> None:
        self.workers = workers
        self.per_key = max(1, min(per_key, workers))
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._waiting: dict[str, deque[Callable[[], None]]] = {}
        self._turns: deque[str] = deque()  # keys with jobs waiting, in turn
        self._running: dict[str, int] = {}
        self._running_total = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, key: str, job: Callable[[], None]) -> bool:
        """Queue ``job``; False once the pool is shut down."""
        with self._lock:
            if self._closed:
                return False
            if key not in self._waiting:
                self._waiting[key] = deque()
                self._turns.append(key)
            self._waiting[key].append(job)
            self._start_locked()
        return True

    def running(self, key: str) -> int:
        with self._lock:
            return self._running.get(key, 0)

    def _start_locked(self) -> None:
        while self._running_total < self.workers and self._turns:
            for _ in range(len(self._turns)):
                key = self._turns[0]
                self._turns.rotate(-1)
                if self._running.get(key, 0) < self.per_key:
                    break
            else:
                return  # every key with jobs waiting is at its share
            job = self._waiting[key].popleft()
            if not self._waiting[key]:
                del self._waiting[key]
                self._turns.remove(key)
            self._running[key] = self._running.get(key, 0) + 1
            self._running_total += 1
            self._executor.submit(self._run, key, job)

    def _run(self, key: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:
            log.exception("a job of %s failed", key)
        finally:
            with self._lock:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
                self._running_total -= 1
                if not self._closed:
                    self._start_locked()

    def shutdown(self) -> None:
        """Drop the jobs not started; wait for the running ones."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
            self._turns.clear()
        self._executor.shutdown(wait=True)
