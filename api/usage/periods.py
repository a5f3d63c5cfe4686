"""Billing periods as quotas see them: calendar months in UTC, named `YYYY-MM`. Pure."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tenantry.core.resources import Aggregation

PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


_NAMES: dict[tuple[int, int], str] = {}
_ZERO = dt.timedelta(0)


def period_of(moment: dt.datetime) -> str:
    # Runs for every event: skip the conversion for UTC times, reuse the names.
    utc = moment if moment.utcoffset() == _ZERO else moment.astimezone(dt.UTC)
    key = (utc.year, utc.month)
    name = _NAMES.get(key)
    if name is None:
        name = _NAMES[key] = f"{key[0]:04d}-{key[1]:02d}"
    return name


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a `YYYY-MM` period, in UTC."""
    year, month = int(period[:4]), int(period[5:7])
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


@dataclass(frozen=True)
class HourlyTotals:
    """One metric's hourly rows of a period, folded: what each aggregation needs."""

    metric: str
    aggregation: Aggregation
    total: int  # sum of the hourly values
    maximum: int  # largest hourly value
    latest: int  # value of the newest hour's newest event
    latest_at: dt.datetime


def period_value(totals: HourlyTotals) -> int:
    """A metric's figure for the period, by its aggregation.

    count, sum and unique_count hours add up (a unique_count hour holds the
    values first seen in the period during it); max takes the largest hour;
    latest takes the newest event's value.
    """
    if totals.aggregation == Aggregation.MAX:
        return totals.maximum
    if totals.aggregation == Aggregation.LATEST:
        return totals.latest
    return totals.total


def period_values(rows: Iterable[HourlyTotals]) -> dict[str, int]:
    return {row.metric: period_value(row) for row in rows}
