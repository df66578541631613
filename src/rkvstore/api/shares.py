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
        """A share, waited for in the event loop (first come, first served: a share
        given back goes straight to the first waiter, so no one can overtake it)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._held.get(tenant, 0)
            if held < self.per_tenant and not self._waiting.get(tenant):
                self._held[tenant] = held + 1
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(tenant, deque()).append((loop, future))
        try:
            await future  # resolved: the share was handed over, already counted
        except BaseException:
            with self._lock:
                waiters = self._waiting.get(tenant, deque())
                handed = (loop, future) not in waiters
                if not handed:
                    waiters.remove((loop, future))
                    if not waiters:
                        self._waiting.pop(tenant, None)
            if handed:  # then cancelled: the share goes on to the next in line
                self.give_back(tenant)
            raise

    def give_back(self, tenant: str) -> None:
        """Return a share, from any thread: to the first request waiting for one, if any."""
        with self._lock:
            waiters = self._waiting.get(tenant)
            if waiters:  # handed over: the tenant's count stays as it is
                loop, future = waiters.popleft()
                if not waiters:
                    self._waiting.pop(tenant, None)
            else:
                held = self._held.get(tenant, 0) - 1
                if held > 0:
                    self._held[tenant] = held
                else:
                    self._held.pop(tenant, None)
                return
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
