"""Helm slots: never more than the limit at once, urgent work before periodic checks."""

from __future__ import annotations

import asyncio

import pytest

from tenantry.operator import work
from tenantry.operator.work import Slots


async def test_urgent_work_goes_before_periodic_checks_that_waited_longer() -> None:
    slots = Slots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def job(name: str, hold: asyncio.Event | None = None) -> None:
        async with slots.slot():
            order.append(name)
            if hold is not None:
                await hold.wait()

    async def periodic(name: str) -> None:
        with work.periodic():
            await job(name)

    holder = asyncio.ensure_future(job("holder", release))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(periodic(f"drift-{i}")) for i in range(3)]
    await asyncio.sleep(0)
    waiting.append(asyncio.ensure_future(job("create")))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["holder", "create", "drift-0", "drift-1", "drift-2"]


async def test_never_more_than_the_limit_and_cancelled_waiters_free_nothing() -> None:
    slots = Slots(2)
    running = most = 0

    async def job() -> None:
        nonlocal running, most
        async with slots.slot():
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    jobs = [asyncio.ensure_future(job()) for _ in range(20)]
    await asyncio.sleep(0)
    for cancelled in jobs[5:10]:
        cancelled.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    assert most == 2
    assert slots.running == 0


async def test_work_no_longer_wanted_is_dropped_when_its_turn_comes() -> None:
    slots = Slots(1)
    wanted = True
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.slot():
            await release.wait()

    async def install() -> None:
        with work.while_wanted(lambda: wanted):
            async with slots.slot():
                pytest.fail("ran for a Tenant deleted while it waited")

    first = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(install())
    await asyncio.sleep(0)
    wanted = False
    release.set()
    await first
    with pytest.raises(work.Abandoned):
        await queued
    assert slots.running == 0


async def test_waiting_checks_end_at_once_when_any_of_their_stops_comes() -> None:
    # The operator exiting ends every waiting check, not only the one kopf stopped first.
    slots = Slots(1)
    release, exiting = asyncio.Event(), asyncio.Event()
    own_stops = [asyncio.Event() for _ in range(3)]
    ran: list[int] = []

    async def holder() -> None:
        async with slots.slot():
            await release.wait()

    async def check(number: int) -> None:
        with work.periodic():
            async with slots.slot():
                ran.append(number)

    first = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    checks = [
        asyncio.ensure_future(work.unless_stopped(check(i), stop.wait(), exiting.wait()))
        for i, stop in enumerate(own_stops)
    ]
    await asyncio.sleep(0)
    own_stops[0].set()
    assert await checks[0] is None
    assert not any(c.done() for c in checks[1:])  # only its own stop came yet
    exiting.set()
    assert await asyncio.gather(*checks[1:]) == [None, None]
    release.set()
    await first
    assert ran == []
    assert slots.running == 0
