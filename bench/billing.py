"""Benchmark of a billing run, beside a bare aggregation of the same rows in the same run.

Run: ``.venv/bin/python bench/billing.py [--subscriptions N] [--days D]``

It starts its own PostgreSQL (hack/testbed.py), stores N subscriptions
(default 10,000) on one Plan with a graduated metered price, as the operator
stores them, and D days (default 30) of hourly usage rows for each (N × 24 ×
D rows: 7.2 million by default), all in the period that has just ended. Then,
with the clock two hours past the boundary (past the finalization grace):

* the baseline: a bare ``SELECT tenant_uid, metric, sum(value) ... GROUP BY``
  over the same rows;
* a billing run (``BillingService.run``, as the API schedules it): one
  invoice per subscription, drafted, priced and finalized with its number;
* the same run again, which must create nothing.

Goals (PASS/MISS printed; the script exits 0): the first run within 10× the
bare aggregation; the second run under a tenth of the first.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from sqlalchemy import text  # noqa: E402
from testbed import Postgres  # noqa: E402

from tenantry.api.billing.service import BillingService  # noqa: E402
from tenantry.api.billing.settings import BillingSettings  # noqa: E402
from tenantry.core.resources import PlanSpec  # noqa: E402
from tenantry.db import migrations  # noqa: E402
from tenantry.db.engine import create_engine  # noqa: E402

GOAL_RATIO = 10.0
GOAL_SECOND_SHARE = 0.10
PLAN = PlanSpec.model_validate(
    {
        "displayName": "Bench",
        "price": {"amount": 4900, "currency": "EUR", "interval": "month"},
        "metrics": [{"name": "api_calls", "aggregation": "sum"}],
        "meteredPrices": [
            {
                "metric": "api_calls",
                "model": "graduated",
                "allowance": 1000,
                "tiers": [
                    {"upTo": 10000, "unitAmount": "0.5"},
                    {"upTo": 100000, "unitAmount": "0.25", "flatAmount": 100},
                    {"unitAmount": "0.1"},
                ],
            }
        ],
    }
)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def seed(
    url: str, subscriptions: int, days: int, started: dt.datetime, usage_from: dt.datetime
) -> None:
    engine = create_engine(url, pool_size=2)
    plan = json.dumps(PLAN.to_wire())
    try:
        async with engine.begin() as conn:
            # Monthly subscriptions without a trial, on one plan.
            await conn.execute(
                text(
                    "INSERT INTO subscriptions (uid, namespace, name, tenant_uid, tenant_name,"
                    " plan_name, plan, currency, started_at, anchor_day, buyer)"
                    " SELECT 'sub-' || i, 'bench', 'sub-' || i, 'tenant-' || i, 'tenant-' || i,"
                    " 'bench', CAST(:plan AS jsonb), 'EUR', :start, :day,"
                    " jsonb_build_object('name', 'Customer ' || i, 'address', '[]'::jsonb)"
                    " FROM generate_series(1, :n) AS i"
                ),
                {"plan": plan, "start": started, "day": started.day, "n": subscriptions},
            )
            await conn.execute(
                text(
                    "INSERT INTO usage_hourly (tenant_uid, metric, hour, aggregation, value,"
                    " events, latest_at)"
                    " SELECT 'tenant-' || i, 'api_calls', h, 'sum', (i * 7 + hh) % 500, 1, h"
                    " FROM generate_series(1, :n) AS i,"
                    " generate_series(0, :hours - 1) AS hh,"
                    " LATERAL (SELECT CAST(:start AS timestamptz) + hh * interval '1 hour' AS h) x"
                ),
                {"n": subscriptions, "hours": days * 24, "start": usage_from},
            )
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()


async def bare_aggregation(url: str) -> tuple[float, int]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            began = time.perf_counter()
            rows = (
                await conn.execute(
                    text(
                        "SELECT tenant_uid, metric, sum(value) FROM usage_hourly"
                        " GROUP BY tenant_uid, metric"
                    )
                )
            ).all()
            return time.perf_counter() - began, len(rows)
    finally:
        await engine.dispose()


async def billing_run(url: str, now: dt.datetime) -> tuple[float, int, int]:
    engine = create_engine(url, pool_size=5)
    settings = BillingSettings(seller_name="Bench Ltd", seller_country="DE", run_interval=0)
    service = BillingService(engine, settings, lambda: now)
    try:
        began = time.perf_counter()
        result = await service.run(trigger="bench")
        return time.perf_counter() - began, result.drafted, result.finalized
    finally:
        await engine.dispose()


async def measure(url: str, subscriptions: int, days: int) -> None:
    await migrations.migrate(create_engine(url, pool_size=1))
    # Subscriptions that began on October 1st: the period that has just ended.
    started = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    boundary = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    began = time.perf_counter()
    await seed(url, subscriptions, days, started, boundary - dt.timedelta(days=days))
    print(
        f"seeded {subscriptions:,} subscriptions and {subscriptions * days * 24:,} hourly rows "
        f"in {time.perf_counter() - began:.1f} s"
    )
    # The first run issues each subscription's invoice at its start, and the one at the
    # boundary (the period's base fee in advance and its usage in arrears).
    now = boundary + dt.timedelta(hours=2)
    bare, groups = await bare_aggregation(url)
    first, drafted, finalized = await billing_run(url, now)
    second, drafted_again, finalized_again = await billing_run(url, now)
    ratio = first / bare
    share = second / first
    second_ok = share < GOAL_SECOND_SHARE and drafted_again == finalized_again == 0
    rows = [
        ("bare GROUP BY over the rows", f"{bare:8.2f} s ({groups:,} groups)"),
        ("billing run", f"{first:8.2f} s ({drafted:,} drafted, {finalized:,} finalized)"),
        (
            "billing run again",
            f"{second:8.2f} s ({drafted_again} drafted, {finalized_again} final)",
        ),
        (
            "run / bare aggregation",
            f"{ratio:8.2f}x goal <= {GOAL_RATIO:g}x {verdict(ratio <= GOAL_RATIO)}",
        ),
        ("second run / first", f"{share:8.3f}  goal < {GOAL_SECOND_SHARE:g} {verdict(second_ok)}"),
    ]
    for label, figure in rows:
        print(f"{label + ':':30}{figure}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-billing-") as root:
        postgres = Postgres(Path(root) / "postgres")
        postgres.start()
        try:
            asyncio.run(measure(postgres.url, args.subscriptions, args.days))
        finally:
            postgres.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
