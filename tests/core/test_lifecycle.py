"""A subscription's life: boundaries, invoice lines, state and terms, with the time passed in.

Two USD plans: Starter, 30.00 a month and 0.02 a call past 100 calls; Pro,
90.00 a month and 0.01 a call past 1000. Expected amounts were worked out by
hand (the fraction and the rounding are written beside each).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry.core import lifecycle
from tenantry.core.invoices import Line, LineKind, Party, totals
from tenantry.core.lifecycle import (
    BillingFacts,
    Boundary,
    CouponOffer,
    CouponTerms,
    LateUsage,
    PlanChange,
    Terms,
    boundaries,
    discount_for,
    draft_invoice,
    next_terms,
    proration_lines,
    state_at,
)
from tenantry.core.money import round_minor
from tenantry.core.periods import Interval, Period
from tenantry.core.resources import (
    CouponDuration,
    CouponSpec,
    MeteredPrice,
    Metric,
    PlanSpec,
    Price,
    SubscriptionState,
    TrialUsage,
)

DAY = 86_400


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def period(start: dt.datetime, end: dt.datetime) -> Period:
    return Period(start, end)


def plan(
    name: str,
    amount: int,
    *,
    unit: str,
    allowance: int,
    currency: str = "USD",
    interval: Interval = Interval.MONTH,
    trial_days: int = 0,
    trial_usage: TrialUsage = TrialUsage.WAIVED,
    grace_days: int = 7,
) -> PlanSpec:
    return PlanSpec(
        display_name=name,
        price=Price(amount=amount, currency=currency, interval=interval),
        trial_days=trial_days,
        trial_usage=trial_usage,
        past_due_grace_days=grace_days,
        metrics=[Metric(name="api_calls")],
        metered_prices=[MeteredPrice(metric="api_calls", unit_amount=unit, allowance=allowance)],
    )


STARTER = plan("Starter", 3000, unit="2", allowance=100)
PRO = plan("Pro", 9000, unit="1", allowance=1000)
STARTER_TRIAL = STARTER.model_copy(update={"trial_days": 14})
CHARGED_TRIAL = STARTER_TRIAL.model_copy(update={"trial_usage": TrialUsage.CHARGED})

STARTED = at(2026, 3, 15, 10, 30)
USAGE = {"api_calls": 1100}  # Starter: (1100-100) × 2 = 2000; Pro: (1100-1000) × 1 = 100
TRIAL_USAGE = {"api_calls": 5000}  # Starter: (5000-100) × 2 = 9800


def terms(
    spec: PlanSpec = STARTER,
    plan_name: str = "starter",
    *,
    started: dt.datetime = STARTED,
    anchor_day: int | None = None,
    trial_end: dt.datetime | None = None,
    **more: Any,
) -> Terms:
    first_paid = trial_end or started
    return Terms(
        uid="sub-uid",
        namespace="acme",
        name="main",
        tenant_uid="tenant-uid",
        tenant_name="acme",
        plan_name=plan_name,
        plan=spec,
        started_at=started,
        anchor_day=anchor_day or first_paid.day,
        trial_end=trial_end,
        **more,
    )


def changed(subscription: Terms, *changes: PlanChange) -> Terms:
    last = changes[-1]
    return replace(
        subscription, plan_name=last.to_plan_name, plan=last.to_plan, plan_changes=changes
    )


def to_pro(moment: dt.datetime) -> PlanChange:
    return PlanChange(moment, "starter", STARTER, "pro", PRO)


def to_starter(moment: dt.datetime) -> PlanChange:
    return PlanChange(moment, "pro", PRO, "starter", STARTER)


Row = tuple[dt.datetime, dt.datetime | None, Period | None, Period | None, bool]


def rows(found: list[Boundary]) -> list[Row]:
    """(at, previous, base period, usage period, final) of each boundary."""
    return [(b.at, b.previous, b.base_period, b.usage_period, b.final) for b in found]


def amounts(lines: tuple[Line, ...]) -> list[tuple[LineKind, int]]:
    return [(item.kind, item.amount) for item in lines]


def round_half_up(value: Fraction) -> int:
    if value < 0:
        return -round_half_up(-value)
    return math.floor(value + Fraction(1, 2))


MAR15, APR15, MAY15, JUN15 = at(2026, 3, 15), at(2026, 4, 15), at(2026, 5, 15), at(2026, 6, 15)
TRIAL = period(at(2026, 3, 1), at(2026, 3, 16))  # 14 days from Mar 1 09:00, to the next 00:00


def trialing(spec: PlanSpec = STARTER_TRIAL, **more: Any) -> Terms:
    return terms(spec, started=at(2026, 3, 1, 9), trial_end=at(2026, 3, 16), **more)


# ------------------------------------------------------------- boundaries


def test_boundaries_without_a_trial() -> None:
    found = boundaries(terms(), until=at(2026, 5, 20))
    assert rows(found) == [
        (MAR15, None, period(MAR15, APR15), None, False),
        (APR15, MAR15, period(APR15, MAY15), period(MAR15, APR15), False),
        (MAY15, APR15, period(MAY15, JUN15), period(APR15, MAY15), False),
    ]
    assert all(b.usage_charged for b in found[1:])
    assert rows(boundaries(terms(), until=APR15)) == rows(found[:2])  # `until` counts
    assert boundaries(terms(), until=at(2026, 3, 14)) == []


@pytest.mark.parametrize(
    ("started", "anchor", "expected"),
    [
        (at(2028, 1, 31, 9), 31, [(2028, 1, 31), (2028, 2, 29), (2028, 3, 31), (2028, 4, 30)]),
        (at(2027, 1, 31, 9), 31, [(2027, 1, 31), (2027, 2, 28), (2027, 3, 31), (2027, 4, 30)]),
        (at(2027, 1, 30), 30, [(2027, 1, 30), (2027, 2, 28), (2027, 3, 30), (2027, 4, 30)]),
        (at(2028, 1, 29), 29, [(2028, 1, 29), (2028, 2, 29), (2028, 3, 29), (2028, 4, 29)]),
        (at(2027, 1, 29), 29, [(2027, 1, 29), (2027, 2, 28), (2027, 3, 29), (2027, 4, 29)]),
        # A requested anchor day after the start day: a short first period.
        (at(2027, 1, 10), 31, [(2027, 1, 10), (2027, 1, 31), (2027, 2, 28), (2027, 3, 31)]),
    ],
)
def test_boundaries_on_anchor_days_29_to_31(
    started: dt.datetime, anchor: int, expected: list[tuple[int, int, int]]
) -> None:
    found = boundaries(terms(started=started, anchor_day=anchor), until=at(*expected[-1]))
    assert [b.at for b in found] == [at(*day) for day in expected]
    for before, after in itertools.pairwise(found):
        assert before.base_period == period(before.at, after.at) == after.usage_period


def test_a_waived_trial_is_its_own_period_and_its_end_is_invoiced() -> None:
    found = boundaries(trialing(), until=at(2026, 4, 16))
    assert rows(found) == [
        (at(2026, 3, 16), None, period(at(2026, 3, 16), at(2026, 4, 16)), TRIAL, False),
        (at(2026, 4, 16), at(2026, 3, 16), period(at(2026, 4, 16), at(2026, 5, 16)),
         period(at(2026, 3, 16), at(2026, 4, 16)), False),
    ]  # fmt: skip
    assert [b.usage_charged for b in found] == [False, True]
    first = draft_invoice(trialing(), found[0], TRIAL_USAGE)
    assert amounts(first.lines) == [(LineKind.BASE, 3000)]  # the trial's usage is waived
    assert first.lines[0].period == period(at(2026, 3, 16), at(2026, 4, 16))
    second = draft_invoice(trialing(), found[1], TRIAL_USAGE)
    assert amounts(second.lines) == [(LineKind.BASE, 3000), (LineKind.METERED, 9800)]


def test_a_charged_trial_bills_its_usage_with_the_first_base_fee() -> None:
    subscription = trialing(CHARGED_TRIAL)
    first = boundaries(subscription, until=at(2026, 3, 16))[0]
    assert first.usage_charged
    draft = draft_invoice(subscription, first, TRIAL_USAGE)
    assert amounts(draft.lines) == [(LineKind.BASE, 3000), (LineKind.METERED, 9800)]
    assert draft.lines[1].period == TRIAL
    assert draft.period == period(at(2026, 3, 1), at(2026, 4, 16))


def test_cancel_at_period_end_bills_usage_and_no_new_base_fee() -> None:
    subscription = terms(cancel_at=APR15, ended_at=APR15, end_reason="cancel_at_period_end")
    found = boundaries(subscription, until=at(2026, 6, 1))
    assert rows(found) == [
        (MAR15, None, period(MAR15, APR15), None, False),
        (APR15, MAR15, None, period(MAR15, APR15), True),
    ]
    for credit in (False, True):
        final = draft_invoice(subscription, found[-1], USAGE, credit_unused_on_cancel=credit)
        assert amounts(final.lines) == [(LineKind.METERED, 2000)]


def test_a_reached_cancel_at_ends_the_boundaries_before_the_end_is_recorded() -> None:
    # The billing run may pass the period's end before the operator records `ended_at`.
    pending = terms(cancel_at=APR15)
    assert rows(boundaries(pending, until=at(2026, 6, 1))) == rows(
        boundaries(replace(pending, ended_at=APR15), until=at(2026, 6, 1))
    )
    assert boundaries(pending, until=at(2026, 6, 1))[-1].final
    assert not any(b.final for b in boundaries(pending, until=at(2026, 4, 14)))


def test_deleted_mid_period_without_a_credit() -> None:
    ended = at(2026, 4, 10, 12)
    subscription = terms(ended_at=ended, end_reason="deleted")
    found = boundaries(subscription, until=at(2026, 6, 1))
    assert rows(found) == [
        (MAR15, None, period(MAR15, APR15), None, False),
        (ended, MAR15, None, period(MAR15, APR15), True),
    ]
    final = draft_invoice(subscription, found[-1], USAGE)
    assert amounts(final.lines) == [(LineKind.METERED, 2000)]
    assert boundaries(subscription, until=at(2026, 4, 10)) == found[:1]


def test_deleted_mid_period_with_a_credit_of_the_unused_base_fee() -> None:
    ended = at(2026, 4, 10, 12)
    subscription = terms(ended_at=ended, end_reason="deleted")
    final = boundaries(subscription, until=at(2026, 6, 1))[-1]
    draft = draft_invoice(subscription, final, USAGE, credit_unused_on_cancel=True)
    # 4.5 of 31 days unused: 3000 × 388 800 / 2 678 400 = 435.48
    assert amounts(draft.lines) == [(LineKind.METERED, 2000), (LineKind.CANCEL_CREDIT, -435)]
    credit = draft.lines[1]
    # Kept to 60 digits, as the division gave it (not cut to the default 28).
    assert abs(Fraction(credit.unrounded) + Fraction(13500, 31)) < Fraction(1, 10**55)
    assert credit.period == period(ended, APR15)
    assert totals(draft.lines).total == 1565


def test_deleted_on_its_first_day_credits_almost_the_whole_fee() -> None:
    subscription = terms(ended_at=at(2026, 3, 15, 11), end_reason="deleted")
    found = boundaries(subscription, until=at(2026, 6, 1))
    assert [(b.at, b.final) for b in found] == [(MAR15, False), (at(2026, 3, 15, 11), True)]
    base = draft_invoice(subscription, found[0], {})
    assert amounts(base.lines) == [(LineKind.BASE, 3000)]
    final = draft_invoice(subscription, found[1], {}, credit_unused_on_cancel=True)
    # 2 638 800 of 2 678 400 seconds unused: 3000 × that = 2955.65
    assert amounts(final.lines) == [(LineKind.METERED, 0), (LineKind.CANCEL_CREDIT, -2956)]


@pytest.mark.parametrize("spec", [STARTER_TRIAL, CHARGED_TRIAL])
def test_deleted_during_the_trial(spec: PlanSpec) -> None:
    ended = at(2026, 3, 10, 15)
    subscription = trialing(spec, ended_at=ended, end_reason="deleted")
    assert boundaries(subscription, until=at(2026, 3, 10)) == []
    found = boundaries(subscription, until=at(2026, 6, 1))
    assert rows(found) == [(ended, None, None, TRIAL, True)]
    draft = draft_invoice(subscription, found[0], TRIAL_USAGE, credit_unused_on_cancel=True)
    if spec.trial_usage == TrialUsage.WAIVED:
        assert draft.empty
    else:
        assert amounts(draft.lines) == [(LineKind.METERED, 9800)]


def test_cancel_at_period_end_during_the_trial_ends_with_the_trial() -> None:
    subscription = trialing(cancel_at=at(2026, 3, 16), ended_at=at(2026, 3, 16))
    found = boundaries(subscription, until=at(2026, 6, 1))
    assert rows(found) == [(at(2026, 3, 16), None, None, TRIAL, True)]
    assert draft_invoice(subscription, found[0], TRIAL_USAGE).empty


# ------------------------------------------------------------ prorations


def monthly_from(day: dt.datetime, *changes: PlanChange) -> Terms:
    return changed(terms(started=day, anchor_day=day.day), *changes)


def test_upgrade_mid_period_prorates_on_the_next_invoice() -> None:
    subscription = monthly_from(at(2026, 1, 1), to_pro(at(2026, 1, 11)))
    first, second, third = boundaries(subscription, until=at(2026, 3, 1))
    assert amounts(draft_invoice(subscription, first, {}).lines) == [(LineKind.BASE, 3000)]
    draft = draft_invoice(subscription, second, USAGE)
    # 21 of 31 days left: Starter 3000 × 21/31 = 2032.26, Pro 9000 × 21/31 = 6096.77;
    # January's usage is priced by Pro, the plan in force at its end.
    assert amounts(draft.lines) == [
        (LineKind.BASE, 9000),
        (LineKind.PRORATION, -2032),
        (LineKind.PRORATION, 6097),
        (LineKind.METERED, 100),
    ]
    assert draft.plan_name == "pro"
    assert draft.lines[1].period == draft.lines[2].period == period(at(2026, 1, 11), at(2026, 2, 1))
    assert draft.lines[1].is_credit
    assert not draft.lines[2].is_credit
    assert draft.period == period(at(2026, 1, 1), at(2026, 3, 1))
    later = draft_invoice(subscription, third, USAGE)
    assert amounts(later.lines) == [(LineKind.BASE, 9000), (LineKind.METERED, 100)]


@pytest.mark.parametrize(
    ("started", "moment", "credit", "charge"),
    [
        # 28 days, 14 left: 3000 × 14/28, 9000 × 14/28
        (at(2026, 2, 1), at(2026, 2, 15), 1500, 4500),
        # leap February, 29 days, 15 left: 1551.72, 4655.17
        (at(2028, 2, 1), at(2028, 2, 15), 1552, 4655),
        # 30 days, 10 left
        (at(2026, 4, 1), at(2026, 4, 21), 1000, 3000),
        # 31 days, 1 769 104 s left: 1981.52, 5944.57
        (at(2026, 1, 1), at(2026, 1, 11, 12, 34, 56), 1982, 5945),
        # anchor 31: [Feb 29, Mar 31) 2028, 20.5 of 31 days left: 1983.87, 5951.61
        (at(2028, 1, 31), at(2028, 3, 10, 12), 1984, 5952),
        # anchor 31: [Jan 31, Feb 29) 2028, 15 of 29 days left
        (at(2028, 1, 31), at(2028, 2, 14), 1552, 4655),
    ],
)
def test_proration_by_the_second_across_month_lengths(
    started: dt.datetime, moment: dt.datetime, credit: int, charge: int
) -> None:
    subscription = monthly_from(started, to_pro(moment))
    lines = proration_lines(subscription, subscription.plan_changes[0])
    assert amounts(tuple(lines)) == [(LineKind.PRORATION, -credit), (LineKind.PRORATION, charge)]
    invoice = next(b for b in boundaries(subscription, until=moment + dt.timedelta(days=40))
                   if b.at > moment)  # fmt: skip
    drafted = draft_invoice(subscription, invoice, {}).lines
    assert [item.amount for item in drafted if item.kind == LineKind.PRORATION] == [
        -credit,
        charge,
    ]


def test_a_change_at_a_boundary_prorates_nothing() -> None:
    subscription = monthly_from(at(2026, 1, 1), to_pro(at(2026, 2, 1)))
    _, february, march = boundaries(subscription, until=at(2026, 3, 1))
    draft = draft_invoice(subscription, february, USAGE)
    # The new base fee from the change on; January's usage at Starter's price.
    assert amounts(draft.lines) == [(LineKind.BASE, 9000), (LineKind.METERED, 2000)]
    assert amounts(draft_invoice(subscription, march, USAGE).lines) == [
        (LineKind.BASE, 9000),
        (LineKind.METERED, 100),
    ]


def test_two_changes_in_one_period() -> None:
    subscription = monthly_from(
        at(2026, 1, 1), to_pro(at(2026, 1, 11)), to_starter(at(2026, 1, 21))
    )
    february = boundaries(subscription, until=at(2026, 2, 1))[1]
    # 21/31 left at the first change, 11/31 at the second: 3194 = 9000 × 11/31, 1065 = 3000 × 11/31
    assert amounts(draft_invoice(subscription, february, USAGE).lines) == [
        (LineKind.BASE, 3000),
        (LineKind.PRORATION, -2032),
        (LineKind.PRORATION, 6097),
        (LineKind.PRORATION, -3194),
        (LineKind.PRORATION, 1065),
        (LineKind.METERED, 2000),
    ]


def test_a_change_during_the_trial_prorates_nothing() -> None:
    subscription = changed(trialing(), to_pro(at(2026, 3, 5)))
    first = boundaries(subscription, until=at(2026, 3, 16))[0]
    assert proration_lines(subscription, subscription.plan_changes[0]) == []
    assert amounts(draft_invoice(subscription, first, TRIAL_USAGE).lines) == [(LineKind.BASE, 9000)]


def test_deleted_after_an_upgrade_credits_the_new_plan() -> None:
    subscription = replace(
        monthly_from(at(2026, 1, 1), to_pro(at(2026, 1, 11))),
        ended_at=at(2026, 1, 21),
        end_reason="deleted",
    )
    final = boundaries(subscription, until=at(2026, 3, 1))[-1]
    assert final.final
    assert final.previous == at(2026, 1, 1)
    draft = draft_invoice(subscription, final, USAGE, credit_unused_on_cancel=True)
    # Pro for the 11 of 31 days after the end: 9000 × 11/31 = 3193.55
    assert amounts(draft.lines) == [
        (LineKind.PRORATION, -2032),
        (LineKind.PRORATION, 6097),
        (LineKind.METERED, 100),
        (LineKind.CANCEL_CREDIT, -3194),
    ]


def test_late_usage_is_priced_by_the_plan_of_its_period() -> None:
    subscription = terms()
    may = boundaries(subscription, until=MAY15)[-1]
    late = LateUsage(
        period=period(MAR15, APR15),
        metric="api_calls",
        billed_quantity=Decimal(1100),
        billed_unrounded=Decimal(2000),
        billed_amount=2000,
        quantity=Decimal(1600),  # (1600-100) × 2 = 3000: 1000 more
    )
    draft = draft_invoice(subscription, may, USAGE, late=[late])
    assert amounts(draft.lines) == [
        (LineKind.BASE, 3000),
        (LineKind.METERED, 2000),
        (LineKind.LATE_USAGE, 1000),
    ]
    assert draft.lines[2].quantity == 500
    assert draft.period == period(MAR15, JUN15)


def test_late_usage_keeps_every_digit_of_its_unrounded_amount() -> None:
    precise = plan("Precise", 0, unit="99.999999999999", allowance=0)
    late = LateUsage(
        period=period(MAR15, APR15),
        metric="api_calls",
        billed_quantity=Decimal(0),
        billed_unrounded=Decimal(0),
        billed_amount=0,
        quantity=Decimal(999_999_999_999_999),
    )
    line = lifecycle.late_usage_line(precise, late)
    assert line is not None
    exact = 999_999_999_999_999 * Fraction("99.999999999999")  # 29 significant digits
    assert Fraction(line.unrounded) == exact
    assert line.amount == round_half_up(exact)
    assert line.quantity == 999_999_999_999_999


# ------------------------------------------------------------------ state


def test_states_through_trial_active_past_due_unpaid_and_canceled() -> None:
    subscription = trialing(ended_at=at(2026, 7, 1))
    due = at(2026, 4, 23)  # the due date of an open invoice
    facts = BillingFacts(overdue_since=due, amount_due=3000)
    expected = [
        (at(2026, 3, 1, 9), BillingFacts(), SubscriptionState.TRIALING),
        (at(2026, 3, 15, 23, 59), BillingFacts(), SubscriptionState.TRIALING),
        (at(2026, 3, 16), BillingFacts(), SubscriptionState.ACTIVE),
        (at(2026, 4, 22, 23, 59), facts, SubscriptionState.ACTIVE),
        (at(2026, 4, 23, 12), facts, SubscriptionState.PAST_DUE),
        (at(2026, 4, 29, 23, 59), facts, SubscriptionState.PAST_DUE),
        (at(2026, 4, 30), facts, SubscriptionState.UNPAID),  # 7 grace days later
        (at(2026, 6, 30, 23, 59), facts, SubscriptionState.UNPAID),
        (at(2026, 7, 1), facts, SubscriptionState.CANCELED),
        (at(2027, 1, 1), BillingFacts(), SubscriptionState.CANCELED),
    ]
    assert [state_at(subscription, f, now) for now, f, _ in expected] == [s for *_, s in expected]


def test_the_grace_days_are_the_plans() -> None:
    facts = BillingFacts(overdue_since=at(2026, 4, 23), amount_due=3000)
    strict = terms(STARTER.model_copy(update={"past_due_grace_days": 0}))
    assert state_at(strict, facts, at(2026, 4, 23, 12)) == SubscriptionState.UNPAID
    lenient = terms(STARTER.model_copy(update={"past_due_grace_days": 30}))
    assert state_at(lenient, facts, at(2026, 5, 22)) == SubscriptionState.PAST_DUE
    assert state_at(lenient, facts, at(2026, 5, 23)) == SubscriptionState.UNPAID


def test_current_period_and_cancel_at() -> None:
    subscription = trialing()
    assert lifecycle.current_period(subscription, at(2026, 3, 5)) == TRIAL
    assert lifecycle.cancel_at(subscription, at(2026, 3, 5)) == at(2026, 3, 16)
    assert lifecycle.current_period(subscription, at(2026, 4, 20)) == period(
        at(2026, 4, 16), at(2026, 5, 16)
    )
    assert lifecycle.cancel_at(subscription, at(2026, 4, 20)) == at(2026, 5, 16)
    ended = replace(subscription, ended_at=at(2026, 4, 20))
    assert lifecycle.current_period(ended, at(2026, 4, 20)) is None


def test_trial_end_is_whole_days() -> None:
    assert lifecycle.trial_end(at(2026, 3, 1, 9), 14) == at(2026, 3, 16)
    assert lifecycle.trial_end(at(2026, 3, 1), 14) == at(2026, 3, 15)
    assert lifecycle.trial_end(at(2028, 2, 15, 1), 14) == at(2028, 3, 1)  # through Feb 29
    assert lifecycle.trial_end(at(2026, 3, 1), 0) is None


# ------------------------------------------------------------- next terms

CREATED = at(2026, 3, 1, 9)


def base_terms(spec: PlanSpec = STARTER_TRIAL, plan_name: str = "starter") -> Terms:
    """What the objects say: `started_at` is the creation; the rest is computed."""
    return terms(spec, plan_name, started=CREATED, anchor_day=1)


def reconcile(
    prior: Terms | None,
    now: dt.datetime,
    *,
    base: Terms | None = None,
    trial_days: int | None = None,
    anchor_day: int | None = None,
    cancel: bool = False,
    coupon: CouponOffer | None = None,
) -> lifecycle.TermsUpdate:
    return next_terms(
        prior,
        base=base or base_terms(),
        requested_trial_days=trial_days,
        requested_anchor_day=anchor_day,
        cancel_at_period_end=cancel,
        coupon=coupon,
        now=now,
    )


def test_first_terms_start_a_trial_and_anchor_on_its_end() -> None:
    update = reconcile(None, CREATED)
    assert (update.terms.trial_end, update.terms.anchor_day) == (at(2026, 3, 16), 16)
    assert (update.plan_change, update.refusals) == (None, ())
    assert update.terms.cycle.trial == TRIAL


def test_first_terms_without_a_trial_or_with_an_anchor_day() -> None:
    no_trial = reconcile(None, CREATED, trial_days=0).terms
    assert (no_trial.trial_end, no_trial.anchor_day) == (None, 1)
    anchored = reconcile(None, CREATED, trial_days=0, anchor_day=31).terms
    assert anchored.anchor_day == 31
    longer = reconcile(None, CREATED, trial_days=30).terms
    assert longer.trial_end == at(2026, 4, 1)  # Mar 31 09:00, up to the next 00:00


def test_a_running_trial_can_be_extended_but_not_undone() -> None:
    prior = reconcile(None, CREATED).terms
    assert reconcile(prior, at(2026, 3, 10), trial_days=30).terms.trial_end == at(2026, 4, 1)
    # Shortened to before now, or to nothing: the days trialed stay a trial.
    assert reconcile(prior, at(2026, 3, 10), trial_days=5).terms.trial_end == at(2026, 3, 16)
    assert reconcile(prior, at(2026, 3, 10), trial_days=0).terms.trial_end == at(2026, 3, 16)
    # Shortened to a day still ahead: it ends then.
    assert reconcile(prior, at(2026, 3, 10), trial_days=10).terms.trial_end == at(2026, 3, 12)


def test_a_trial_once_over_is_kept() -> None:
    prior = reconcile(None, CREATED).terms
    assert reconcile(prior, at(2026, 4, 1), trial_days=60).terms.trial_end == at(2026, 3, 16)
    assert reconcile(prior, at(2026, 4, 1), trial_days=0).terms.trial_end == at(2026, 3, 16)
    without = reconcile(None, CREATED, trial_days=0).terms
    assert reconcile(without, at(2026, 3, 2), trial_days=14).terms.trial_end is None


def test_the_anchor_day_is_fixed_after_the_start() -> None:
    prior = reconcile(None, CREATED).terms
    update = reconcile(prior, at(2026, 4, 1), anchor_day=1)
    assert update.terms.anchor_day == 16
    (refusal,) = update.refusals
    assert "billingCycleAnchorDay stays 16" in refusal
    assert reconcile(prior, at(2026, 4, 1), anchor_day=16).refusals == ()
    assert reconcile(prior, at(2026, 4, 1)).refusals == ()


def test_a_plan_change_is_recorded() -> None:
    prior = reconcile(None, CREATED).terms
    now = at(2026, 4, 20, 8)
    update = reconcile(prior, now, base=base_terms(PRO, "pro"))
    assert update.plan_change == PlanChange(now, "starter", STARTER_TRIAL, "pro", PRO)
    assert (update.terms.plan_name, update.terms.plan) == ("pro", PRO)
    assert update.terms.plan_changes == (update.plan_change,)
    assert update.refusals == ()
    again = reconcile(update.terms, at(2026, 4, 21), base=base_terms(PRO, "pro"))
    assert again.plan_change is None
    assert again.terms.plan_changes == (update.plan_change,)


@pytest.mark.parametrize(
    ("other", "what"),
    [
        (plan("Euro", 2500, unit="2", allowance=100, currency="EUR"), "currency"),
        (plan("Yearly", 30000, unit="2", allowance=100, interval=Interval.YEAR),
         "billing interval"),
    ],
)  # fmt: skip
def test_a_plan_change_of_currency_or_interval_is_refused(other: PlanSpec, what: str) -> None:
    prior = reconcile(None, CREATED).terms
    update = reconcile(prior, at(2026, 4, 20), base=base_terms(other, "other"))
    assert update.plan_change is None
    assert (update.terms.plan_name, update.terms.plan) == ("starter", STARTER_TRIAL)
    assert update.terms.plan_changes == ()
    (refusal,) = update.refusals
    assert f"a change of {what} is refused" in refusal


def test_cross_currency_changes_never_prorate() -> None:
    euro = plan("Euro", 2500, unit="2", allowance=100, currency="EUR")
    subscription = monthly_from(
        at(2026, 1, 1), PlanChange(at(2026, 1, 11), "starter", STARTER, "euro", euro)
    )
    february = boundaries(subscription, until=at(2026, 2, 1))[1]
    kinds = [item.kind for item in draft_invoice(subscription, february, USAGE).lines]
    assert LineKind.PRORATION not in kinds


PERCENT = CouponSpec(percent_off="20", duration=CouponDuration.FOREVER)


def offer(spec: CouponSpec = PERCENT, redemptions: int = 0, name: str = "launch") -> CouponOffer:
    return CouponOffer(name, spec, redemptions)


def test_a_coupon_is_redeemed_once_and_kept() -> None:
    now = at(2026, 3, 1, 9)
    first = reconcile(None, now, coupon=offer())
    assert first.terms.coupon == CouponTerms("launch", PERCENT, now)
    later = reconcile(first.terms, at(2026, 5, 1), coupon=offer(redemptions=100))
    assert later.terms.coupon == first.terms.coupon  # redeemed already: no limit applies
    assert reconcile(first.terms, at(2026, 5, 1)).terms.coupon is None  # removed


@pytest.mark.parametrize(
    ("spec", "redemptions", "message"),
    [
        (PERCENT.model_copy(update={"max_redemptions": 3}), 3, "its maximum 3 times"),
        (PERCENT.model_copy(update={"redeem_by": at(2026, 2, 28)}), 0, "until 2026-02-28"),
        (CouponSpec(amount_off=500, currency="EUR"), 0, "takes EUR off"),
    ],
)
def test_a_coupon_refused(spec: CouponSpec, redemptions: int, message: str) -> None:
    update = reconcile(None, CREATED, coupon=offer(spec, redemptions))
    assert update.terms.coupon is None
    (refusal,) = update.refusals
    assert message in refusal


def test_a_coupon_within_its_limits() -> None:
    limited = PERCENT.model_copy(update={"max_redemptions": 3, "redeem_by": CREATED})
    assert reconcile(None, CREATED, coupon=offer(limited, 2)).terms.coupon is not None
    dollars = CouponSpec(amount_off=500, currency="USD")
    assert reconcile(None, CREATED, coupon=offer(dollars)).terms.coupon is not None


def test_cancel_at_is_computed_once_and_ended_when_reached() -> None:
    prior = reconcile(None, CREATED, trial_days=0).terms  # monthly on the 1st
    first = reconcile(prior, at(2026, 3, 20), cancel=True).terms
    assert (first.cancel_at, first.ended_at) == (at(2026, 4, 1), None)
    # Computed once: a later reconcile keeps it, even with other periods.
    kept = reconcile(replace(first, cancel_at=at(2026, 4, 2)), at(2026, 3, 25), cancel=True)
    assert kept.terms.cancel_at == at(2026, 4, 2)
    assert reconcile(first, at(2026, 4, 1), cancel=True).terms.ended_at == at(2026, 4, 1)
    ended = reconcile(first, at(2026, 4, 3, 7), cancel=True).terms
    assert (ended.ended_at, ended.end_reason) == (at(2026, 4, 1), "cancel_at_period_end")
    assert reconcile(ended, at(2026, 5, 1), cancel=False).terms == ended  # ended stays


def test_cancel_at_unset_before_it_is_reached() -> None:
    prior = reconcile(None, CREATED, trial_days=0).terms
    pending = reconcile(prior, at(2026, 3, 20), cancel=True).terms
    resumed = reconcile(pending, at(2026, 3, 25), cancel=False).terms
    assert (resumed.cancel_at, resumed.ended_at) == (None, None)
    # Unset after it was reached (before a reconcile saw it): it has ended all the same.
    late = reconcile(pending, at(2026, 4, 2), cancel=False).terms
    assert (late.cancel_at, late.ended_at) == (at(2026, 4, 1), at(2026, 4, 1))


def test_cancel_at_period_end_during_the_trial() -> None:
    prior = reconcile(None, CREATED).terms
    update = reconcile(prior, at(2026, 3, 5), cancel=True).terms
    assert (update.cancel_at, update.ended_at) == (at(2026, 3, 16), None)


def test_ended_now() -> None:
    subscription = terms()
    deleted = lifecycle.ended_now(subscription, at(2026, 4, 10, 12), "deleted")
    assert (deleted.ended_at, deleted.end_reason) == (at(2026, 4, 10, 12), "deleted")
    assert lifecycle.ended_now(deleted, at(2026, 5, 1), "deleted") == deleted
    # Deleted after a cancel_at the operator had not yet seen pass: it ended then.
    pending = replace(subscription, cancel_at=APR15)
    late = lifecycle.ended_now(pending, at(2026, 4, 20), "deleted")
    assert (late.ended_at, late.end_reason) == (APR15, "cancel_at_period_end")
    early = lifecycle.ended_now(pending, at(2026, 4, 1), "deleted")
    assert (early.ended_at, early.end_reason) == (at(2026, 4, 1), "deleted")


# --------------------------------------------------------------- discounts


def coupon_terms(spec: CouponSpec, redeemed_at: dt.datetime = MAR15) -> CouponTerms:
    return CouponTerms("launch", spec, redeemed_at)


def boundary_at(moment: dt.datetime) -> Boundary:
    return Boundary(moment, None, None, None, True, False)


@pytest.mark.parametrize(
    ("spec", "discounted_before"),
    [
        (CouponSpec(percent_off="20", duration=CouponDuration.ONCE), [True, False, False]),
        (
            CouponSpec(percent_off="20", duration=CouponDuration.REPEATING, duration_periods=3),
            [True, True, True, False, False],
        ),
        (CouponSpec(percent_off="20", duration=CouponDuration.FOREVER), [True] * 5),
    ],
)
def test_discount_for_by_duration(spec: CouponSpec, discounted_before: list[bool]) -> None:
    subscription = terms(coupon=coupon_terms(spec))
    found = [
        discount_for(subscription, boundary_at(APR15), before, "USD") is not None
        for before in range(len(discounted_before))
    ]
    assert found == discounted_before
    discount = discount_for(subscription, boundary_at(APR15), 0, "USD")
    assert discount is not None
    assert (discount.percent_off, discount.amount_off, discount.name) == (20, None, "launch")


def test_discount_for_starts_on_the_day_of_redemption() -> None:
    subscription = terms(coupon=coupon_terms(PERCENT, at(2026, 3, 15, 10, 30)))
    assert discount_for(subscription, boundary_at(MAR15), 0, "USD") is not None
    assert discount_for(subscription, boundary_at(at(2026, 3, 14)), 0, "USD") is None
    assert discount_for(terms(), boundary_at(APR15), 0, "USD") is None


def test_discount_for_an_amount_off_needs_the_invoices_currency() -> None:
    spec = CouponSpec(amount_off=500, currency="USD", display_name="Five off")
    subscription = terms(coupon=coupon_terms(spec))
    discount = discount_for(subscription, boundary_at(APR15), 0, "USD")
    assert discount is not None
    assert (discount.name, discount.amount_off, discount.percent_off) == ("Five off", 500, None)
    assert discount_for(subscription, boundary_at(APR15), 0, "EUR") is None


def test_reverse_charge_needs_a_tax_id_in_another_country() -> None:
    def buyer(country: str | None, tax_id: str) -> Party:
        return Party(name="Acme", country=country, tax_id=tax_id)

    assert lifecycle.reverse_charged(buyer("DE", "DE123456789"), "FR")
    assert not lifecycle.reverse_charged(buyer("FR", "FR12345678901"), "FR")
    assert not lifecycle.reverse_charged(buyer("DE", ""), "FR")
    assert not lifecycle.reverse_charged(buyer(None, "DE123456789"), "FR")
    assert not lifecycle.reverse_charged(buyer("DE", "DE123456789"), None)


# ------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 3 * 366 * DAY),
    anchor=st.integers(1, 31),
    moment=st.integers(0, 400 * DAY),
    old=st.integers(0, 10**8),
    new=st.integers(0, 10**8),
)
def test_prorated_credit_and_charge(
    start: int, anchor: int, moment: int, old: int, new: int
) -> None:
    started = at(2026, 1, 1) + dt.timedelta(seconds=start)
    changed_at = started + dt.timedelta(seconds=moment)
    old_plan = STARTER.model_copy(update={"price": Price(amount=old, currency="USD")})
    new_plan = STARTER.model_copy(update={"price": Price(amount=new, currency="USD")})
    subscription = terms(started=started, anchor_day=anchor)
    lines = proration_lines(subscription, PlanChange(changed_at, "a", old_plan, "b", new_plan))
    same = proration_lines(subscription, PlanChange(changed_at, "a", old_plan, "a2", old_plan))
    if not lines:
        assert changed_at == subscription.cycle.period_at(changed_at).start
        return
    credit, charge = lines
    assert 0 <= -credit.amount <= old
    assert 0 <= charge.amount <= new
    assert abs(sum(item.amount for item in same)) <= 2  # within rounding of 1 per line
    assert sum(item.amount for item in same) == 0  # the same rounding mirrored exactly
    assert Fraction(same[0].unrounded) + Fraction(same[1].unrounded) == 0
    current = subscription.cycle.period_at(changed_at)
    fraction = Fraction(
        (current.end - changed_at) // dt.timedelta(seconds=1),
        (current.end - current.start) // dt.timedelta(seconds=1),
    )
    assert abs(credit.amount + charge.amount - (new - old) * fraction) <= 1
    assert charge.amount == round_half_up(new * fraction)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Terms, dt.datetime, bool]:
    started = at(2027, 1, 1) + dt.timedelta(seconds=draw(st.integers(0, 2 * 366 * DAY)))
    usage = draw(st.sampled_from(list(TrialUsage)))
    cheap = plan("Cheap", draw(st.integers(0, 10**6)), unit="3", allowance=10, trial_usage=usage)
    dear = plan("Dear", draw(st.integers(0, 10**6)), unit="0.5", allowance=0, trial_usage=usage)
    trial = lifecycle.trial_end(started, draw(st.integers(0, 40)))
    anchor = lifecycle.default_anchor_day(draw(st.none() | st.integers(1, 31)), started, trial)
    subscription = terms(cheap, "cheap", started=started, anchor_day=anchor, trial_end=trial)
    moments = st.integers(0, 200 * DAY).map(lambda s: started + dt.timedelta(seconds=s))
    if draw(st.booleans()):
        subscription = changed(
            subscription, PlanChange(draw(moments), "cheap", cheap, "dear", dear)
        )
    match draw(st.sampled_from(["none", "deleted", "period_end"])):
        case "deleted":
            subscription = replace(subscription, ended_at=draw(moments), end_reason="deleted")
        case "period_end":
            ends = lifecycle.cancel_at(subscription, draw(moments))
            subscription = replace(subscription, cancel_at=ends, ended_at=ends)
    return subscription, started + dt.timedelta(days=300), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(0, 10**6))
def test_boundaries_and_drafts_hold_together(
    scenario: tuple[Terms, dt.datetime, bool], calls: int
) -> None:
    subscription, until, credit = scenario
    found = boundaries(subscription, until)
    assert found, "a subscription is invoiced at least once in 300 days"
    assert [b.at for b in found] == sorted({b.at for b in found})
    assert [b.previous for b in found[1:]] == [b.at for b in found[:-1]]
    assert found[0].previous is None
    for before, after in itertools.pairwise(found):
        assert before.base_period is not None
        assert before.base_period.start == before.at
        assert after.usage_period == before.base_period
        if not after.final:
            assert after.at == before.base_period.end
    end = subscription.ended_at
    assert [b.final for b in found] == [end is not None and b.at == end for b in found]
    for boundary in found:
        draft = draft_invoice(
            subscription, boundary, {"api_calls": calls}, credit_unused_on_cancel=credit
        )
        for item in draft.lines:
            assert item.amount == round_minor(item.unrounded)
            if item.kind in (LineKind.BASE, LineKind.METERED):
                assert item.amount >= 0
            elif item.kind == LineKind.CANCEL_CREDIT:
                assert item.amount <= 0
                assert boundary.final
            if item.amount < 0:  # only a credit for unused time is negative
                assert item.kind in (LineKind.PRORATION, LineKind.CANCEL_CREDIT)
                assert item.description.startswith("Unused time")
        base_lines = [item for item in draft.lines if item.kind == LineKind.BASE]
        assert len(base_lines) == (0 if boundary.final else 1)
        result = totals(draft.lines)
        assert result.subtotal == sum(item.amount for item in draft.lines)
        assert result.total == result.subtotal
