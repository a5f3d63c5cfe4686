"""A replica restarted during a Redis outage leaves no stale quota counter behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from api_harness import ApiServer
from testbed import Redis

pytestmark = pytest.mark.cluster

LIMIT = 5


async def consume(server: ApiServer, key: str) -> int:
    async with server.client(key) as client:
        response = await client.post("/v1/quota/consume", json={"metric": "api_calls"})
    return response.status_code


async def test_counts_made_by_a_replica_that_died_during_an_outage_are_not_lost(
    make_world: Any, start_api: Any, redis_server: Redis
) -> None:
    world = make_world(limits={"api_calls": LIMIT})
    key = world.issued_key()
    replica = start_api()
    assert [await consume(replica, key) for _ in range(3)] == [200, 200, 200]

    # Redis stops answering but keeps its data: its counter stays at 3.
    pause = 8.0
    redis.Redis.from_url(redis_server.url).client_pause(int(pause * 1000))
    paused_at = time.monotonic()
    # Counted in PostgreSQL alone (the default fail-open mode): 5 in all.
    assert [await consume(replica, key) for _ in range(2)] == [200, 200]
    replica.stop()  # and with it, all it remembered of the outage

    successor = start_api()
    await asyncio.sleep(max(0.0, pause - (time.monotonic() - paused_at)) + 3)
    # Redis answers again with its old counter (3); trusting it would admit two more.
    assert await consume(successor, key) == 429
    async with successor.client(key) as client:
        quota = await client.get("/v1/quota")
    assert quota.status_code == 200, quota.text
    assert f'"used":{LIMIT}' in quota.text.replace(" ", ""), quota.text
