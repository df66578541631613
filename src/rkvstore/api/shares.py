"""Fair shares of the request threads: at most ``per_tenant`` actions of one tenant at once.

A request is prepared (authenticated, parsed, authorized) and run on one
worker thread, one hop from the event loop: the tenant is known only after
authentication, so the thread takes the tenant's share itself, without
waiting (``try_take``). When the tenant's share is full the thread hands the
prepared request back, and the event loop waits for a share (``take``),
holding no thread, before the action runs on a second hop: a tenant whose
nodes stall fills its own share and waits there while every other tenant's
actions run.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import anyio


class TenantShares:
    def __init__(self, total: int, per_tenant: int) -> None:
        # Threads for requests in all: preparing, and running actions.
        self.total = anyio.CapacityLimiter(total)
        self.per_tenant = per_tenant
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def held(self, tenant: str) -> int:
        with self._lock:
            return self._held.get(tenant, 0)

    def try_take(self, tenant: str) -> bool:
        """A share now, from any thread; ``False`` when the tenant's are all in use
        or others of its requests already wait for one (they go first)."""
        with self._lock:
            held = self._held.get(tenant, 0)
            if held >= self.per_tenant or self._waiting.get(tenant):
                return False
            self._held[tenant] = held + 1
            return True

    async def take(self, tenant: str) -> None:
        """A share, waited for in the event loop (first come, first served)."""
        loop = asyncio.get_running_loop()
        first = True
        while True:
            with self._lock:
                held = self._held.get(tenant, 0)
                queue = self._waiting.setdefault(tenant, deque())
                # A woken waiter is at the head again; a new one lets those waiting go first.
                if held < self.per_tenant and (not first or not queue):
                    self._held[tenant] = held + 1
                    if not queue:
                        self._waiting.pop(tenant, None)
                    return
                future: asyncio.Future[None] = loop.create_future()
                if first:
                    queue.append((loop, future))
                else:
                    queue.appendleft((loop, future))
            first = False
            try:
                await future
            except BaseException:
                with self._lock:
                    waiters = self._waiting.get(tenant, deque())
                    woken = (loop, future) not in waiters
                    if not woken:
                        waiters.remove((loop, future))
                        if not waiters:
                            self._waiting.pop(tenant, None)
                if woken:  # then cancelled: the wake-up goes on to the next in line
                    self._wake_next(tenant)
                raise

    def give_back(self, tenant: str) -> None:
        """Return a share, from any thread; the next request waiting for one is woken."""
        with self._lock:
            held = self._held.get(tenant, 0) - 1
            if held > 0:
                self._held[tenant] = held
            else:
                self._held.pop(tenant, None)
        self._wake_next(tenant)

    def _wake_next(self, tenant: str) -> None:
        with self._lock:
            waiters = self._waiting.get(tenant)
            if not waiters:
                return
            loop, future = waiters.popleft()
            if not waiters:
                self._waiting.pop(tenant, None)
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
