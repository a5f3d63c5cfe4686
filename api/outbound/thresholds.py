"""`usage.threshold_crossed`: a tenant's figure reached 80 % or 100 % of its plan's limit.

Invariant: at most one event per tenant, metric, billing period and
threshold, whichever replicas and requests raced to it: the event's id is
derived from those four, and the outbox keeps one row per id and endpoint.

The check runs after the commit that moved the figures (debounced per
tenant), reads the committed figures from PostgreSQL and enqueues every
threshold they have reached that this replica has not enqueued yet: a level,
not an edge, so a check lost to a crash is made good by the tenant's next use.
Usage and quota requests never wait for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.outbound.events import Events
from tenantry.api.tenants.catalog import Tenant
from tenantry.api.usage import repository as usage_repo
from tenantry.core import outbound
from tenantry.core.clock import Clock
from tenantry.core.usage import period_value

log = logging.getLogger("tenantry.api.outbound")


class ThresholdWatch:
    def __init__(self, engine: AsyncEngine, events: Events, clock: Clock, delay: float) -> None:
        self.engine = engine
        self.events = events
        self.clock = clock
        self.delay = delay
        self._due: set[str] = set()  # tenants with a check scheduled
        self._tasks: set[asyncio.Task[None]] = set()
        # (tenant, metric): the period and thresholds this replica has enqueued.
        self._sent: dict[tuple[str, str], tuple[dt.datetime, frozenset[int]]] = {}

    def changed(self, tenant: Tenant) -> None:
        """A commit moved the tenant's figures: check them shortly."""
        if tenant.uid in self._due or tenant.plan is None or not tenant.plan.limited_metrics():
            return
        if not self.events.wants(outbound.USAGE_THRESHOLD_CROSSED):
            return
        self._due.add(tenant.uid)
        task = asyncio.create_task(self._check_later(tenant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_later(self, tenant: Tenant) -> None:
        await asyncio.sleep(self.delay)
        self._due.discard(tenant.uid)  # a change from now on schedules another check
        try:
            await self.check(tenant, self.clock())
        except Exception as error:
            log.warning("Could not check usage thresholds of tenant %s: %s", tenant.key, error)

    async def check(self, tenant: Tenant, now: dt.datetime) -> None:
        """Enqueue the thresholds the tenant's figures reach this period."""
        plan = tenant.plan
        assert plan is not None
        period = tenant.period_at(now)
        limited = [m.name for m in plan.limited_metrics()]
        reached: list[tuple[str, int, int]] = []  # metric, threshold, figure
        async with self.engine.connect() as conn:
            totals = await usage_repo.period_totals(conn, tenant.uid, period, limited)
        for totals_of_metric in totals:
            metric, used = totals_of_metric.metric, period_value(totals_of_metric)
            done = self._done(tenant.uid, metric, period.start)
            crossed = outbound.crossed(plan.limit(metric), used)
            reached += [(metric, t, used) for t in crossed if t not in done]
        if not reached:
            return
        tenant_ref = {"namespace": tenant.namespace, "name": tenant.name, "uid": tenant.uid}
        new = 0
        async with self.engine.begin() as conn:
            for metric, threshold, used in reached:
                data = outbound.threshold_data(
                    tenant=tenant_ref, plan=plan.name, metric=metric, threshold=threshold,
                    limit=plan.limit(metric), used=used, period=(period.start, period.end),
                )  # fmt: skip
                key = outbound.threshold_key(tenant.uid, metric, period.start, threshold)
                new += await self.events.emit(
                    conn, outbound.USAGE_THRESHOLD_CROSSED, data, now, key=key
                )
        for metric, threshold, _ in reached:
            done = self._done(tenant.uid, metric, period.start)
            self._sent[(tenant.uid, metric)] = (period.start, done | {threshold})
        if new:
            log.info("Tenant %s reached %s: enqueued usage.threshold_crossed", tenant.key,
                     ", ".join(f"{t} % of its {m} limit" for m, t, _ in reached))  # fmt: skip

    def _done(self, tenant_uid: str, metric: str, period_start: dt.datetime) -> frozenset[int]:
        """The thresholds of this period this replica has enqueued already."""
        sent = self._sent.get((tenant_uid, metric))
        return sent[1] if sent and sent[0] == period_start else frozenset()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
