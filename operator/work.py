"""Bounded, fair work: at most N helm processes at once, urgent work first.

kopf runs a handler per object at once; a thousand Tenants resuming would
start a thousand helm processes, and the operator's own load would make its
installs fail. Every helm process takes a slot here first; so does every
Tenant's pass, of which twice as many run at once (a thousand passes, each
holding what it read while it waited for helm, cost memory, not speed). Waiters are
served by priority, then in arrival order: creations, updates, resumes and
deletions are URGENT, drift checks are PERIODIC, so a timer tick never
delays a Tenant that someone is waiting for. The priority is a context
variable: the timer sets it once, and every helm call below inherits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import IntEnum
from typing import TypeVar

from prometheus_client import Gauge

from tenantry.operator import metrics

T = TypeVar("T")


class Priority(IntEnum):
    URGENT = 0
    PERIODIC = 1


_priority: contextvars.ContextVar[Priority] = contextvars.ContextVar(
    "priority", default=Priority.URGENT
)


_wanted: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "wanted", default=lambda: True
)


class Abandoned(Exception):
    """The work was no longer wanted when its turn came (its object is being deleted)."""


@contextmanager
def while_wanted(wanted: Callable[[], bool]) -> Iterator[None]:
    """Helm work inside is dropped, when its slot comes, if `wanted()` is then false:
    a long queue must not run an install for a Tenant deleted meanwhile."""
    token = _wanted.set(wanted)
    try:
        yield
    finally:
        _wanted.reset(token)


@contextmanager
def periodic() -> Iterator[None]:
    """Everything inside (and the tasks it starts) waits behind urgent work."""
    token = _priority.set(Priority.PERIODIC)
    try:
        yield
    finally:
        _priority.reset(token)


class Slots:
    """A semaphore of `limit` slots that serves waiters by priority, then first come.
    `in_flight` and `waiting` (by priority) are the gauges that show it."""

    def __init__(
        self,
        limit: int,
        in_flight: Gauge = metrics.HELM_IN_FLIGHT,
        waiting: Gauge = metrics.HELM_WAITING,
    ) -> None:
        self.limit = limit
        self.running = 0
        self._in_flight, self._waiting_gauge = in_flight, waiting
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        priority = _priority.get()
        await self._acquire(priority)
        if not _wanted.get()():
            self._release()
            raise Abandoned()
        self._in_flight.inc()
        try:
            yield
        finally:
            self._in_flight.dec()
            self._release()

    async def _acquire(self, priority: Priority) -> None:
        if self.running < self.limit and not self._waiting:
            self.running += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        waiting = self._waiting_gauge.labels(priority=priority.name.lower())
        waiting.inc()
        try:
            await future  # the slot is handed over by `_release`, already counted
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            else:
                self._waiting = [w for w in self._waiting if w[2] is not future]
                heapq.heapify(self._waiting)
            raise
        finally:
            waiting.dec()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the slot passes on without being freed
                return
        self.running -= 1


async def unless_stopped(work: Awaitable[T], *stops: Awaitable[object]) -> T | None:
    """`work`'s result, or None when one of `stops` comes first: then the work is
    cancelled (a helm process it runs is terminated) before this returns."""
    task = asyncio.ensure_future(work)
    waits = [asyncio.ensure_future(stop) for stop in stops]
    try:
        await asyncio.wait({task, *waits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None
