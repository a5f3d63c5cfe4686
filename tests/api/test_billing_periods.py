"""Quotas follow the tenant's billing period: they reset on its anchor day, not on the 1st.

The quota service runs in-process with a clock of the test's own, against the
session's real PostgreSQL and Redis.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis as AsyncRedis
from testbed import Redis

from tenantry.api.quotas.counters import Counters
from tenantry.api.quotas.schemas import ConsumeRequest
from tenantry.api.quotas.service import QuotaService
from tenantry.api.tally import Tally
from tenantry.api.tenants.catalog import Plan, Tenant
from tenantry.core.periods import BillingCycle, Interval
from tenantry.core.resources import PlanSpec
from tenantry.db.engine import create_engine

pytestmark = pytest.mark.cluster

PLAN = Plan(
    name="metered",
    spec=PlanSpec.model_validate({
        "displayName": "Metered",
        "price": {"amount": 1000, "currency": "USD", "interval": "month"},
        "limits": {"api_calls": 3},
        "metrics": [{"name": "api_calls", "aggregation": "count"}],
    }),
)  # fmt: skip


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.fixture
async def quotas(database: str, redis_server: Redis) -> AsyncIterator[QuotaService]:
    engine = create_engine(database)
    redis = AsyncRedis.from_url(redis_server.url)
    try:
        yield QuotaService(
            engine, Counters(redis), Tally(), fail_open=True, on_change=lambda tenant: None
        )
    finally:
        await redis.aclose()
        await engine.dispose()


def tenant(cycle: BillingCycle) -> Tenant:
    uid = str(uuid.uuid4())
    return Tenant("periods", f"t-{uid[:8]}", uid, None, PLAN, cycle)


async def use(quotas: QuotaService, who: Tenant, moment: dt.datetime) -> int | None:
    result = await quotas.consume(who, ConsumeRequest(metric="api_calls"), lambda: moment)
    return result.used


async def test_quota_resets_at_the_anchor_day_not_the_first(quotas: QuotaService) -> None:
    who = tenant(BillingCycle(start=at(10, 15, 9), interval=Interval.MONTH, anchor_day=15))
    assert await use(quotas, who, at(10, 20)) == 1
    # The 1st of the month is inside the period [Oct 15, Nov 15): the count goes on.
    assert await use(quotas, who, at(11, 1)) == 2
    assert await use(quotas, who, at(11, 14, 23, 59)) == 3
    states = (await quotas.quotas(who, at(11, 14, 23, 59))).quotas
    assert states["api_calls"].period == "2026-10-15T00:00:00Z/2026-11-15T00:00:00Z"
    assert states["api_calls"].remaining == 0
    # Nov 15 00:00 UTC starts the next period: the quota is whole again.
    assert await use(quotas, who, at(11, 15)) == 1
    states = (await quotas.quotas(who, at(11, 15, 1))).quotas
    assert (states["api_calls"].used, states["api_calls"].remaining) == (1, 2)


async def test_anchor_day_31_resets_on_the_last_day_of_a_short_month(
    quotas: QuotaService,
) -> None:
    who = tenant(BillingCycle(start=at(1, 31), interval=Interval.MONTH, anchor_day=31))
    assert await use(quotas, who, at(2, 27)) == 1
    assert await use(quotas, who, at(2, 28)) == 1  # February has no 31st: its 28th
    assert await use(quotas, who, at(3, 30)) == 2
    assert await use(quotas, who, at(3, 31)) == 1
