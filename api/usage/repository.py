"""All SQL of usage: events, hourly rollups, distinct values, period totals, counter locks.

Tenants are named by their uid; periods by their `[start, end)`, which the
caller computes from the tenant's billing cycle (`core/periods.py`).
"""

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

from tenantry.api.usage.schemas import UsageEvent
from tenantry.core.periods import Period, period_key
from tenantry.core.resources import Aggregation, Metric
from tenantry.core.usage import HourlyTotals

_EVENTS = TypeAdapter(list[UsageEvent])


@dataclass(frozen=True)
class Submission:
    """A request's events of one billing period for one tenant, with its plan's metrics.

    A request whose events fall in two periods is two submissions with the
    same `request` number.
    """

    request: int
    tenant: str  # the Tenant's uid
    period: Period
    events: Sequence[UsageEvent]
    metrics: Sequence[Metric]


@dataclass(frozen=True)
class CounterDelta:
    """How one quota counter moved with the events just inserted."""

    tenant: str
    metric: str
    period_start: dt.datetime
    aggregation: Aggregation
    value: int  # added (count, sum, unique_count), or candidate (max, latest)
    latest_ms: int  # newest event's time, for latest


@dataclass(frozen=True)
class Inserted:
    accepted: dict[int, int]  # per request number: events new to the tenant
    deltas: list[CounterDelta]


def counter_lock_id(tenant: str, metric: str, period_start: dt.datetime) -> int:
    """The advisory lock guarding one quota counter (a signed 64-bit number)."""
    name = f"{tenant}\0{metric}\0{period_key(period_start)}"
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
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
    SELECT s.tenant, s.request, s.period_start, e.transaction_id, e.metric, e.value,
           e."timestamp" AS ts,
           coalesce(e.properties, '{}') AS properties, m.aggregation,
           CASE WHEN m.aggregation = 'unique_count'
                THEN e.properties ->> m.field END AS unique_value
    FROM jsonb_to_recordset(CAST(:submissions AS jsonb))
         AS s(tenant text, request int, period_start timestamptz, events jsonb)
    CROSS JOIN LATERAL jsonb_to_recordset(s.events)
         AS e(transaction_id text, metric text, value bigint, "timestamp" timestamptz,
              properties jsonb)
    JOIN metric m ON m.tenant = s.tenant AND m.metric = e.metric
    WHERE (SELECT taken FROM locks) >= 0  -- evaluated once, before the first row
),
inserted AS (
    -- In key order, so two racing writes lock rows in the same order.
    INSERT INTO usage_events (tenant_uid, transaction_id, metric, value, ts, properties)
    SELECT tenant, transaction_id, metric, value, ts, properties FROM input
    ORDER BY tenant, transaction_id
    ON CONFLICT (tenant_uid, transaction_id) DO NOTHING
    RETURNING tenant_uid AS tenant, transaction_id
),
new AS (
    -- Periods start at whole UTC days: an hour never straddles two.
    SELECT i.*, date_trunc('hour', i.ts, 'UTC') AS hour
    FROM input i JOIN inserted USING (tenant, transaction_id)
),
uniques AS (
    -- Each distinct value of a unique_count metric here, with the hour it first shows in.
    SELECT tenant, metric, period_start, unique_value, min(hour) AS hour
    FROM new WHERE aggregation = 'unique_count'
    GROUP BY tenant, metric, period_start, unique_value
),
first_seen AS (
    INSERT INTO usage_distinct (tenant_uid, metric, period_start, value)
    SELECT tenant, metric, period_start, unique_value FROM uniques
    ORDER BY tenant, metric, period_start, unique_value
    ON CONFLICT DO NOTHING
    RETURNING tenant_uid AS tenant, metric, period_start, value
),
firsts AS (
    -- Values new to their period: each counts once, in the hour it first showed in.
    SELECT u.tenant, u.metric, u.hour, count(*) AS n
    FROM first_seen f
    JOIN uniques u ON u.tenant = f.tenant AND u.metric = f.metric
                  AND u.period_start = f.period_start
                  AND u.unique_value = f.value
    GROUP BY u.tenant, u.metric, u.hour
),
rollup AS (
    SELECT tenant, metric, period_start, hour, aggregation,
           CASE aggregation
               WHEN 'count' THEN count(*)
               WHEN 'sum' THEN sum(value)
               WHEN 'max' THEN max(value)
               WHEN 'latest' THEN (array_agg(value ORDER BY ts DESC))[1]
               ELSE 0
           END::bigint AS value,
           count(*) AS events, max(ts) AS latest_at
    FROM new GROUP BY tenant, metric, period_start, hour, aggregation
),
hours AS (
    SELECT r.tenant, r.metric, r.period_start, r.hour, r.aggregation,
           r.value + coalesce(f.n, 0) AS value, r.events, r.latest_at
    FROM rollup r
    LEFT JOIN firsts f ON f.tenant = r.tenant AND f.metric = r.metric AND f.hour = r.hour
),
hourly AS (
    INSERT INTO usage_hourly AS h (tenant_uid, metric, hour, aggregation, value, events,
                                   latest_at)
    SELECT tenant, metric, hour, aggregation, value, events, latest_at
    FROM hours ORDER BY tenant, metric, hour
    ON CONFLICT (tenant_uid, metric, hour) DO UPDATE SET
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
    SELECT tenant, metric, period_start, aggregation,
           CASE aggregation
               WHEN 'max' THEN max(value)
               WHEN 'latest' THEN (array_agg(value ORDER BY latest_at DESC))[1]
               ELSE sum(value)
           END::bigint AS value,
           (extract(epoch FROM max(latest_at)) * 1000)::bigint AS latest_ms
    FROM hours GROUP BY tenant, metric, period_start, aggregation
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
    for submission in submissions:
        tenant = json.dumps(submission.tenant).encode()
        start = submission.period.start.isoformat().encode()
        events = _EVENTS.dump_json(list(submission.events))
        parts.append(
            b'{"tenant":%s,"request":%d,"period_start":"%s","events":%s}'
            % (tenant, submission.request, start, events)
        )
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
        accepted={int(request): int(n) for request, n in accepted.items()},
        deltas=[
            CounterDelta(
                tenant=d["tenant"],
                metric=d["metric"],
                period_start=dt.datetime.fromisoformat(d["period_start"]),
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
    WHERE tenant_uid = :tenant AND hour >= :start AND hour < :end
"""
_TOTALS_ALL = text(_TOTALS + " GROUP BY metric, aggregation")
_TOTALS_SOME = text(
    _TOTALS + " AND metric = ANY(CAST(:metrics AS text[])) GROUP BY metric, aggregation"
)


async def period_totals(
    conn: AsyncConnection, tenant: str, period: Period, metrics: Sequence[str] | None = None
) -> list[HourlyTotals]:
    """Each metric's hourly rows of the period folded (all metrics, or those named)."""
    params: dict[str, Any] = {"tenant": tenant, "start": period.start, "end": period.end}
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
    conn: AsyncConnection, tenant: str, period: Period
) -> list[tuple[str, dt.datetime, int, int]]:
    """(metric, hour, value, events) of a period, oldest first."""
    rows = await conn.execute(
        text(
            "SELECT metric, hour, value, events FROM usage_hourly"
            " WHERE tenant_uid = :tenant AND hour >= :start AND hour < :end"
            " ORDER BY metric, hour"
        ),
        {"tenant": tenant, "start": period.start, "end": period.end},
    )
    return [(r.metric, r.hour, r.value, r.events) for r in rows]
