"""Checking and counting quotas against the plan, in Redis or, when it is away, in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantry import license as lic
from tenantry.api.errors import QuotaExceeded, Unprocessable
from tenantry.api.quotas import repository as quota_repo
from tenantry.api.quotas.counters import (
    Counters,
    CountersDown,
    Outcome,
    counter_key,
    expiry_seconds,
)
from tenantry.api.quotas.schemas import ConsumeResult, QuotaState
from tenantry.api.tenants.catalog import Plan, Tenant
from tenantry.api.usage import repository as usage_repo
from tenantry.api.usage.periods import period_bounds, period_of, period_value
from tenantry.api.usage.schemas import UsageEvent
from tenantry.core.resources import UNLIMITED, Aggregation

log = logging.getLogger("tenantry.api.quotas")

CONSUMABLE = (Aggregation.COUNT, Aggregation.SUM)


class NeedsRebuild(Exception):
    """The counter is not in Redis: rebuild it from PostgreSQL, then try again."""

    def __init__(self, metric: str, period: str) -> None:
        super().__init__(metric, period)
        self.metric = metric
        self.period = period


@dataclass(frozen=True)
class ConsumeOutcome:
    result: ConsumeResult
    counted_in_redis: str | None  # the counter incremented, dropped if the commit fails


def over_quota(plan: Plan, metric: str, limit: int, current: int, amount: int, period: str,
               now: dt.datetime) -> QuotaExceeded:  # fmt: skip
    """429 with the license guard's details shape (`LimitExceeded.details`)."""
    _, reset = period_bounds(period)
    noun = metric.replace("_", " ")
    message = (
        f"Your {plan.spec.display_name} plan allows {limit} {noun} per month. {current} are "
        f"used in {period} and this request needs {amount} more. Upgrade your plan, or wait "
        f"until the quota resets on {reset:%Y-%m-%d}."
    )
    error = lic.LimitExceeded(
        message,
        limit_name=metric,
        limit=limit,
        current=current,
        plan=plan.spec.display_name,
        plan_code=plan.name,
        licensed=True,
        requested=amount,
        period=period,
        resets_at=reset.isoformat(),
    )
    retry = max(1, int((reset - now).total_seconds()))
    return QuotaExceeded(message, details=error.details, headers={"Retry-After": str(retry)})


def consumable(plan: Plan, metric: str, amount: int) -> None:
    definition = plan.metrics.get(metric)
    if definition is None:
        known = ", ".join(sorted(plan.metrics)) or "none"
        raise Unprocessable(
            f"Metric {metric!r} is not metered by plan {plan.name} (its metrics: {known}).",
            code="unknown_metric",
        )
    if definition.aggregation not in CONSUMABLE:
        raise Unprocessable(
            f"Metric {metric!r} is a {definition.aggregation.value} metric: a quota can be "
            "consumed only from count or sum metrics. Report it with POST /v1/usage instead.",
            code="metric_not_consumable",
        )
    if definition.aggregation == Aggregation.COUNT and amount != 1:
        raise Unprocessable(
            f"Metric {metric!r} counts requests: consume 1 at a time (amount was {amount}).",
            code="invalid_amount",
        )


async def consume(
    conn: AsyncConnection,
    counters: Counters,
    tenant: Tenant,
    plan: Plan,
    metric: str,
    amount: int,
    transaction_id: str | None,
    now: dt.datetime,
    *,
    use_redis: bool,
) -> ConsumeOutcome:
    """Admit and count `amount` of `metric`, or raise `QuotaExceeded`. The caller commits.

    The request is recorded as a usage event first, so a replayed transaction
    id is recognised before anything is counted. With Redis, the atomic
    check-and-increment runs while the event's transaction holds the
    counter's shared lock, so a rebuild never misses or doubles it. Without
    Redis, consumers of one counter take turns on its exclusive lock and
    check PostgreSQL's figure.
    """
    consumable(plan, metric, amount)
    period = period_of(now)
    limit = plan.limit(metric)
    key = counter_key(tenant.key, metric, period)
    lock = usage_repo.counter_lock_id(tenant.key, metric, period)
    event = UsageEvent(
        transaction_id=transaction_id or f"consume:{uuid.uuid4()}",
        metric=metric,
        value=amount,
        timestamp=now,
    )
    if not use_redis:
        counters.touched([key])
        await quota_repo.mark_counters_stale(conn)
        await usage_repo.lock_counter(conn, lock)
    inserted = await usage_repo.insert_events(
        conn, [usage_repo.Submission(tenant.key, [event], [plan.metrics[metric]])], [lock]
    )
    if inserted.accepted[0] == 0:
        return ConsumeOutcome(_result(metric, limit, None, period, duplicate=True), None)
    if use_redis:
        decision = await counters.consume(key, limit, amount)
        if decision.outcome == Outcome.MISSING:
            raise NeedsRebuild(metric, period)
        if decision.outcome == Outcome.REFUSED:
            raise over_quota(plan, metric, limit, decision.value, amount, period, now)
        return ConsumeOutcome(_result(metric, limit, decision.value, period), key)
    totals = await usage_repo.period_totals(conn, tenant.key, period, [metric])
    used = period_value(totals[0]) if totals else amount
    if limit != UNLIMITED and used > limit:
        raise over_quota(plan, metric, limit, used - amount, amount, period, now)
    return ConsumeOutcome(_result(metric, limit, used, period), None)


