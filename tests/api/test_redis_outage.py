"""Redis stopped mid-test: serving goes on (fail open) or stops cleanly (fail closed)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from api_harness import ApiServer, World, now_iso
from testbed import Redis

pytestmark = pytest.mark.cluster

LIMIT = 30


async def consume(server: ApiServer, key: str, n: int) -> list[int]:
    async with server.client(key) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/quota/consume", json={"metric": "api_calls"}) for _ in range(n))
        )
    return [a.status_code for a in answers]


async def introspect(server: ApiServer, key: str) -> dict[str, Any]:
    async with server.gateway() as client:
        response = await client.post("/internal/api-keys/introspect", json={"apiKey": key})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def get_json(server: ApiServer, path: str) -> tuple[int, Any]:
    async with server.client() as client:
        response = await client.get(path)
    return response.status_code, response.json()


async def test_serving_survives_redis_and_counters_are_rebuilt(
    make_world: Any,
    api_server: ApiServer,
    start_api: Any,
    redis_server: Redis,
) -> None:
    world: World = make_world(limits={"api_calls": LIMIT})
    key = world.issued_key("outage")
    closed = start_api(TENANTRY_REDIS_FAILURE_MODE="fail_closed")
    counter = world.counter_key("api_calls")
    assert (await consume(api_server, key, 10)).count(200) == 10

    port = redis_server.port
    redis_server.stop()
    try:
        # Fail open: quotas stay exact, counted in PostgreSQL; usage is still taken.
        codes = await consume(api_server, key, 40)
        assert codes.count(200) == LIMIT - 10
        assert codes.count(429) == 40 - (LIMIT - 10)
        state = await introspect(api_server, key)
        assert state["quota_source"] == "database"
        assert state["quotas"]["api_calls"]["used"] == LIMIT
        async with api_server.client(key) as client:
            usage = await client.post("/v1/usage", json={"events": [
                {"transaction_id": uuid.uuid4().hex, "metric": "messages", "value": 5,
                 "timestamp": now_iso()}]})  # fmt: skip
        assert usage.status_code == 200, usage.text
        # The fault is visible.
        code, ready = await get_json(api_server, "/readyz")
        assert code == 200
        assert ready["status"] == "degraded"
        assert ready["redis"] == "unreachable"
        assert ready["counters"]["failures"] > 0
        metrics = await api_server.metrics()
        assert "tenantry_api_redis_up 0.0" in metrics
        assert "tenantry_api_counted_in_database_total 0.0" not in metrics

        # Fail closed: a clear 503, nothing counted.
        code, ready = await get_json(closed, "/readyz")
        assert code == 503
        assert ready["status"] == "not ready"
        async with closed.client(key) as client:
            refused = await client.post("/v1/quota/consume", json={"metric": "api_calls"})
            report = await client.post("/v1/usage", json={"events": [
                {"transaction_id": uuid.uuid4().hex, "metric": "messages", "value": 5,
                 "timestamp": now_iso()}]})  # fmt: skip
        assert report.status_code == 503  # not counted: the instance retries it later
        assert report.json()["error"]["code"] == "counters_unavailable"
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "counters_unavailable"
        assert "fail_closed" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
    finally:
        redis_server.start(port=port)

    # Redis is back, with the stale figure it had before (as if it had kept its data).
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set(counter, 10)
        await asyncio.sleep(1.1)  # past the API's probe interval
        state = await introspect(api_server, key)
        assert state["quota_source"] == "redis"
        assert state["quotas"]["api_calls"]["used"] == LIMIT  # rebuilt from PostgreSQL
        assert int(await client.get(counter) or 0) == LIMIT
    finally:
        await client.aclose()
    assert await consume(api_server, key, 3) == [429, 429, 429]
    code, ready = await get_json(api_server, "/readyz")
    assert (code, ready["status"], ready["redis"]) == (200, "ready", "ok")
