"""Recurring revenue from subscription terms. Pure.

Definitions (per currency, integer minor units, each sum rounded once):
- A subscription's MRR at a moment: its plan's base price per month (a yearly
  price divided by 12) while it is paying: started, out of its trial, not
  ended. Metered usage, discounts and taxes are not recurring revenue and are
  left out. The current MRR also leaves out `unpaid` subscriptions (suspended).
- ARR = 12 × MRR.
- For a month: `new` is the MRR at its end of subscriptions that had none at
  its start; `churned` the MRR at its start of those that have none at its
  end; `expansion` and `contraction` the rises and falls of the others.
  Start MRR + new + expansion - contraction - churned = end MRR.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from tenantry.core.lifecycle import Terms
from tenantry.core.money import divide, round_minor
from tenantry.core.periods import Interval

_JUST_BEFORE = dt.timedelta(microseconds=1)


def monthly_amount(terms: Terms, moment: dt.datetime) -> Decimal:
    """The subscription's MRR at `moment` (exact), 0 when it is not paying then."""
    if moment < terms.started_at or (terms.trial_end is not None and moment < terms.trial_end):
        return Decimal(0)
    if terms.ended_at is not None and moment >= terms.ended_at:
        return Decimal(0)
    _, plan = terms.plan_at(moment)
    amount = Decimal(plan.price.amount)
    return divide(amount, 12) if plan.price.interval == Interval.YEAR else amount


@dataclass
class Movement:
    start_mrr: Decimal = Decimal(0)
    end_mrr: Decimal = Decimal(0)
    new: Decimal = Decimal(0)
    expansion: Decimal = Decimal(0)
    contraction: Decimal = Decimal(0)
    churned: Decimal = Decimal(0)


@dataclass(frozen=True)
class CurrencyRevenue:
    mrr: int
    arr: int
    month_start_mrr: int
    new: int
    expansion: int
    contraction: int
    churned: int
    past_due: int


@dataclass(frozen=True)
class Revenue:
    month_start: dt.datetime
    month_end: dt.datetime
    currencies: Mapping[str, CurrencyRevenue]
    states: Mapping[str, int] = field(default_factory=dict)


def month_bounds(year: int, month: int) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


def revenue(
    subscriptions: Iterable[tuple[Terms, str]],
    *,
    year: int,
    month: int,
    now: dt.datetime,
    past_due: Mapping[str, int],
) -> Revenue:
    """Figures for the month, and the current MRR; `subscriptions` pairs each subscription's
    terms with its state now; `past_due` is the amount overdue per currency."""
    start, end = month_bounds(year, month)
    last = min(end, now) - _JUST_BEFORE
    movements: dict[str, Movement] = {}
    current: dict[str, Decimal] = {}
    states: dict[str, int] = {}
    for terms, state in subscriptions:
        states[state] = states.get(state, 0) + 1
        move = movements.setdefault(terms.currency, Movement())
        before, after = monthly_amount(terms, start), monthly_amount(terms, last)
        move.start_mrr += before
        move.end_mrr += after
        if before == 0 and after > 0:
            move.new += after
        elif before > 0 and after == 0:
            move.churned += before
        elif after > before:
            move.expansion += after - before
        else:
            move.contraction += before - after
        if state in ("active", "past_due"):
            current[terms.currency] = current.get(terms.currency, Decimal(0)) + monthly_amount(
                terms, now
            )
    currencies = {}
    for currency in sorted(set(movements) | set(past_due)):
        move = movements.get(currency, Movement())
        mrr = current.get(currency, Decimal(0))
        currencies[currency] = CurrencyRevenue(
            mrr=round_minor(mrr),
            arr=round_minor(mrr * 12),
            month_start_mrr=round_minor(move.start_mrr),
            new=round_minor(move.new),
            expansion=round_minor(move.expansion),
            contraction=round_minor(move.contraction),
            churned=round_minor(move.churned),
            past_due=past_due.get(currency, 0),
        )
    return Revenue(start, end, currencies, dict(sorted(states.items())))
