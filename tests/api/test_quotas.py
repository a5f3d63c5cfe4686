"""Quotas: exact under many concurrent clients, idempotent, never refusing reported usage."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from api_harness import ApiServer, World, now_iso
from testbed import Redis

pytestmark = pytest.mark.cluster

LIMIT = 40


@pytest.fixture(scope="module")
def world(make_world: Any) -> World:
    return make_world(limits={"api_calls": LIMIT, "messages": 1000, "devices": 5})


@pytest.fixture(scope="module")
def key(world: World) -> str:
    return world.issued_key("gateway")


async def counter(redis_server: Redis, world: World, metric: str) -> int | None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        value = await client.get(world.counter_key(metric))
    finally:
        await client.aclose()
    return None if value is None else int(value)


async def introspect(server: ApiServer, key: str) -> dict[str, Any]:
    async with server.gateway() as client:
        response = await client.post("/internal/api-keys/introspect", json={"apiKey": key})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_quota_is_exact_under_concurrent_clients(
    world: World, key: str, api_server: ApiServer, redis_server: Redis
) -> None:
    clients = [api_server.client(key) for _ in range(24)]
    attempts = 5

    async def hammer(client: httpx.AsyncClient) -> list[httpx.Response]:
        answers = []
        for _ in range(attempts):
            answers.append(await client.post("/v1/quota/consume", json={"metric": "api_calls"}))
        return answers

    try:
        results = await asyncio.gather(*(hammer(c) for c in clients))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    answers = [a for batch in results for a in batch]
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(admitted) == LIMIT, {a.status_code for a in answers}
    assert len(refused) == len(answers) - LIMIT
    assert sorted(a.json()["used"] for a in admitted) == list(range(1, LIMIT + 1))
    # Every admitted request is counted, in Redis and in PostgreSQL alike.
    assert await counter(redis_server, world, "api_calls") == LIMIT
    state = (await introspect(api_server, key))["quotas"]["api_calls"]
    assert state == {
        "limit": LIMIT,
        "used": LIMIT,
        "remaining": 0,
        "period": world.period().label(),
    }
    async with api_server.admin() as client:
        usage = await client.get(f"/admin/tenants/{world.control}/{world.tenant}/usage")
    assert usage.json()["metrics"]["api_calls"]["value"] == LIMIT
    # The 429 says which limit, where it stands, the plan and what to do.
    error = refused[0].json()["error"]
    assert error["code"] == "limit_exceeded"
    details = error["details"]
    assert details["code"] == "limit_exceeded"
    assert details["limit_name"] == "api_calls"
    assert details["limit"] == LIMIT
    assert details["current"] == LIMIT
    assert details["plan_code"] == world.plan
    assert details["licensed"] is True
    assert details["period"] == world.period().label()
    assert "Upgrade your plan" in error["message"]
    assert int(refused[0].headers["retry-after"]) > 0


async def test_a_retried_consume_counts_once(world: World, key: str, api_server: ApiServer) -> None:
    tx = uuid.uuid4().hex
    async with api_server.client(key) as client:
        first = await client.post(
            "/v1/quota/consume", json={"metric": "messages", "amount": 10, "transaction_id": tx}
        )
        again = await client.post(
            "/v1/quota/consume", json={"metric": "messages", "amount": 10, "transaction_id": tx}
        )
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert (await introspect(api_server, key))["quotas"]["messages"]["used"] == 10


async def test_reported_usage_is_never_refused_and_shows_as_overage(
    world: World, key: str, api_server: ApiServer
) -> None:
    events = [
        {"transaction_id": uuid.uuid4().hex, "metric": "messages", "value": 600,
         "timestamp": now_iso()}
        for _ in range(3)
    ]  # fmt: skip
    async with api_server.client(key) as client:
        response = await client.post("/v1/usage", json={"events": events})
        consume = await client.post("/v1/quota/consume", json={"metric": "messages"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3
    state = (await introspect(api_server, key))["quotas"]["messages"]
    assert state["used"] >= 1800
    assert state["remaining"] == 0
    assert consume.status_code == 429  # what is over is over, for new requests


async def test_gauges_cannot_be_consumed(key: str, api_server: ApiServer) -> None:
    async with api_server.client(key) as client:
        gauge = await client.post("/v1/quota/consume", json={"metric": "devices"})
        unknown = await client.post("/v1/quota/consume", json={"metric": "nope"})
        bulk_count = await client.post(
            "/v1/quota/consume", json={"metric": "api_calls", "amount": 3}
        )
        floaty = await client.post("/v1/quota/consume", json={"metric": "messages", "amount": 1.5})
    assert gauge.status_code == 422
    assert gauge.json()["error"]["code"] == "metric_not_consumable"
    assert "POST /v1/usage" in gauge.json()["error"]["message"]
    assert unknown.json()["error"]["code"] == "unknown_metric"
    assert bulk_count.json()["error"]["code"] == "invalid_amount"
    assert floaty.status_code == 422
    assert floaty.json()["error"]["details"]["errors"][0]["field"] == "amount"


async def test_introspection_tells_a_gateway_everything_it_needs(
    world: World, key: str, api_server: ApiServer
) -> None:
    body = await introspect(api_server, key)
    assert body["active"] is True
    assert body["tenant"]["namespace"] == world.control
    assert body["tenant"]["name"] == world.tenant
    assert body["tenant"]["instance_namespace"] == world.target
    assert body["plan"]["name"] == world.plan
    assert sorted(body["scopes"]) == ["license:read", "quota:consume", "usage:write"]
    assert body["key_prefix"] == key[:13]
    assert set(body["quotas"]) == {"api_calls", "messages", "devices"}
    assert body["quota_source"] == "redis"
    for state in body["quotas"].values():
        assert set(state) == {"limit", "used", "remaining", "period"}
    # Anything that is not a usable key is just inactive.
    for junk in ["", "tnty_short", "x" * 200, key[:-1] + "0"]:
        assert await introspect(api_server, junk) == {"active": False}
    # Only gateways with the service token may ask.
    async with api_server.client(key) as client:
        refused = await client.post("/internal/api-keys/introspect", json={"apiKey": key})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_service_token"
    async with api_server.gateway() as client:
        snake = await client.post("/internal/api-keys/introspect", json={"api_key": key})
        missing = await client.post("/internal/api-keys/introspect", json={})
    assert snake.json()["active"] is True
    assert missing.status_code == 422
    assert "apiKey" in missing.json()["error"]["message"]