def _result(
    metric: str, limit: int, used: int | None, period: str, duplicate: bool = False
) -> ConsumeResult:
    remaining = None if limit == UNLIMITED or used is None else max(0, limit - used)
    return ConsumeResult(
        duplicate=duplicate,
        metric=metric,
        limit=limit,
        used=used,
        remaining=remaining,
        period=period,
    )


async def rebuild(
    engine: AsyncEngine, counters: Counters, tenant: str, metric: str, period: str,
    now: dt.datetime,
) -> None:  # fmt: skip
    """Create a missing counter from PostgreSQL's figure (its own short transaction).

    The exclusive lock waits for transactions that are writing usage of this
    counter and holds new ones off, so the figure read is exactly what the
    counter must start from.
    """
    async with engine.begin() as conn:
        await usage_repo.lock_counter(conn, usage_repo.counter_lock_id(tenant, metric, period))
        totals = await usage_repo.period_totals(conn, tenant, period, [metric])
        value, latest_ms = 0, None
        if totals:
            value = period_value(totals[0])
            if totals[0].aggregation == Aggregation.LATEST:
                latest_ms = int(totals[0].latest_at.timestamp() * 1000)
        await counters.seed(counter_key(tenant, metric, period), value, latest_ms,
                            expiry_seconds(period, now))  # fmt: skip


async def quota_states(
    engine: AsyncEngine, counters: Counters, tenant: Tenant, now: dt.datetime, *,
    use_redis: bool,
) -> dict[str, QuotaState]:  # fmt: skip
    """Limit, use and remainder of each limited metric of the tenant's plan, this period."""
    plan = tenant.plan
    if plan is None:
        return {}
    metrics = [m.name for m in plan.limited_metrics()]
    if not metrics:
        return {}
    period = period_of(now)
    used: dict[str, int] = {}
    if use_redis:
        keys = [counter_key(tenant.key, m, period) for m in metrics]
        values = await counters.read(keys)
        missing = [m for m, v in zip(metrics, values, strict=True) if v is None]
        for metric in missing:
            await rebuild(engine, counters, tenant.key, metric, period, now)
        if missing:
            values = await counters.read(keys)
        used = {m: v or 0 for m, v in zip(metrics, values, strict=True)}
    else:
        async with engine.connect() as conn:
            totals = await usage_repo.period_totals(conn, tenant.key, period, metrics)
        used = {t.metric: period_value(t) for t in totals}
    states = {}
    for metric in metrics:
        limit, figure = plan.limit(metric), used.get(metric, 0)
        states[metric] = QuotaState(
            limit=limit, used=figure, remaining=max(0, limit - figure), period=period
        )
    return states


__all__ = ["CountersDown", "NeedsRebuild", "consume", "quota_states", "rebuild"]


async def drain_stale_counters(engine: AsyncEngine, counters: Counters) -> int:
    """Drop every Redis counter if any write was counted in PostgreSQL alone.

    Any replica may do it, whichever counted: the mark is in PostgreSQL. It is
    cleared only if Redis took the drop (the transaction commits after it), and
    a write marking it meanwhile waits for that commit and marks it again.
    """
    async with engine.begin() as conn:
        if not await quota_repo.take_stale_mark(conn):
            return 0
        dropped = await counters.drop_all()
    log.warning("Dropped %d quota counters written around a Redis outage; rebuilt on use", dropped)
    return dropped
