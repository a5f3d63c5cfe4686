"""Billing periods from a subscription's start, interval and anchor day."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from tenantry.core.periods import CALENDAR_MONTHS, BillingCycle, Interval, Period


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def period(a: tuple[int, int, int], b: tuple[int, int, int]) -> Period:
    return Period(at(*a), at(*b))


def test_anchor_day_1_is_calendar_months_after_a_short_first_period() -> None:
    cycle = BillingCycle(start=at(2026, 11, 20, 9, 30), anchor_day=1)
    assert cycle.period_at(at(2026, 11, 20, 9, 30)) == period((2026, 11, 20), (2026, 12, 1))
    assert cycle.period_at(at(2026, 12, 1)) == period((2026, 12, 1), (2027, 1, 1))
    assert cycle.period_at(at(2027, 1, 31, 23, 59)) == period((2027, 1, 1), (2027, 2, 1))


def test_anchor_day_15() -> None:
    cycle = BillingCycle(start=at(2026, 3, 15, 12), anchor_day=15)
    assert cycle.period_at(at(2026, 3, 15, 12)) == period((2026, 3, 15), (2026, 4, 15))
    assert cycle.period_at(at(2026, 4, 14, 23, 59)) == period((2026, 3, 15), (2026, 4, 15))
    assert cycle.period_at(at(2026, 4, 15)) == period((2026, 4, 15), (2026, 5, 15))
    assert cycle.period_at(at(2026, 12, 31)) == period((2026, 12, 15), (2027, 1, 15))


def test_anchor_day_28_exists_in_every_month() -> None:
    cycle = BillingCycle(start=at(2026, 1, 28), anchor_day=28)
    starts = [p.start for p in cycle.periods_between(at(2026, 1, 28), at(2026, 12, 28))]
    assert starts == [at(2026, month, 28) for month in range(1, 13)]


def test_anchor_day_31_uses_the_last_day_of_shorter_months_and_comes_back() -> None:
    cycle = BillingCycle(start=at(2027, 1, 31), anchor_day=31)
    assert cycle.period_at(at(2027, 2, 10)) == period((2027, 1, 31), (2027, 2, 28))
    assert cycle.period_at(at(2027, 2, 28)) == period((2027, 2, 28), (2027, 3, 31))
    assert cycle.period_at(at(2027, 4, 30)) == period((2027, 4, 30), (2027, 5, 31))


def test_anchor_day_31_in_a_leap_february() -> None:
    cycle = BillingCycle(start=at(2028, 1, 31), anchor_day=31)
    assert cycle.period_at(at(2028, 2, 28)) == period((2028, 1, 31), (2028, 2, 29))
    assert cycle.period_at(at(2028, 2, 29)) == period((2028, 2, 29), (2028, 3, 31))


def test_anchor_day_29_to_30_in_february() -> None:
    cycle = BillingCycle(start=at(2026, 1, 30), anchor_day=30)
    assert cycle.period_at(at(2026, 2, 28)) == period((2026, 2, 28), (2026, 3, 30))
    assert cycle.period_at(at(2026, 2, 27)) == period((2026, 1, 30), (2026, 2, 28))


def test_start_after_the_anchor_day_runs_to_next_months_anchor() -> None:
    cycle = BillingCycle(start=at(2026, 11, 20), anchor_day=5)
    assert cycle.period_at(at(2026, 11, 25)) == period((2026, 11, 20), (2026, 12, 5))
    assert cycle.period_at(at(2026, 12, 5)) == period((2026, 12, 5), (2027, 1, 5))


def test_moments_before_the_start_fall_in_periods_cut_at_it() -> None:
    cycle = BillingCycle(start=at(2026, 11, 20, 8), anchor_day=1)
    assert cycle.period_at(at(2026, 11, 19)) == period((2026, 11, 1), (2026, 11, 20))
    assert cycle.period_at(at(2026, 10, 3)) == period((2026, 10, 1), (2026, 11, 1))


def test_yearly_plans_repeat_in_the_start_month() -> None:
    cycle = BillingCycle(start=at(2026, 3, 20), interval=Interval.YEAR, anchor_day=15)
    assert cycle.period_at(at(2026, 6, 1)) == period((2026, 3, 20), (2027, 3, 15))
    assert cycle.period_at(at(2027, 3, 15)) == period((2027, 3, 15), (2028, 3, 15))


def test_yearly_from_a_leap_day() -> None:
    cycle = BillingCycle(start=at(2028, 2, 29), interval=Interval.YEAR, anchor_day=29)
    assert cycle.period_at(at(2028, 12, 1)) == period((2028, 2, 29), (2029, 2, 28))
    assert cycle.period_at(at(2031, 6, 1)) == period((2031, 2, 28), (2032, 2, 29))


def test_calendar_months_for_tenants_without_a_subscription() -> None:
    assert CALENDAR_MONTHS.period_at(at(2026, 12, 31, 23, 59)) == period(
        (2026, 12, 1), (2027, 1, 1)
    )
    assert CALENDAR_MONTHS.period_at(at(2028, 2, 29, 12)) == period((2028, 2, 1), (2028, 3, 1))


def test_periods_partition_time() -> None:
    cycle = BillingCycle(start=at(2026, 5, 17, 13), anchor_day=31)
    periods = cycle.periods_between(at(2026, 4, 1), at(2027, 6, 1))
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start
    moment = at(2026, 4, 1)
    while moment < at(2027, 6, 1):
        assert moment in cycle.period_at(moment)
        moment += dt.timedelta(hours=7)


def test_period_names() -> None:
    p = period((2026, 11, 15), (2026, 12, 15))
    assert p.key == "20261115T0000Z"
    assert p.label() == "2026-11-15T00:00:00Z/2026-12-15T00:00:00Z"


def test_anchor_day_is_checked() -> None:
    with pytest.raises(ValueError, match="1 to 31"):
        BillingCycle(start=at(2026, 1, 1), anchor_day=32)
