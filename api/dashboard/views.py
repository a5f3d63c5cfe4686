"""What each page shows, gathered from the services the API itself uses.

Every figure comes from them as they give it: invoices and revenue from
`BillingService`, usage from `UsageService`, quota figures from
`QuotaService`, keys and license history from their repositories. Pages
print them (api/billing/documents.py's filters for money); they add nothing up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantry.api.dashboard import repository
from tenantry.api.dashboard.charts import Chart, bar_chart
from tenantry.api.dashboard.fleet import NO_SUBSCRIPTION, TenantRow, health_of
from tenantry.api.dashboard.service import words
from tenantry.api.errors import NotFound
from tenantry.api.quotas.schemas import QuotaState
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Tenant
from tenantry.api.usage.schemas import MetricUsage
from tenantry.core.invoices import Invoice
from tenantry.core.money import exponent, format_amount
from tenantry.core.revenue import Revenue
from tenantry.db import apikeys as apikeys_repo
from tenantry.db import licenses as licenses_repo
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
    usage: Mapping[str, MetricUsage],
    quotas: Mapping[str, QuotaState],
) -> list[MetricView]:
    """Per metric of the plan (name, aggregation, limit): the period's figure, the quota's
    figures when limited, and the days of the period for the chart."""
    views = []
    for name, aggregation, limit in plan_metrics:
        metric = usage.get(name)
        quota = quotas.get(name)
        days = _days(metric, aggregation)
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
                used=quota.used if quota else (metric.value if metric else 0),
                limit=limit,
                remaining=quota.remaining if quota else None,
                chart=chart,
                days=days,
            )
        )
    return views


def _days(metric: MetricUsage | None, aggregation: str) -> list[tuple[str, int]]:
    """The usage service's hours, per UTC day: the running total of an additive metric
    (its last day is the period's figure), the day's highest hour otherwise."""
    if metric is None:
        return []
    days: dict[str, int] = {}
    for hour in metric.hours:
        day = hour.hour.astimezone(dt.UTC).strftime("%Y-%m-%d")
        if aggregation in ADDITIVE:
            days[day] = days.get(day, 0) + hour.value
        else:
            days[day] = max(days.get(day, 0), hour.value)
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
    """Everything is read at once, each concern on a connection of its own: the Tenant
    object (`body_of`: a GET, or the fleet list's copy), its keys, license history, usage,
    quota figures and invoices. `row` is its line of the fleet list, if listed."""
    plan = tenant.plan
    plan_metrics = (
        [(m.name, m.aggregation.value, _limit(plan.limit(m.name))) for m in plan.spec.metrics]
        if plan
        else []
    )

    async def license_history() -> list[LicenseRecord]:
        async with rt.engine.connect() as conn:
            history = await licenses_repo.history(conn, tenant.namespace, tenant.name)
        return [h for h in history if h.tenant_uid == tenant.uid]

    async def key_rows() -> list[KeyRow]:
        if not keys:
            return []
        async with rt.engine.connect() as conn:
            return await apikeys_repo.list_for_tenant(
                conn, tenant.namespace, tenant.name, tenant.uid
            )

    async def quota_figures() -> tuple[Mapping[str, QuotaState], str, str | None]:
        if plan is None:
            return {}, "", None
        try:
            found = await rt.quotas.quotas(tenant, now)
        except Exception as error:  # shown, not fatal: usage still comes from PostgreSQL
            return {}, "", f"Quota counters could not be read ({error})."
        return found.quotas, found.source, None

    body, history, key_list, usage, invoices, (quotas, quota_source, note) = await asyncio.gather(
        body_of,
        license_history(),
        key_rows(),
        rt.usage.usage_in_period(tenant, now),
        rt.billing.invoices_of_tenant(
            tenant.uid, limit=INVOICES_SHOWN, before=None, include_drafts=drafts
        ),
        quota_figures(),
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
        license_history=history,
        keys=key_list,
        period=f"{usage.period_start:%Y-%m-%d} – {usage.period_end:%Y-%m-%d}",
        metrics=metric_views(plan_metrics, usage.metrics, quotas),
        invoices=invoices,
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
