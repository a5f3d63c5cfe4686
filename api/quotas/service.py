"""Checking and counting quotas against the plan, in Redis or, when it is away, in PostgreSQL.

Exact under concurrency: no request is admitted past the limit and every
admitted one is counted once, also when retried with the same transaction
id, also when Redis fails mid-request (the counter is then dropped and
rebuilt from PostgreSQL, which holds every admitted event).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantry import license as lic
from tenantry.api.errors import Conflict, Forbidden, QuotaExceeded, Unavailable, Unprocessable
from tenantry.api.quotas import repository as quota_repo
from tenantry.api.quotas.counters import (
    Counters,
    CountersDown,
    Outcome,
    counter_key,
    counters_unavailable,
    expiry_seconds,
)
from tenantry.api.quotas.schemas import ConsumeRequest, ConsumeResult, Quotas, QuotaState
from tenantry.api.tally import Tally
from tenantry.api.tenants.catalog import Plan, Tenant
from tenantry.api.usage import repository as usage_repo
from tenantry.api.usage.schemas import UsageEvent
from tenantry.core.periods import Period
from tenantry.core.resources import UNLIMITED, Aggregation
from tenantry.core.usage import period_value

log = logging.getLogger("tenantry.api.quotas")

CONSUMABLE = (Aggregation.COUNT, Aggregation.SUM)


class NeedsRebuild(Exception):
    """The counter is not in Redis: rebuild it from PostgreSQL, then try again."""

    def __init__(self, metric: str, period: Period) -> None:
        super().__init__(metric, period)
        self.metric = metric
        self.period = period


@dataclass(frozen=True)
class ConsumeOutcome:
    result: ConsumeResult
    counted_in_redis: str | None  # the counter incremented, dropped if the commit fails


def plan_of(tenant: Tenant) -> Plan:
    if tenant.plan is None:
        raise Conflict(
            f"Tenant {tenant.key} has no plan in force yet: the operator has not finished "
            "provisioning it (see `kubectl get tenant`). Retry shortly.",
            code="tenant_not_ready",
        )
    return tenant.plan


def admitting(tenant: Tenant, now: dt.datetime) -> None:
    """Refuse new work once the tenant's subscription has ended (403 `subscription_ended`)."""
    end = tenant.ended(now)
    if end is not None:
        raise Forbidden(
            f"{end.describe()}, so tenant {tenant.key} admits no new work: quota checks are "
            "refused and its license is revoked. Usage that happened before the end is still "
            "accepted by POST /v1/usage. Create a new Subscription to resume.",
            code="subscription_ended",
            details={
                "tenant": tenant.key,
                "subscription": end.subscription,
                "ended_at": end.at.isoformat(),
                "reason": end.reason,
            },
        )


def over_quota(plan: Plan, metric: str, limit: int, current: int, amount: int, period: Period,
               now: dt.datetime) -> QuotaExceeded:  # fmt: skip
    """429 with the license guard's details shape (`LimitExceeded.details`)."""
    reset = period.end
    noun = metric.replace("_", " ")
    message = (
        f"Your {plan.spec.display_name} plan allows {limit} {noun} per billing period. "
        f"{current} are used in the period {period.start:%Y-%m-%d} to {reset:%Y-%m-%d} and "
        f"this request needs {amount} more. Upgrade your plan, or wait until the quota resets "
        f"on {reset:%Y-%m-%d}."
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
        period=period.label(),
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
    period = tenant.period_at(now)
    limit = plan.limit(metric)
    key = counter_key(tenant.uid, metric, period.start)
    lock = usage_repo.counter_lock_id(tenant.uid, metric, period.start)
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
        conn,
        [usage_repo.Submission(0, tenant.uid, period, [event], [plan.metrics[metric]])],
        [lock],
    )
    if inserted.accepted.get(0, 0) == 0:
        return ConsumeOutcome(_result(metric, limit, None, period, duplicate=True), None)
    if use_redis:
        decision = await counters.consume(key, limit, amount)
        if decision.outcome == Outcome.MISSING:
            raise NeedsRebuild(metric, period)
        if decision.outcome == Outcome.REFUSED:
            raise over_quota(plan, metric, limit, decision.value, amount, period, now)
        return ConsumeOutcome(_result(metric, limit, decision.value, period), key)
    totals = await usage_repo.period_totals(conn, tenant.uid, period, [metric])
    used = period_value(totals[0]) if totals else amount
    if limit != UNLIMITED and used > limit:
        raise over_quota(plan, metric, limit, used - amount, amount, period, now)
    return ConsumeOutcome(_result(metric, limit, used, period), None)


def _result(
    metric: str, limit: int, used: int | None, period: Period, duplicate: bool = False
) -> ConsumeResult:
    remaining = None if limit == UNLIMITED or used is None else max(0, limit - used)
    return ConsumeResult(
        duplicate=duplicate,
        metric=metric,
        limit=limit,
        used=used,
        remaining=remaining,
        period=period.label(),
    )


