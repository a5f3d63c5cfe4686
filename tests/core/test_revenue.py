"""MRR, ARR and a month's movements, from subscription terms."""

from __future__ import annotations

import dataclasses
import datetime as dt

from tenantry.core.lifecycle import PlanChange, Terms
from tenantry.core.resources import PlanSpec
from tenantry.core.revenue import revenue

UTC = dt.UTC


def plan(amount: int, interval: str = "month", currency: str = "USD") -> PlanSpec:
    return PlanSpec.model_validate(
        {
            "displayName": "P",
            "price": {"amount": amount, "currency": currency, "interval": interval},
        }
    )


def terms(name: str, started: dt.datetime, spec: PlanSpec, **extra: object) -> Terms:
    base = Terms(
        uid=name, namespace="ns", name=name, tenant_uid=name, tenant_name=name, plan_name="p",
        plan=spec, started_at=started, anchor_day=started.day,
    )  # fmt: skip
    return dataclasses.replace(base, **extra)  # type: ignore[arg-type]


def test_movements_of_a_month_add_up() -> None:
    now = dt.datetime(2026, 11, 30, tzinfo=UTC)
    old = dt.datetime(2026, 1, 15, tzinfo=UTC)
    upgraded = terms(
        "up", old, plan(5000),
        plan_changes=(PlanChange(dt.datetime(2026, 11, 10, tzinfo=UTC), "p", plan(2000), "q",
                                 plan(5000)),),
    )  # fmt: skip
    subscriptions = [
        (terms("steady", old, plan(1000)), "active"),
        (upgraded, "active"),
        (terms("new", dt.datetime(2026, 11, 3, tzinfo=UTC), plan(12000, "year")), "active"),
        (terms("gone", old, plan(700), ended_at=dt.datetime(2026, 11, 20, tzinfo=UTC)), "canceled"),
        (
            terms(
                "trial",
                dt.datetime(2026, 11, 25, tzinfo=UTC),
                plan(900),
                trial_end=dt.datetime(2026, 12, 9, tzinfo=UTC),
            ),
            "trialing",
        ),
        (terms("late", old, plan(300)), "past_due"),
        (terms("unpaid", old, plan(400)), "unpaid"),
    ]
    figures = revenue(subscriptions, year=2026, month=11, now=now, past_due={"USD": 300})
    usd = figures.currencies["USD"]
    # Paying now: 1000 + 5000 + 12000/12 + 300 (past_due counts, unpaid does not).
    assert usd.mrr == 7300
    assert usd.arr == 87600
    assert usd.new == 1000
    assert usd.expansion == 3000
    assert usd.churned == 700
    assert usd.contraction == 0
    assert usd.past_due == 300
    # The month's start MRR plus its movements is its end MRR (unpaid still counted then).
    assert usd.month_start_mrr == 1000 + 2000 + 700 + 300 + 400
    end = usd.month_start_mrr + usd.new + usd.expansion - usd.contraction - usd.churned
    assert end == 1000 + 5000 + 1000 + 300 + 400
    assert figures.states == {
        "active": 3, "canceled": 1, "past_due": 1, "trialing": 1, "unpaid": 1,
    }  # fmt: skip


def test_currencies_are_kept_apart() -> None:
    now = dt.datetime(2026, 11, 30, tzinfo=UTC)
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    subscriptions = [
        (terms("a", start, plan(1000, currency="EUR")), "active"),
        (terms("b", start, plan(500, currency="JPY")), "active"),
    ]
    figures = revenue(subscriptions, year=2026, month=11, now=now, past_due={})
    assert {c: r.mrr for c, r in figures.currencies.items()} == {"EUR": 1000, "JPY": 500}
