"""Writing usage: group commit of concurrent reports, quota counters moved to match.

Each report could be its own transaction, but then every batch pays for a
transaction's round trips and bookkeeping, which cost more than its rows.
Reports that arrive while a write is on its way go together in the next
one: one statement, one commit, one counter update, however many requests.
Each request still gets its answer only after the commit that holds its events.

A group that fails for a reason other than the database or Redis being away
(a value PostgreSQL refuses, an overflow) is written again one request at a
time, so only the request at fault fails, not every tenant's beside it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.errors import ApiError
from tenantry.api.quotas import repository as quota_repo
from tenantry.api.quotas.counters import Counters, CountersDown, counter_key, counters_unavailable
from tenantry.api.tenants.catalog import Plan, Tenant
from tenantry.api.usage import repository as repo
from tenantry.api.usage.schemas import UsageEvent
from tenantry.core.periods import Period

MAX_GROUP_EVENTS = 5000
"""Reports are grouped up to this many events (a single larger one goes alone)."""


@dataclass(frozen=True)
class Written:
    accepted: int  # events new to the tenant, now counted
    in_redis: bool  # False when counted in PostgreSQL alone (Redis away, failing open)


@dataclass
class _Pending:
    tenant: Tenant
    plan: Plan
    events: Sequence[UsageEvent]
    future: asyncio.Future[Written] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class UsageWriter:
    def __init__(self, engine: AsyncEngine, counters: Counters, fail_open: bool) -> None:
        self.engine = engine
        self.counters = counters
        self.fail_open = fail_open
        self._pending: deque[_Pending] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def write(self, tenant: Tenant, plan: Plan, events: Sequence[UsageEvent]) -> Written:
        """Commit the events not seen before (transaction ids unique among `events`).

        Usage already served is never refused for being over quota: overage is billed.
        """
        pending = _Pending(tenant, plan, events)
        self._pending.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await pending.future

    async def _write_pending(self) -> None:
        while self._pending:
            group: list[_Pending] = []
            size = 0
            while self._pending:
                if group and size + len(self._pending[0].events) > MAX_GROUP_EVENTS:
                    break
                size += len(self._pending[0].events)
                group.append(self._pending.popleft())
            try:
                written = await self._commit(group)
            except Exception as error:
                if len(group) > 1 and not _transient(error):
                    for pending in group:  # find the request at fault: each on its own
                        await self._settle([pending])
                    continue
                for pending in group:  # every request of the group learns of it
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending, result in zip(group, written, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)

    async def _settle(self, group: list[_Pending]) -> None:
        try:
            written = await self._commit(group)
        except Exception as error:
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, result in zip(group, written, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _commit(self, group: Sequence[_Pending]) -> list[Written]:
        """One transaction for the group; the counters move before it commits.

        The events hold their counters' shared locks until the commit and the
        counters move in between, so a concurrent rebuild (which takes the
        exclusive lock) sees these events either in PostgreSQL or in Redis,
        never both and never neither.
        """
        use_redis = await self.counters.available()
        if not use_redis and not self.fail_open:
            raise counters_unavailable()
        submissions: list[repo.Submission] = []
        seen: set[tuple[str, str]] = set()
        for request, pending in enumerate(group):
            # The same id twice in one group (racing replays): the first counts.
            uid = pending.tenant.uid
            fresh = [e for e in pending.events if (uid, e.transaction_id) not in seen]
            seen.update((uid, e.transaction_id) for e in fresh)
            for period, events in by_period(pending.tenant, fresh).items():
                submissions.append(
                    repo.Submission(request, uid, period, events, pending.plan.spec.metrics)
                )
        counters = {(s.tenant, e.metric, s.period.start) for s in submissions for e in s.events}
        if not use_redis:
            self.counters.touched(counter_key(*c) for c in counters)
        moved: list[str] = []  # counters moved in Redis before the commit
        try:
            async with self.engine.begin() as conn:
                inserted = await repo.insert_events(
                    conn, submissions, [repo.counter_lock_id(*c) for c in counters]
                )
                if not use_redis:
                    await quota_repo.mark_counters_stale(conn)
                if use_redis:
                    moved = [
                        counter_key(d.tenant, d.metric, d.period_start) for d in inserted.deltas
                    ]
                    try:
                        await self.counters.apply(inserted.deltas)
                    except CountersDown:
                        if not self.fail_open:
                            raise counters_unavailable() from None
                        use_redis = False  # counted in PostgreSQL; rebuilt once Redis is back
                        await quota_repo.mark_counters_stale(conn)
        except BaseException:
            # The counters moved but the commit failed, or its answer was lost: the
            # events may be in PostgreSQL or not. Undoing would guess; dropping the
            # counters makes the next use rebuild them from what PostgreSQL holds.
            await self.counters.forget(moved)
            raise
        if not use_redis and self.counters.up:
            # Redis came back while this was written to PostgreSQL alone, possibly
            # after the recovery dropped the counters touched: drop them now, after
            # the commit, so their rebuild sees these events.
            await self.counters.forget([counter_key(*c) for c in counters])
        return [Written(inserted.accepted.get(i, 0), use_redis) for i in range(len(group))]


def by_period(tenant: Tenant, events: Sequence[UsageEvent]) -> dict[Period, list[UsageEvent]]:
    """The events grouped by the tenant's billing period their timestamp falls in."""
    grouped: dict[Period, list[UsageEvent]] = {}
    current: Period | None = None
    for event in events:
        # Most events of a report share a period: look it up only when one does not.
        if current is None or event.timestamp not in current:
            current = tenant.period_at(event.timestamp)
        grouped.setdefault(current, []).append(event)
    return grouped


def _transient(error: Exception) -> bool:
    """Whether a failure is the database or Redis being away, not a request's data."""
    return isinstance(error, OperationalError | InterfaceError | CountersDown | ApiError)
