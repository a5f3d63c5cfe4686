"""The dashboard's pure parts, without any server: the fleet's rows, search and pages,
usage per day against the limit, chart geometry, customer-link and session tokens."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tenantry.api.dashboard.charts import bar_chart, nice_ceiling
from tenantry.api.dashboard.fleet import Query, rows_of, select
from tenantry.api.dashboard.service import words
from tenantry.api.dashboard.views import metric_views
from tenantry.api.errors import Forbidden
from tenantry.api.links import Links
from tenantry.api.quotas.schemas import QuotaState


def tenant(i: int, plan: str, ready: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {"plan": plan}
    if ready:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "Provisioned"}]
    return {
        "metadata": {"namespace": "fleet", "name": f"t-{i:04d}"},
        "spec": {"displayName": f"Customer {i}", "billingEmail": f"billing@c{i}.example"},
        "status": status,
    }


def test_rows_join_subscriptions_and_read_health() -> None:
    tenants = [tenant(2, "pro", "True"), tenant(1, "", "False"), tenant(3, "", None)]
    subs = [{"metadata": {"namespace": "fleet"}, "spec": {"tenantRef": {"name": "t-0001"},
             "planRef": {"name": "starter"}}, "status": {"state": "past_due"}}]  # fmt: skip
    rows = rows_of(tenants, subs)
    assert [r.name for r in rows] == ["t-0001", "t-0002", "t-0003"]
    assert (rows[0].plan, rows[0].state, rows[0].health) == ("starter", "past_due", "failing")
    assert (rows[1].plan, rows[1].state, rows[1].health) == ("pro", "none", "healthy")
    assert rows[2].health == "pending"


def test_search_filters_and_pages() -> None:
    rows = rows_of([tenant(i, "pro" if i % 2 else "starter", "True") for i in range(1000)], [])
    page = select(rows, Query(page=3), 50)
    assert (page.matched, page.total, page.pages, page.page) == (1000, 1000, 20, 3)
    assert page.rows[0].name == "t-0100"
    assert [r.name for r in select(rows, Query(search="C737.EXAMPLE"), 50).rows] == ["t-0737"]
    assert select(rows, Query(plan="pro"), 50).matched == 500
    assert select(rows, Query(plan="pro", health="failing"), 50).matched == 0
    assert select(rows, Query(page=99), 50).page == 20  # past the end: the last page
    assert page.plans == ["pro", "starter"]


def test_usage_per_day_is_a_running_total_or_the_day_s_peak() -> None:
    def hour(day: int, at: int) -> dt.datetime:
        return dt.datetime(2030, 1, day, at, tzinfo=dt.UTC)

    hours = {
        "calls": [(hour(1, 3), 5), (hour(1, 9), 2), (hour(3, 0), 4)],
        "devices": [(hour(1, 3), 5), (hour(1, 9), 2), (hour(3, 0), 4)],
    }
    quota = QuotaState(limit=100, used=11, remaining=89, period="2030-01-01/2030-02-01")
    calls, devices, idle = metric_views(
        [("calls", "count", 100), ("devices", "max", None), ("idle", "sum", None)],
        {"calls": 11, "devices": 5},
        hours,
        {"calls": quota},
    )
    assert calls.days == [("2030-01-01", 7), ("2030-01-03", 11)]
    assert (calls.used, calls.remaining, calls.chart.limit_text) == (11, 89, "limit 100")
    assert devices.days == [("2030-01-01", 5), ("2030-01-03", 4)]
    assert (devices.used, devices.remaining, devices.chart.limit_y) == (5, None, None)
    assert (idle.used, idle.days) == (0, [])


def test_chart_scales_to_a_round_ceiling_and_draws_the_limit() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 20, 21, 999)] == [1, 1, 5, 10, 20, 50, 1000]
    chart = bar_chart("calls", [("01", 10, "10"), ("02", 40, "40")], limit=50, limit_text="l")
    assert chart.limit_y == chart.ticks[-1].y  # the limit is the top of the scale
    assert chart.bars[1].height == 4 * chart.bars[0].height
    assert [t.text for t in chart.ticks] == ["0", "12", "25", "37", "50"]


def test_words() -> None:
    assert words("ReleaseDeployed") == "Release deployed"
    assert words("PaymentFailed") == "Payment failed"


def test_a_customer_link_opens_one_tenant_until_it_expires() -> None:
    links, now = Links("x" * 32), dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    token = links.sign("dashboard-customer", "ns/acme/uid-1", now + dt.timedelta(days=7))
    assert links.subject("dashboard-customer", token, now) == "ns/acme/uid-1"
    with pytest.raises(Forbidden) as other_purpose:
        links.subject("dashboard-session", token, now)
    assert other_purpose.value.code == "invalid_link"
    with pytest.raises(Forbidden) as expired:
        links.subject("dashboard-customer", token, now + dt.timedelta(days=8))
    assert expired.value.code == "link_expired"
