"""A metric's figure for a billing period, folded from its hourly rollups. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from tenantry.core.resources import Aggregation


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
