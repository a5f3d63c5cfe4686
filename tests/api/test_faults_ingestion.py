"""Ingestion under faults: PostgreSQL restarted, an API process killed, mid-flood.

Clients do what the API asks of them: send batches of usage events and, on any
failure (a 503, a dropped connection), send the same batch again, with the same
transaction ids, to the same or another replica. Each keeps a ledger of the
events the API acknowledged. Afterwards the database must hold exactly the
ledger (every acknowledged event stored, none twice), the quota counters must
equal PostgreSQL's totals, and no answer may have been a 5xx other than 503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from api_harness import ApiServer, World
from sqlalchemy import text
from testbed import Postgres

from tenantry.db.engine import create_engine

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

BATCH = 50
CLIENTS = 4
METRIC = "messages"  # a sum: every event's value counts


@dataclass
class Ledger:
    acknowledged: set[str] = field(default_factory=set)
    answers: Counter[int | str] = field(default_factory=Counter)
    retries: int = 0


def batch_of(client: int, first: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return [
        {"transaction_id": f"c{client}-{n}", "metric": METRIC, "value": 1 + n % 7, "timestamp": now}
        for n in range(first, first + BATCH)
    ]


async def ingest(
    servers: list[ApiServer], key: str, client: int, stop: asyncio.Event, ledger: Ledger
) -> None:
    """Send batches until `stop`; each one again and again (on the next replica after a
    dropped connection) until it is acknowledged."""
    sessions = [server.client(key) for server in servers]
    try:
        first, target = 0, client % len(sessions)
        while not stop.is_set():
            events = batch_of(client, first)
            first += BATCH
            deadline = time.monotonic() + 90
            while True:
                try:
                    answer = await sessions[target].post(
                        "/v1/usage", json={"events": events}, timeout=15
                    )
                except httpx.TransportError as error:
                    ledger.answers[type(error).__name__] += 1
                    target = (target + 1) % len(sessions)
                else:
                    ledger.answers[answer.status_code] += 1
                    if answer.status_code == 200:
                        ledger.acknowledged.update(e["transaction_id"] for e in events)
                        break
                    assert answer.status_code == 503, answer.text
                    assert answer.headers.get("Retry-After"), answer.headers
                assert time.monotonic() < deadline, "a batch was never acknowledged"
                ledger.retries += 1
                await asyncio.sleep(0.2)
    finally:
        for session in sessions:
            await session.aclose()


async def flood_through(
    servers: list[ApiServer], key: str, fault: Callable[[], Awaitable[None]]
) -> Ledger:
    """CLIENTS clients ingesting for a while, `fault` striking in the middle."""
    ledger, stop = Ledger(), asyncio.Event()
    clients = [asyncio.create_task(ingest(servers, key, n, stop, ledger)) for n in range(CLIENTS)]
    await asyncio.sleep(2)
    await fault()
    await asyncio.sleep(3)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), 120)
    return ledger


async def stored(database: str, world: World) -> tuple[set[str], int, int]:
    """The tenant's transaction ids in PostgreSQL, how many rows, and their sum."""
    engine = create_engine(database, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT transaction_id, value FROM usage_events WHERE tenant_uid = :t"
                        " AND metric = :m"
                    ),
                    {"t": world.uid, "m": METRIC},
                )
            ).all()
    finally:
        await engine.dispose()
    return {r.transaction_id for r in rows}, len(rows), sum(r.value for r in rows)


async def used(server: ApiServer, key: str) -> tuple[int, str]:
    async with server.client(key) as client:
        quota = (await client.get("/v1/quota")).json()
    return quota["quotas"][METRIC]["used"], quota["source"]


async def check_exact(
    ledger: Ledger, database: str, world: World, server: ApiServer, key: str
) -> None:
    assert ledger.acknowledged, "nothing was acknowledged"
    assert ledger.retries, f"the fault was not felt: {ledger.answers}"
    assert not [a for a in ledger.answers if isinstance(a, int) and a >= 500 and a != 503], (
        ledger.answers
    )
    ids, rows, total = await stored(database, world)
    assert rows == len(ids)  # none twice (the key says so too)
    assert ids == ledger.acknowledged  # every acknowledged event, nothing else
    # The counters equal PostgreSQL's total, once a stale mark (if any) is drained.
    deadline = time.monotonic() + 30
    while (figure := await used(server, key)) != (total, "redis"):
        assert time.monotonic() < deadline, f"counter {figure} != database total {total}"
        await asyncio.sleep(0.5)


async def test_postgresql_restarted_mid_flood_loses_nothing_and_counts_nothing_twice(
    make_world: Callable[..., World], start_api: Callable[..., ApiServer],
    postgres: Postgres, database: str,
) -> None:  # fmt: skip
    world = make_world(limits={METRIC: 10**12})
    key = world.issued_key("flood", scopes=["usage:write", "quota:consume"])
    server = start_api()
    port = postgres.port

    async def restart_postgres() -> None:
        await asyncio.to_thread(postgres.halt)
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres.start, 30, port)

    ledger = await flood_through([server], key, restart_postgres)
    assert ledger.answers[503], ledger.answers  # the outage was answered, and said so
    await check_exact(ledger, database, world, server, key)


async def test_an_api_process_killed_mid_batch_loses_nothing_and_counts_nothing_twice(
    make_world: Callable[..., World], start_api: Callable[..., ApiServer], database: str
) -> None:
    world = make_world(limits={METRIC: 10**12})
    key = world.issued_key("flood", scopes=["usage:write", "quota:consume"])
    doomed, survivor = start_api(), start_api()

    async def kill() -> None:
        assert doomed.process is not None
        doomed.process.send_signal(signal.SIGKILL)  # no shutdown: requests cut mid-batch
        await asyncio.to_thread(doomed.process.wait, 30)

    ledger = await flood_through([doomed, survivor], key, kill)
    assert sum(n for a, n in ledger.answers.items() if isinstance(a, str)), ledger.answers
    await check_exact(ledger, database, world, survivor, key)
