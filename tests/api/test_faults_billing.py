"""A billing run killed halfway (the API process, SIGKILL), then run again by another:
every invoice exactly once, and no gap in the numbers.

The API runs against a PostgreSQL of this test's own, holding thousands of
subscriptions stored as the operator stores them, so the run is long enough to
be killed in the middle and no other test's subscriptions are billed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from api_harness import ApiServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import Clock
from testbed import Postgres

from tenantry.core.resources import PlanSpec
from tenantry.db import migrations
from tenantry.db.engine import create_engine

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

SUBSCRIPTIONS = 3000
PLAN = PlanSpec.model_validate(
    {
        "displayName": "Faults",
        "price": {"amount": 4900, "currency": "EUR", "interval": "month"},
        "metrics": [{"name": "api_calls", "aggregation": "sum"}],
        "meteredPrices": [
            {"metric": "api_calls", "model": "per_unit", "unitAmount": "0.5", "allowance": 100}
        ],
    }
)


@pytest.fixture
async def own_database(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    server = Postgres(tmp_path / "postgres").start()
    engine = create_engine(server.url, pool_size=2)
    try:
        await migrations.migrate(engine)
        yield server.url, engine
    finally:
        await engine.dispose()
        server.stop()


async def seed(engine: AsyncEngine, started: dt.datetime) -> None:
    """Monthly subscriptions begun `started`, with a day of usage each in their first period."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO subscriptions (uid, namespace, name, tenant_uid, tenant_name,"
                " plan_name, plan, currency, started_at, anchor_day, buyer)"
                " SELECT 'sub-' || i, 'faults', 'sub-' || i, 'tenant-' || i, 'tenant-' || i,"
                " 'faults', CAST(:plan AS jsonb), 'EUR', :start, :day,"
                " jsonb_build_object('name', 'Customer ' || i, 'address', '[]'::jsonb)"
                " FROM generate_series(1, :n) AS i"
            ),
            {"plan": json.dumps(PLAN.to_wire()), "start": started, "day": started.day,
             "n": SUBSCRIPTIONS},
        )  # fmt: skip
        await conn.execute(
            text(
                "INSERT INTO usage_hourly (tenant_uid, metric, hour, aggregation, value,"
                " events, latest_at)"
                " SELECT 'tenant-' || i, 'api_calls', h, 'sum', (i * 7 + hh) % 500, 1, h"
                " FROM generate_series(1, :n) AS i, generate_series(0, 23) AS hh,"
                " LATERAL (SELECT CAST(:start AS timestamptz) + hh * interval '1 hour' AS h) x"
            ),
            {"n": SUBSCRIPTIONS, "start": started + dt.timedelta(days=1)},
        )


async def invoices(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM invoices")) or 0)


async def run_billing(server: ApiServer) -> httpx.Response:
    async with server.admin() as admin:
        return await admin.post("/v1/admin/billing-runs", timeout=600)


async def test_a_billing_run_killed_halfway_and_run_again_issues_each_invoice_once(
    start_api: Callable[..., ApiServer], own_database: tuple[str, AsyncEngine], clock: Clock
) -> None:
    url, engine = own_database
    now = clock.now()
    started = (now - dt.timedelta(days=40)).replace(hour=0, minute=0, second=0, microsecond=0)
    await seed(engine, started)
    settings = {"TENANTRY_DATABASE_URL": url, "TENANTRY_BILLING_FINALIZE_GRACE": "0"}

    doomed = start_api(**settings)
    run = asyncio.create_task(run_billing(doomed))
    # Each subscription gets two invoices (at its start and at the month's boundary):
    # kill the run once it is well under way and far from done.
    deadline = time.monotonic() + 120
    while (made := await invoices(engine)) < SUBSCRIPTIONS // 3:
        assert time.monotonic() < deadline, f"the run made {made} invoices in 120 s"
        assert not run.done(), "the run ended before it could be killed"
        await asyncio.sleep(0.02)
    assert doomed.process is not None
    doomed.process.send_signal(signal.SIGKILL)
    with pytest.raises(httpx.TransportError):
        await run
    killed_at = await invoices(engine)
    assert killed_at < 2 * SUBSCRIPTIONS, "the run finished before it was killed"

    survivor = start_api(**settings)
    answer = await run_billing(survivor)
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "succeeded"

    async with engine.connect() as conn:
        per_boundary = (
            await conn.execute(
                text(
                    "SELECT subscription_uid, boundary, count(*) AS n FROM invoices"
                    " GROUP BY subscription_uid, boundary"
                )
            )
        ).all()
        numbers = (
            await conn.scalars(
                text("SELECT number FROM invoices WHERE number IS NOT NULL ORDER BY number")
            )
        ).all()
        drafts = await conn.scalar(text("SELECT count(*) FROM invoices WHERE status = 'draft'"))
    assert len(per_boundary) == 2 * SUBSCRIPTIONS
    assert {row.n for row in per_boundary} == {1}  # every invoice exactly once
    assert drafts == 0
    # Gap-free: INV-000001 up to the count, each once.
    sequence = sorted(int(number.rsplit("-", 1)[1]) for number in numbers)
    assert sequence == list(range(1, 2 * SUBSCRIPTIONS + 1))
