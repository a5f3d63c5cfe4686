"""What each page shows, gathered from the services the API itself uses.

Every figure comes from them as they give it: revenue from `BillingService`,
quota figures from `QuotaService`; a tenant's invoices, usage, keys and license
history from their owners' reads, made as one statement (repository.py), its
invoices built by the billing repository and the period's usage figures by
`period_value`, as the usage service computes them. Pages print them
(api/billing/documents.py's filters for money); they add nothing up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tenantry.api.dashboard import repository
from tenantry.api.dashboard.charts import Chart, bar_chart
from tenantry.api.dashboard.fleet import NO_SUBSCRIPTION, TenantRow, health_of
from tenantry.api.dashboard.service import words
from tenantry.api.errors import NotFound
from tenantry.api.quotas.schemas import QuotaState
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Tenant
from tenantry.core.invoices import Invoice
from tenantry.core.money import exponent, format_amount
from tenantry.core.revenue import Revenue
from tenantry.core.usage import period_values
from tenantry.db import outbox
from tenantry.db.apikeys import KeyRow
from tenantry.db.licenses import LicenseRecord

INVOICES_SHOWN = 24
CONDITION_NAMES = {
    "Ready": "Ready overall",
    "NamespaceReady": "Namespace",
    "LicenseIssued": "License",
    "ReleaseDeployed": "Instance deployed",
    "PaymentCurrent": "Payments",
    "StripeSynced": "Stripe",
}
ADDITIVE = ("count", "sum")


@dataclass(frozen=True)
class ConditionView:
    name: str
    ok: bool | None
    reason: str
    message: str
    since: str


def conditions_of(status: Mapping[str, Any]) -> list[ConditionView]:
    views = []
    for cond in status.get("conditions") or []:
        kind = str(cond.get("type", ""))
        views.append(
            ConditionView(
                name=CONDITION_NAMES.get(kind, words(kind)),
                ok={"True": True, "False": False}.get(cond.get("status")),
                reason=words(str(cond.get("reason") or "")),
                message=str(cond.get("message") or ""),
                since=str(cond.get("lastTransitionTime") or ""),
            )
        )
    return views


@dataclass(frozen=True)
class MetricView:
    name: str
    aggregation: str
    used: int | None
    limit: int | None  # None: unlimited
    remaining: int | None
    chart: Chart
    days: Sequence[tuple[str, int]]


def metric_views(
    plan_metrics: Sequence[tuple[str, str, int | None]],
    figures: Mapping[str, int],
    hours: Mapping[str, Sequence[tuple[dt.datetime, int]]],
    quotas: Mapping[str, QuotaState],
) -> list[MetricView]:
    """Per metric of the plan (name, aggregation, limit): the period's figure (the usage
    service's `period_value`), the quota's figures when limited, and the days of the period
    for the chart, from the metric's hours (hour, value)."""
    views = []
    for name, aggregation, limit in plan_metrics:
        quota = quotas.get(name)
        days = _days(hours.get(name, ()), aggregation)
        title = (
            f"{name}: cumulative per day" if aggregation in ADDITIVE else f"{name}: peak per day"
        )
        chart = bar_chart(
            title,
            [(day[5:], value, f"{value:,}") for day, value in days],
            limit=limit,
            limit_text=f"limit {limit:,}" if limit is not None else "",
        )
        views.append(
            MetricView(
                name=name,
                aggregation=aggregation,
                used=quota.used if quota else figures.get(name, 0),
                limit=limit,
                remaining=quota.remaining if quota else None,
                chart=chart,
                days=days,
            )
        )
    return views


def _days(hours: Sequence[tuple[dt.datetime, int]], aggregation: str) -> list[tuple[str, int]]:
    """The hours per UTC day: the running total of an additive metric (its last day is
    the period's figure), the day's highest hour otherwise."""
    days: dict[str, int] = {}
    for hour, value in hours:
        day = hour.astimezone(dt.UTC).strftime("%Y-%m-%d")
        if aggregation in ADDITIVE:
            days[day] = days.get(day, 0) + value
        else:
            days[day] = max(days.get(day, 0), value)
    ordered = sorted(days.items())
    if aggregation in ADDITIVE:
        running = 0
        cumulative = []
        for day, value in ordered:
            running += value
            cumulative.append((day, running))
        return cumulative
    return ordered


@dataclass(frozen=True)
class TenantPage:
    row: TenantRow | None
    namespace: str
    name: str
    display_name: str
    uid: str
    plan: str
    plan_display: str
    state: str
    health: str
    chart_version: str
    release_revision: int | None
    conditions: Sequence[ConditionView]
    license: Mapping[str, Any]
    license_history: Sequence[LicenseRecord]
    keys: Sequence[KeyRow]
    period: str
    metrics: Sequence[MetricView]
    invoices: Sequence[Invoice]
    quota_source: str = ""
    stripe_customer: str = ""
    notes: Sequence[str] = field(default_factory=list)