async def rebuild(
    engine: AsyncEngine, counters: Counters, tenant: str, metric: str, period: Period,
    now: dt.datetime,
) -> None:  # fmt: skip
    """Create a missing counter from PostgreSQL's figure (its own short transaction).

    The exclusive lock waits for transactions that are writing usage of this
    counter and holds new ones off, so the figure read is exactly what the
    counter must start from.
    """
    async with engine.begin() as conn:
        await usage_repo.lock_counter(
            conn, usage_repo.counter_lock_id(tenant, metric, period.start)
        )
        totals = await usage_repo.period_totals(conn, tenant, period, [metric])
        value, latest_ms = 0, None
        if totals:
            value = period_value(totals[0])
            if totals[0].aggregation == Aggregation.LATEST:
                latest_ms = int(totals[0].latest_at.timestamp() * 1000)
        await counters.seed(counter_key(tenant, metric, period.start), value, latest_ms,
                            expiry_seconds(period.end, now))  # fmt: skip


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
    period = tenant.period_at(now)
    used: dict[str, int] = {}
    if use_redis:
        keys = [counter_key(tenant.uid, m, period.start) for m in metrics]
        values = await counters.read(keys)
        missing = [m for m, v in zip(metrics, values, strict=True) if v is None]
        for metric in missing:
            await rebuild(engine, counters, tenant.uid, metric, period, now)
        if missing:
            values = await counters.read(keys)
        used = {m: v or 0 for m, v in zip(metrics, values, strict=True)}
    else:
        async with engine.connect() as conn:
            totals = await usage_repo.period_totals(conn, tenant.uid, period, metrics)
        used = {t.metric: period_value(t) for t in totals}
    states = {}
    for metric in metrics:
        limit, figure = plan.limit(metric), used.get(metric, 0)
        states[metric] = QuotaState(
            limit=limit, used=figure, remaining=max(0, limit - figure), period=period.label()
        )
    return states


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


class QuotaService:
    """Quota checks for the routes: the retries, fallbacks and counts of one request."""

    def __init__(
        self,
        engine: AsyncEngine,
        counters: Counters,
        tally: Tally,
        *,
        fail_open: bool,
        on_change: Callable[[Tenant], None],
    ) -> None:
        self.engine = engine
        self.counters = counters
        self.tally = tally
        self.fail_open = fail_open
        # Told when a tenant's figures moved: cached answers drop, status is rewritten.
        self.on_change = on_change

    async def use_redis(self) -> bool:
        """Whether to count in Redis now; False means PostgreSQL (fail open)."""
        if await self.counters.available():
            return True
        if self.fail_open:
            return False
        raise counters_unavailable()

    async def quotas(self, tenant: Tenant, now: dt.datetime) -> Quotas:
        redis = await self.use_redis()
        try:
            states = await quota_states(self.engine, self.counters, tenant, now, use_redis=redis)
        except CountersDown as error:
            if not self.fail_open:
                raise counters_unavailable() from error
            redis = False
            states = await quota_states(self.engine, self.counters, tenant, now, use_redis=False)
        return Quotas(
            tenant=tenant.key,
            plan=tenant.plan.name if tenant.plan else None,
            quotas=states,
            source="redis" if redis else "database",
        )

    async def consume(
        self, tenant: Tenant, request: ConsumeRequest, clock: Callable[[], dt.datetime]
    ) -> ConsumeResult:
        """Admit and count the request, or raise `QuotaExceeded` (429); `Forbidden` (403)
        once the subscription has ended."""
        admitting(tenant, clock())
        plan = plan_of(tenant)
        consumable(plan, request.metric, request.amount)
        for _ in range(3):
            now = clock()
            redis = await self.use_redis()
            outcome = None
            try:
                async with self.engine.begin() as conn:
                    outcome = await consume(
                        conn, self.counters, tenant, plan, request.metric, request.amount,
                        request.transaction_id, now, use_redis=redis,
                    )  # fmt: skip
            except NeedsRebuild as missing:
                # If Redis fails here, the next attempt counts in PostgreSQL (or refuses).
                with contextlib.suppress(CountersDown):
                    await rebuild(self.engine, self.counters, tenant.uid, missing.metric,
                                  missing.period, now)  # fmt: skip
                continue
            except CountersDown as error:
                if not self.fail_open:
                    raise counters_unavailable() from error
                continue  # Redis went away mid-request: count it in PostgreSQL instead
            except QuotaExceeded:
                self.tally.quota(admitted=False)
                raise
            except BaseException:
                # Redis counted it but the commit failed, or its answer was lost: the event
                # may be in PostgreSQL or not. Giving the amount back would guess; dropping
                # the counter has the next use rebuild it from PostgreSQL (or, if Redis is
                # away too, it is dropped once Redis returns).
                if outcome is not None and outcome.counted_in_redis:
                    await self.counters.forget([outcome.counted_in_redis])
                raise
            if not redis and self.counters.up:
                # Redis came back while this was counted in PostgreSQL alone: drop the
                # counter after the commit, so its rebuild sees this event.
                period = tenant.period_at(now)
                await self.counters.forget([counter_key(tenant.uid, request.metric, period.start)])
            self.tally.quota(admitted=True)
            if not outcome.result.duplicate:
                if not redis:
                    self.tally.counted_in_database(request.amount)
                self.on_change(tenant)
            return outcome.result
        raise Unavailable(
            "The quota could not be settled (Redis kept failing mid-request); retry shortly.",
            code="quota_retry",
            headers={"Retry-After": "1"},
        )
