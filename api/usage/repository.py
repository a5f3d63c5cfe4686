"""All SQL of usage: events, hourly rollups, distinct values, period totals, counter locks."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.api.usage.periods import HourlyTotals, period_bounds
from tenantry.api.usage.schemas import UsageEvent
from tenantry.core.resources import Aggregation, Metric

_EVENTS = TypeAdapter(list[UsageEvent])


@dataclass(frozen=True)
class Submission:
    """One request's events for one tenant, with the metrics of the tenant's plan."""

    tenant: str
    events: Sequence[UsageEvent]
    metrics: Sequence[Metric]


@dataclass(frozen=True)
class CounterDelta:
    """How one quota counter moved with the events just inserted."""

    tenant: str
    metric: str
    period: str
    aggregation: Aggregation
    value: int  # added (count, sum, unique_count), or candidate (max, latest)
    latest_ms: int  # newest event's time, for latest


@dataclass(frozen=True)
class Inserted:
    accepted: list[int]  # per submission: events new to the tenant
    deltas: list[CounterDelta]


def counter_lock_id(tenant: str, metric: str, period: str) -> int:
    """The advisory lock guarding one quota counter (a signed 64-bit number)."""
    digest = hashlib.blake2b(f"{tenant}\0{metric}\0{period}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_counter(conn: AsyncConnection, lock_id: int) -> None:
    """Exclusive: waits for in-flight writers of this counter, and holds off new ones."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})


_INSERT = text("""
WITH locks AS MATERIALIZED (
    -- The counters' shared locks (held until commit, so a rebuild sees all of this
    -- write or none of it), taken first and in one order: no deadlock with a rebuild.
    SELECT count(pg_advisory_xact_lock_shared(k)) AS taken
    FROM unnest(CAST(:locks AS bigint[])) AS k
),
metric AS (
    SELECT * FROM jsonb_to_recordset(CAST(:metrics AS jsonb))
                  AS m(tenant text, metric text, aggregation text, field text)
),
input AS (
    SELECT s.tenant, s.request, e.transaction_id, e.metric, e.value, e."timestamp" AS ts,
           coalesce(e.properties, '{}') AS properties, m.aggregation,
           CASE WHEN m.aggregation = 'unique_count'
                THEN e.properties ->> m.field END AS unique_value
    FROM jsonb_to_recordset(CAST(:submissions AS jsonb))
         AS s(tenant text, request int, events jsonb)
    CROSS JOIN LATERAL jsonb_to_recordset(s.events)
         AS e(transaction_id text, metric text, value bigint, "timestamp" timestamptz,
              properties jsonb)
    JOIN metric m ON m.tenant = s.tenant AND m.metric = e.metric
    WHERE (SELECT taken FROM locks) >= 0  -- evaluated once, before the first row
),
inserted AS (
    -- In key order, so two racing writes lock rows in the same order.
    INSERT INTO usage_events (tenant, transaction_id, metric, value, ts, properties)
    SELECT tenant, transaction_id, metric, value, ts, properties FROM input
    ORDER BY tenant, transaction_id
    ON CONFLICT (tenant, transaction_id) DO NOTHING
    RETURNING tenant, transaction_id
),
new AS (
    SELECT i.*, date_trunc('month', i.ts, 'UTC') AS month, date_trunc('hour', i.ts, 'UTC') AS hour
    FROM input i JOIN inserted USING (tenant, transaction_id)
),
uniques AS (
    -- Each distinct value of a unique_count metric here, with the hour it first shows in.
    SELECT tenant, metric, month, to_char(month AT TIME ZONE 'UTC', 'YYYY-MM') AS period,
           unique_value, min(hour) AS hour
    FROM new WHERE aggregation = 'unique_count'
    GROUP BY tenant, metric, month, unique_value
),
first_seen AS (
    INSERT INTO usage_distinct (tenant, metric, period, value)
    SELECT tenant, metric, period, unique_value FROM uniques
    ORDER BY tenant, metric, period, unique_value
    ON CONFLICT DO NOTHING
    RETURNING tenant, metric, period, value
),
firsts AS (
    -- Values new to their period: each counts once, in the hour it first showed in.
    SELECT u.tenant, u.metric, u.hour, count(*) AS n
    FROM first_seen f
    JOIN uniques u ON u.tenant = f.tenant AND u.metric = f.metric AND u.period = f.period
                  AND u.unique_value = f.value
    GROUP BY u.tenant, u.metric, u.hour
),
rollup AS (
    SELECT tenant, metric, month, hour, aggregation,
           CASE aggregation
               WHEN 'count' THEN count(*)
               WHEN 'sum' THEN sum(value)
               WHEN 'max' THEN max(value)
               WHEN 'latest' THEN (array_agg(value ORDER BY ts DESC))[1]
               ELSE 0
           END::bigint AS value,
           count(*) AS events, max(ts) AS latest_at
    FROM new GROUP BY tenant, metric, month, hour, aggregation
),
hours AS (
    SELECT r.tenant, r.metric, r.month, r.hour, r.aggregation,
           r.value + coalesce(f.n, 0) AS value, r.events, r.latest_at
    FROM rollup r
    LEFT JOIN firsts f ON f.tenant = r.tenant AND f.metric = r.metric AND f.hour = r.hour
),
hourly AS (
    INSERT INTO usage_hourly AS h (tenant, metric, hour, aggregation, value, events, latest_at)
    SELECT tenant, metric, hour, aggregation, value, events, latest_at
    FROM hours ORDER BY tenant, metric, hour
    ON CONFLICT (tenant, metric, hour) DO UPDATE SET
        value = CASE h.aggregation
            WHEN 'max' THEN greatest(h.value, excluded.value)
            WHEN 'latest' THEN CASE WHEN excluded.latest_at >= h.latest_at
                                    THEN excluded.value ELSE h.value END
            ELSE h.value + excluded.value
        END,
        events = h.events + excluded.events,
        latest_at = greatest(h.latest_at, excluded.latest_at)
),
moved AS (
    -- How each counter moves: the hours of a period folded like the period's figure.
    SELECT tenant, metric, to_char(month AT TIME ZONE 'UTC', 'YYYY-MM') AS period, aggregation,
           CASE aggregation
               WHEN 'max' THEN max(value)
               WHEN 'latest' THEN (array_agg(value ORDER BY latest_at DESC))[1]
               ELSE sum(value)
           END::bigint AS value,
           (extract(epoch FROM max(latest_at)) * 1000)::bigint AS latest_ms
    FROM hours GROUP BY tenant, metric, month, aggregation
)
SELECT (SELECT json_object_agg(request, n)
        FROM (SELECT request, count(*) AS n FROM new GROUP BY request) AS a) AS accepted,
       (SELECT json_agg(moved) FROM moved) AS moved
""")


