"""The SQL only the dashboard reads: billing runs and Stripe events, newest first."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class RunRow:
    id: int
    scope: str
    trigger: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    state: str
    subscriptions: int
    drafted: int
    finalized: int
    error: str | None


@dataclass(frozen=True)
class StripeEventRow:
    id: str
    type: str
    created: dt.datetime
    state: str
    attempts: int
    deliveries: int
    error: str | None


async def billing_runs(conn: AsyncConnection, limit: int) -> list[RunRow]:
    rows = await conn.execute(
        text(
            "SELECT id, scope, trigger, started_at, finished_at, state, subscriptions, drafted,"
            " finalized, error FROM billing_runs ORDER BY started_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [RunRow(**r._asdict()) for r in rows]


async def stripe_events(conn: AsyncConnection, limit: int) -> list[StripeEventRow]:
    rows = await conn.execute(
        text(
            "SELECT id, type, created, state, attempts, deliveries, error FROM stripe_events"
            " ORDER BY received_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [StripeEventRow(**r._asdict()) for r in rows]
