"""Recording usage reports, and reading a tenant's usage back.

The pure part turns reports into events (replays inside a batch, snapshots
mapped onto metrics); `UsageService` judges them against the plan, has the
writer commit the good ones and counts the outcome. The answer to a report
leaves only after the commit that holds its events (see `writer.py`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.errors import Unprocessable
from tenantry.api.quotas.service import plan_of
from tenantry.api.tally import Tally
from tenantry.api.tenants.catalog import Plan, Tenant
from tenantry.api.usage import repository as repo
from tenantry.api.usage.schemas import (
    SNAPSHOT_METRICS,
    HourlyUsage,
    MetricUsage,
    Snapshot,
    SnapshotAccepted,
    UsageAccepted,
    UsageEvent,
    UsageReport,
)
from tenantry.api.usage.validation import Rejection, judge
from tenantry.api.usage.writer import UsageWriter
from tenantry.core.resources import Aggregation
from tenantry.core.usage import period_value


def dedupe(events: Sequence[UsageEvent]) -> list[UsageEvent]:
    """First of each transaction id in a batch; the repeats are duplicates like any replay."""
    seen: dict[str, UsageEvent] = {}
    for event in events:
        seen.setdefault(event.transaction_id, event)
    return list(seen.values())


def snapshot_events(snapshot: Snapshot, plan: Plan) -> tuple[list[UsageEvent], list[str]]:
    """A snapshot's figures as events of the plan's metrics, and the fields it cannot count.

    A figure is ignored when the plan does not meter its metric, or meters it
    as unique_count: a snapshot carries a number, not the distinct values such
    a metric counts. Ignoring it (and saying so) keeps the snapshot's other
    figures; refusing the whole snapshot would lose them on every report.
    """
    events, ignored = [], []
    for field, metric in SNAPSHOT_METRICS.items():
        value = getattr(snapshot, field)
        if value is None:
            continue
        definition = plan.metrics.get(metric)
        if definition is None or definition.aggregation == Aggregation.UNIQUE_COUNT:
            ignored.append(field)
            continue
        events.append(
            UsageEvent(
                transaction_id=f"snapshot:{snapshot.snapshot_id}:{metric}",
                metric=metric,
                value=value,
                timestamp=snapshot.timestamp,
            )
        )
    return events, ignored


def refused(rejected: list[Rejection], accepted: int, duplicates: int, total: int) -> Unprocessable:
    rejected.sort(key=lambda r: r.index)
    first = rejected[0]
    return Unprocessable(
        f"{len(rejected)} of {total} events were refused and not counted (the first, "
        f"#{first.index}: {first.message}); {accepted} were counted and {duplicates} were "
        "already counted before. Fix or drop the refused events; resending the others is "
        "harmless.",
        code="invalid_events",
        details={
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": [
                {"index": r.index, "transaction_id": r.transaction_id, "code": r.code,
                 "message": r.message}
                for r in rejected
            ],
        },
    )  # fmt: skip


class UsageService:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: UsageWriter,
        tally: Tally,
        *,
        future_tolerance: dt.timedelta,
        on_change: Callable[[Tenant], None],
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.tally = tally
        self.future_tolerance = future_tolerance
        # Told when a tenant's figures moved: cached answers drop, status is rewritten.
        self.on_change = on_change

    async def record(self, tenant: Tenant, plan: Plan, events: Sequence[UsageEvent]) -> int:
        """Commit new events; how many were new. Returns only after the commit."""
        unique = dedupe(events)
        if not unique:
            return 0
        written = await self.writer.write(tenant, plan, unique)
        if not written.in_redis:
            self.tally.counted_in_database(written.accepted)
        if written.accepted:
            self.on_change(tenant)
        return written.accepted

    async def report_batch(
        self,
        tenant: Tenant,
        parsed: list[tuple[int, UsageEvent]],
        rejected: list[Rejection],
        now: dt.datetime,
    ) -> UsageAccepted:
        """Count the good events of a batch; 422 listing the refused ones, if any."""
        plan = plan_of(tenant)
        total = len(parsed) + len(rejected)
        good, bad = judge(parsed, plan, now, self.future_tolerance, tenant.subscription_end)
        rejected = [*rejected, *bad]
        accepted = await self.record(tenant, plan, good)
        duplicates = len(good) - accepted
        self.tally.events(accepted=accepted, duplicate=duplicates, rejected=len(rejected))
        if rejected:
            raise refused(rejected, accepted, duplicates, total)
        return UsageAccepted(accepted=accepted, duplicates=duplicates)

    async def report_snapshot(
        self, tenant: Tenant, snapshot: Snapshot, now: dt.datetime
    ) -> SnapshotAccepted:
        plan = plan_of(tenant)
        events, ignored = snapshot_events(snapshot, plan)
        good, bad = judge(
            list(enumerate(events)), plan, now, self.future_tolerance, tenant.subscription_end
        )
        if bad:
            raise Unprocessable(
                f"The snapshot cannot be counted: {bad[0].message}", code="invalid_snapshot",
                details={"problems": [{"metric": events[b.index].metric, "code": b.code,
                                       "message": b.message} for b in bad]},
            )  # fmt: skip
        accepted = await self.record(tenant, plan, good)
        return SnapshotAccepted(accepted=accepted, duplicates=len(good) - accepted, ignored=ignored)

    async def usage_in_period(self, tenant: Tenant, at: dt.datetime) -> UsageReport:
        """The tenant's usage in its billing period holding `at`, per metric and hour."""
        period = tenant.period_at(at)
        async with self.engine.connect() as conn:
            totals = await repo.period_totals(conn, tenant.uid, period)
            hours = await repo.hourly(conn, tenant.uid, period)
        metrics = {
            t.metric: MetricUsage(aggregation=t.aggregation.value, value=period_value(t))
            for t in totals
        }
        for metric, hour, value, events in hours:
            if metric in metrics:
                metrics[metric].hours.append(HourlyUsage(hour=hour, value=value, events=events))
        return UsageReport(
            tenant=tenant.key,
            period=period.label(),
            period_start=period.start,
            period_end=period.end,
            metrics=metrics,
        )