async def insert_events(
    conn: AsyncConnection, submissions: Sequence[Submission], lock_ids: Sequence[int]
) -> Inserted:
    """Insert events not seen before, roll them into the hourly table; say what moved.

    Events whose transaction id their tenant already used are skipped (replays),
    also when another transaction inserts the same id at the same moment: the
    unique index makes the later one wait and then skip. Transaction ids must be
    unique across the submissions. `lock_ids` are the counters' locks
    (`counter_lock_id`) of the tenants, metrics and periods the events touch.
    """
    parts, metrics, seen = [], [], set()
    for request, submission in enumerate(submissions):
        tenant = json.dumps(submission.tenant).encode()
        events = _EVENTS.dump_json(list(submission.events))
        parts.append(b'{"tenant":%s,"request":%d,"events":%s}' % (tenant, request, events))
        for m in submission.metrics:
            if (submission.tenant, m.name) not in seen:
                seen.add((submission.tenant, m.name))
                metrics.append({"tenant": submission.tenant, "metric": m.name,
                                "aggregation": m.aggregation.value, "field": m.field})  # fmt: skip
    row = (
        await conn.execute(
            _INSERT,
            {
                "locks": sorted(set(lock_ids)),
                "submissions": (b"[" + b",".join(parts) + b"]").decode(),
                "metrics": json.dumps(metrics),
            },
        )
    ).one()
    accepted = row.accepted or {}
    return Inserted(
        accepted=[int(accepted.get(str(i), 0)) for i in range(len(submissions))],
        deltas=[
            CounterDelta(
                tenant=d["tenant"],
                metric=d["metric"],
                period=d["period"],
                aggregation=Aggregation(d["aggregation"]),
                value=int(d["value"]),
                latest_ms=int(d["latest_ms"]),
            )
            for d in row.moved or ()
        ],
    )


_TOTALS = """
    SELECT metric, aggregation, sum(value)::bigint AS total, max(value) AS maximum,
           (array_agg(value ORDER BY latest_at DESC))[1] AS latest, max(latest_at) AS latest_at
    FROM usage_hourly
    WHERE tenant = :tenant AND hour >= :start AND hour < :end
"""
_TOTALS_ALL = text(_TOTALS + " GROUP BY metric, aggregation")
_TOTALS_SOME = text(
    _TOTALS + " AND metric = ANY(CAST(:metrics AS text[])) GROUP BY metric, aggregation"
)


async def period_totals(
    conn: AsyncConnection, tenant: str, period: str, metrics: Sequence[str] | None = None
) -> list[HourlyTotals]:
    """Each metric's hourly rows of the period folded (all metrics, or those named)."""
    start, end = period_bounds(period)
    params: dict[str, Any] = {"tenant": tenant, "start": start, "end": end}
    if metrics is not None:
        params["metrics"] = list(metrics)
    rows = await conn.execute(_TOTALS_ALL if metrics is None else _TOTALS_SOME, params)
    return [
        HourlyTotals(
            metric=r.metric,
            aggregation=Aggregation(r.aggregation),
            total=r.total,
            maximum=r.maximum,
            latest=r.latest,
            latest_at=r.latest_at,
        )
        for r in rows
    ]


async def hourly(
    conn: AsyncConnection, tenant: str, period: str
) -> list[tuple[str, dt.datetime, int, int]]:
    """(metric, hour, value, events) of a period, oldest first."""
    start, end = period_bounds(period)
    rows = await conn.execute(
        text(
            "SELECT metric, hour, value, events FROM usage_hourly"
            " WHERE tenant = :tenant AND hour >= :start AND hour < :end ORDER BY metric, hour"
        ),
        {"tenant": tenant, "start": start, "end": end},
    )
    return [(r.metric, r.hour, r.value, r.events) for r in rows]
