"""Tenant shares: a share given back goes to the first waiter, never to a newcomer."""

from __future__ import annotations

import asyncio

from rkvstore.api.shares import TenantShares


def test_a_share_given_back_goes_to_the_waiter_not_to_a_newcomer() -> None:
    async def scenario() -> list[str]:
        shares = TenantShares(total=8, per_tenant=1)
        order: list[str] = []
        assert shares.try_take("t")  # the first request holds the tenant's one share

        async def waiter() -> None:
            await shares.take("t")
            order.append("waiter")
            shares.give_back("t")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)  # the waiter queues
        shares.give_back("t")
        # Before the waiter runs again, a newcomer asks from a worker thread.
        if shares.try_take("t"):
            order.append("newcomer")
            shares.give_back("t")
        await asyncio.wait_for(task, timeout=5)
        assert shares.held("t") == 0
        return order

    assert asyncio.run(scenario()) == ["waiter"]


def test_a_waiter_cancelled_after_the_hand_over_passes_the_share_on() -> None:
    async def scenario() -> int:
        shares = TenantShares(total=8, per_tenant=1)
        assert shares.try_take("t")
        first = asyncio.create_task(shares.take("t"))
        second = asyncio.create_task(shares.take("t"))
        await asyncio.sleep(0)
        shares.give_back("t")  # handed to ``first``...
        first.cancel()  # ...which is cancelled before it runs: ``second`` gets it
        await asyncio.wait_for(second, timeout=5)
        held = shares.held("t")
        shares.give_back("t")
        assert shares.held("t") == 0
        return held

    assert asyncio.run(scenario()) == 1
