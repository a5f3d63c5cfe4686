"""Billing periods: the `[start, end)` windows usage, quotas and invoices are counted in.

A subscription's periods repeat every interval (a month or a year, from its
Plan) at 00:00 UTC on its anchor day. A month that lacks the anchor day (the
31st in April, the 29th to 31st in February) uses its last day, as Stripe
does, and the next month returns to the anchor day. Yearly periods fall in
the month the subscription started.

A trial is one period of its own, from its first day to the first paid
period's start (`BillingCycle.trial`). The subscription's (or the first paid
period's) start day is a boundary too: the first period runs from the
start to the first anchor date after it (a short first period, when the
anchor day is not the start's day). Boundaries are whole UTC days, so the
hourly rollups of usage never straddle two periods.

A Tenant without a Subscription counts in calendar months (`CALENDAR_MONTHS`).
Pure: no I/O, only the standard library.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from dataclasses import dataclass
from enum import StrEnum


class Interval(StrEnum):
    MONTH = "month"
    YEAR = "year"


@dataclass(frozen=True, order=True)
class Period:
    """One billing period, `[start, end)` in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __contains__(self, moment: dt.datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def key(self) -> str:
        """A compact, sortable name for the period, e.g. `20261115T0000Z` (its start)."""
        return period_key(self.start)

    def label(self) -> str:
        """The period as an ISO 8601 interval, for messages and string fields."""
        return f"{_iso(self.start)}/{_iso(self.end)}"


def period_key(start: dt.datetime) -> str:
    """The compact name of the period starting at `start`, e.g. `20261115T0000Z`."""
    return f"{start.astimezone(dt.UTC):%Y%m%dT%H%MZ}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)  # billing runs ask for the same few dates thousands of times
def _anchor_date(year: int, month: int, day: int) -> dt.datetime:
    """00:00 UTC on `day` of the month, or on its last day when it is shorter."""
    last = calendar.monthrange(year, month)[1]
    return dt.datetime(year, month, min(day, last), tzinfo=dt.UTC)


def _day_of(moment: dt.datetime) -> dt.datetime:
    utc = moment.astimezone(dt.UTC)
    return dt.datetime(utc.year, utc.month, utc.day, tzinfo=dt.UTC)


@dataclass(frozen=True)
class BillingCycle:
    """How a subscription's periods fall.

    `start` is when the subscription began (its day is a boundary);
    `anchor_day` (1 to 31) is the day of the month periods start on;
    `interval` is the Plan's. Yearly periods start in `start`'s month.
    """

    start: dt.datetime
    interval: Interval = Interval.MONTH
    anchor_day: int = 1
    trial_start: dt.datetime | None = None  # a trial before `start` is one period of its own

    def __post_init__(self) -> None:
        if not 1 <= self.anchor_day <= 31:
            raise ValueError(f"anchor_day must be 1 to 31, not {self.anchor_day}")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone (UTC)")

    @property
    def first_day(self) -> dt.datetime:
        return _day_of(self.start)

    def _boundary(self, index: int) -> dt.datetime:
        """The anchor date `index` intervals after the one in the start's month (or year)."""
        origin = self.first_day
        if self.interval == Interval.YEAR:
            return _anchor_date(origin.year + index, origin.month, self.anchor_day)
        months = origin.year * 12 + (origin.month - 1) + index
        return _anchor_date(months // 12, months % 12 + 1, self.anchor_day)

    def _index_at(self, moment: dt.datetime) -> int:
        """The index of the last anchor date at or before `moment`."""
        origin, utc = self.first_day, moment.astimezone(dt.UTC)
        if self.interval == Interval.YEAR:
            index = utc.year - origin.year
        else:
            index = (utc.year - origin.year) * 12 + (utc.month - origin.month)
        # The estimate is off by at most one: the anchor date may still be ahead.
        while self._boundary(index) > utc:
            index -= 1
        while self._boundary(index + 1) <= utc:
            index += 1
        return index

    @property
    def trial(self) -> Period | None:
        """The trial, `[its first day, start)`, when there is one."""
        if self.trial_start is None or _day_of(self.trial_start) >= self.first_day:
            return None
        return Period(_day_of(self.trial_start), self.first_day)

    def period_at(self, moment: dt.datetime) -> Period:
        """The period that holds `moment`: the trial, or a regular one (before the start:
        the regular one, cut at it)."""
        trial = self.trial
        if trial is not None and trial.start <= moment < trial.end:
            return trial
        index = self._index_at(moment)
        start, end = self._boundary(index), self._boundary(index + 1)
        first = self.first_day
        if start < first <= moment:
            start = first  # the short first period, from the start day
        elif moment < first < end:
            end = first  # before the subscription began: cut at its first day
        return Period(start, end)

    def periods_between(self, since: dt.datetime, until: dt.datetime) -> list[Period]:
        """Every period that holds a moment of `[since, until]`, oldest first."""
        periods = [self.period_at(since)]
        while periods[-1].end <= until:
            periods.append(self.period_at(periods[-1].end))
        return periods


CALENDAR_MONTHS = BillingCycle(start=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
"""Calendar months in UTC: the periods of a Tenant without a Subscription."""