async def tenant_page(
    rt: Runtime,
    tenant: Tenant,
    now: dt.datetime,
    *,
    body_of: Awaitable[Mapping[str, Any] | None],
    row: TenantRow | None,
    keys: bool = True,
    drafts: bool = True,
) -> TenantPage:
    """Read at once: the Tenant object (`body_of`: a GET, or the fleet list's copy), the
    quota figures (Redis, as `GET /v1/quota` reads them) and, in one statement, what
    PostgreSQL holds: license history, keys, usage of the period and invoices (see
    repository.py). `row` is its line of the fleet list, if listed."""
    plan = tenant.plan
    plan_metrics = (
        [(m.name, m.aggregation.value, _limit(plan.limit(m.name))) for m in plan.spec.metrics]
        if plan
        else []
    )
    period = tenant.period_at(now)
    assert rt.dashboard is not None
    last_reads, read = rt.dashboard.last_reads, (tenant.uid, period.start, keys, drafts)

    async def records() -> repository.TenantRecords:
        async with rt.engine.connect() as conn:
            # One statement is one snapshot: no transaction to open and roll back (two
            # round trips of the three).
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = (await conn.get_raw_connection()).driver_connection
            assert isinstance(driver, psycopg.AsyncConnection)
            found = await repository.tenant_records(
                driver, tenant, period, invoices=INVOICES_SHOWN, drafts=drafts, keys=keys,
                last=last_reads.get(read),
            )  # fmt: skip
        last_reads.put(read, found)
        return found

    async def quota_figures() -> tuple[Mapping[str, QuotaState], str, str | None]:
        if plan is None:
            return {}, "", None
        try:
            found = await rt.quotas.quotas(tenant, now)
        except Exception as error:  # shown, not fatal: usage still comes from PostgreSQL
            return {}, "", f"Quota counters could not be read ({error})."
        return found.quotas, found.source, None

    body, found, (quotas, quota_source, note) = await asyncio.gather(
        body_of, records(), quota_figures()
    )
    if body is None:
        raise NotFound(
            f"There is no Tenant {tenant.name} in namespace {tenant.namespace}.",
            code="tenant_not_found",
        )
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    notes = [note] if note else []
    health, _ = health_of(status)
    hours: dict[str, list[tuple[dt.datetime, int]]] = {}
    for metric, hour, value, _events in found.hours:
        hours.setdefault(metric, []).append((hour, value))
    release = status.get("release") or {}
    return TenantPage(
        row=row,
        namespace=tenant.namespace,
        name=tenant.name,
        display_name=spec.get("displayName") or tenant.name,
        uid=tenant.uid,
        plan=plan.name if plan else (status.get("plan") or ""),
        plan_display=plan.spec.display_name if plan and plan.spec.display_name else "",
        state=row.state if row else NO_SUBSCRIPTION,
        health=health,
        chart_version=release.get("chartVersion") or "",
        release_revision=release.get("revision"),
        conditions=conditions_of(status),
        license=status.get("license") or {},
        license_history=found.licenses,
        keys=found.keys,
        period=f"{period.start:%Y-%m-%d} – {period.end:%Y-%m-%d}",
        metrics=metric_views(plan_metrics, period_values(found.totals), hours, quotas),
        invoices=found.invoices,
        quota_source=quota_source,
        stripe_customer=status.get("stripeCustomerId") or "",
        notes=notes,
    )


def _limit(value: int) -> int | None:
    return None if value < 0 else value


# ------------------------------------------------------------------ revenue


@dataclass(frozen=True)
class RevenuePage:
    month: str
    now: Revenue
    months: Sequence[tuple[str, Revenue]]  # oldest first, the current month last
    charts: Mapping[str, Chart]  # per currency: MRR at the start of each month


def _month_back(year: int, month: int, back: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) - back
    return index // 12, index % 12 + 1


async def revenue_page(rt: Runtime, now: dt.datetime) -> RevenuePage:
    months = [_month_back(now.year, now.month, back) for back in range(11, -1, -1)]
    figures = await asyncio.gather(*(rt.billing.revenue(y, m) for y, m in months))
    labelled = [(f"{y:04d}-{m:02d}", r) for (y, m), r in zip(months, figures, strict=True)]
    current = figures[-1]
    currencies = sorted({c for _, r in labelled for c in r.currencies})
    charts = {}
    for currency in currencies:
        points = []
        for label, r in labelled:
            value = r.currencies[currency].month_start_mrr if currency in r.currencies else 0
            points.append((label[2:], value, f"{format_amount(value, currency)} {currency}"))
        mrr = current.currencies[currency].mrr if currency in current.currencies else 0
        points.append(("now", mrr, f"{format_amount(mrr, currency)} {currency}"))
        charts[currency] = bar_chart(
            f"MRR at the start of each month, and now, {currency}",
            points,
            tick_text=lambda v, c=currency: format_amount(v, c),
            minimum=4 * 10 ** exponent(currency),
        )
    return RevenuePage(month=labelled[-1][0], now=current, months=labelled, charts=charts)


# ------------------------------------------------------------------ billing


@dataclass(frozen=True)
class BillingPage:
    runs: Sequence[repository.RunRow]
    deliveries: Sequence[outbox.Delivery]
    stripe_events: Sequence[repository.StripeEventRow]
    stripe_on: bool


async def billing_page(rt: Runtime, limit: int = 25) -> BillingPage:
    async with rt.engine.connect() as conn:
        runs = await repository.billing_runs(conn, limit)
        deliveries = await outbox.log(conn, limit=limit)
        events = await repository.stripe_events(conn, limit)
    return BillingPage(runs, deliveries, events, rt.stripe is not None)
