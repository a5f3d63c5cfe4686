"""The usage summary of the current period, written into each Tenant's status.

Throttled per tenant: the first change schedules one write, at most one per
interval; changes while it waits are folded into it (the figures are read
from PostgreSQL when the write happens, so the last change always lands).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api import metrics
from tenantry.api.tenants.catalog import Tenant
from tenantry.api.tenants.kube import Kube
from tenantry.api.usage import repository as usage_repo
from tenantry.core import resources
from tenantry.core.clock import Clock, system_clock
from tenantry.core.periods import Period
from tenantry.core.resources import UsageSummary
from tenantry.core.usage import period_values

log = logging.getLogger("tenantry.api.status")


def summary(
    period: Period, values: dict[str, int], metrics: list[str], now: dt.datetime
) -> UsageSummary:
    """Every metric of the plan, 0 where nothing was reported yet."""
    return UsageSummary(
        period=resources.Period(start=period.start, end=period.end),
        metrics={m: values.get(m, 0) for m in metrics},
        updated_at=now,
    )


class StatusWriter:
    def __init__(
        self, engine: AsyncEngine, kube: Kube, interval: float, clock: Clock = system_clock
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.kube = kube
        self.interval = interval
        self._last: dict[str, float] = {}
        self._scheduled: dict[str, asyncio.Task[None]] = {}

    def touch(self, tenant: Tenant) -> None:
        if tenant.uid in self._scheduled or tenant.plan is None:
            return
        self._scheduled[tenant.uid] = asyncio.create_task(self._later(tenant))

    async def _later(self, tenant: Tenant) -> None:
        try:
            wait = self._last.get(tenant.uid, 0.0) + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            # From here on, a new change schedules another write after this one.
            self._scheduled.pop(tenant.uid, None)
        self._last[tenant.uid] = time.monotonic()
        try:
            await self.write(tenant)
        except Exception:
            log.warning("Failed to write the usage summary of Tenant %s", tenant.key, exc_info=True)

    async def write(self, tenant: Tenant) -> UsageSummary:
        assert tenant.plan is not None
        now = self.clock()
        period = tenant.period_at(now)
        async with self.engine.connect() as conn:
            totals = await usage_repo.period_totals(conn, tenant.uid, period)
        usage = summary(period, period_values(totals), list(tenant.plan.metrics), now)
        await self.kube.patch_tenant_usage(tenant.namespace, tenant.name, usage.to_wire())
        metrics.STATUS_WRITES.inc()
        return usage

    async def close(self) -> None:
        for task in list(self._scheduled.values()):
            task.cancel()
        await asyncio.gather(*self._scheduled.values(), return_exceptions=True)
