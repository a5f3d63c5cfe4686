"""Writes that fail: only the request at fault fails, and the quota counters stay true.

Failures are provoked in PostgreSQL itself, by triggers on transaction ids of
the test's own: one that refuses a row at insert (as PostgreSQL refuses a value
it cannot store), one that refuses the commit (after the counters moved).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis
from api_harness import ApiServer, World, now_iso
from testbed import Redis

pytestmark = pytest.mark.cluster

POISON = "poison-"  # refused at insert, as a value out of range
DOOMED = "doomed-"  # refused at commit, after the counters moved
SLOW = "slow-"  # takes half a second to insert: the writer is busy meanwhile


@pytest.fixture(scope="module")
def triggers(database: str) -> Iterator[None]:
    statements = [
        """CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'value out of range (test)' USING ERRCODE = '22003'; END $$""",
        f"""CREATE TRIGGER test_poison BEFORE INSERT ON usage_events FOR EACH ROW
            WHEN (NEW.transaction_id LIKE '{POISON}%') EXECUTE FUNCTION test_poison()""",
        """CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$""",
        f"""CREATE TRIGGER test_slow BEFORE INSERT ON usage_events FOR EACH ROW
            WHEN (NEW.transaction_id LIKE '{SLOW}%') EXECUTE FUNCTION test_slow()""",
        """CREATE FUNCTION test_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'commit refused (test)'; END $$""",
        f"""CREATE CONSTRAINT TRIGGER test_doomed AFTER INSERT ON usage_events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.transaction_id LIKE '{DOOMED}%') EXECUTE FUNCTION test_doomed()""",
    ]
    url = database.replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER test_poison ON usage_events")
            conn.execute("DROP TRIGGER test_doomed ON usage_events")
            conn.execute("DROP TRIGGER test_slow ON usage_events")
            conn.execute("DROP FUNCTION test_poison(), test_doomed(), test_slow()")


@pytest.fixture(scope="module")
def world(make_world: Any) -> World:
    return make_world(limits={"api_calls": 1000, "messages": 1000})


@pytest.fixture(scope="module")
def key(world: World) -> str:
    return world.issued_key("writer")


def event(metric: str, value: int, tx: str = "", **properties: Any) -> dict[str, Any]:
    return {"transaction_id": tx + uuid.uuid4().hex, "metric": metric, "value": value,
            "timestamp": now_iso(), "properties": properties}  # fmt: skip


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/usage", json={"events": events})


async def truth(server: ApiServer, world: World, metric: str) -> int:
    """The period's figure as PostgreSQL has it (the admin report reads only PostgreSQL)."""
    async with server.admin() as client:
        response = await client.get(f"/admin/tenants/{world.control}/{world.tenant}/usage")
    assert response.status_code == 200, response.text
    found = response.json()["metrics"].get(metric)
    return int(found["value"]) if found else 0


async def counted(server: ApiServer, key: str, metric: str) -> int:
    """The figure the quota counter (Redis) gives."""
    async with server.client(key) as client:
        response = await client.get("/v1/quota")
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "redis"
    return int(response.json()["quotas"][metric]["used"])


async def test_nul_in_properties_is_refused_per_event(key: str, api_server: ApiServer) -> None:
    async with api_server.client(key) as client:
        response = await post(client, [
            event("api_calls", 1), event("api_calls", 1, note="a\x00b"),
            event("api_calls", 1, **{"k\x00": "v"}),
        ])  # fmt: skip
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert details["accepted"] == 1
    assert [(r["index"], r["code"]) for r in details["rejected"]] == [
        (1, "invalid_event"),
        (2, "invalid_event"),
    ]
    assert "NUL" in details["rejected"][0]["message"]


async def test_a_poison_request_fails_alone(
    triggers: None, make_world: Any, key: str, api_server: ApiServer
) -> None:
    """Requests of other tenants, written in the same group commit, are counted."""
    other = make_world(limits={"api_calls": 1000})
    other_key = other.issued_key("bystander")
    async with api_server.client(key) as mine, api_server.client(other_key) as theirs:
        # A slow write first: the requests sent while it runs wait, and go in one group.
        slow = asyncio.create_task(post(theirs, [event("api_calls", 1, tx=SLOW)]))
        await asyncio.sleep(0.2)
        answers = await asyncio.gather(
            *(post(theirs, [event("api_calls", 1)]) for _ in range(10)),
            post(mine, [event("api_calls", 1, tx=POISON)]),
            *(post(theirs, [event("api_calls", 1)]) for _ in range(10)),
        )
        assert (await slow).status_code == 200
    poisoned = answers.pop(10)
    assert [a.status_code for a in answers] == [200] * 20, answers[0].text
    assert poisoned.status_code == 422, poisoned.text
    assert poisoned.json()["error"]["code"] == "unstorable_value"
    assert await truth(api_server, other, "api_calls") == 21


async def test_counters_match_postgres_after_a_failed_commit(
    triggers: None, world: World, key: str, api_server: ApiServer
) -> None:
    async with api_server.client(key) as client:
        assert (await post(client, [event("messages", 5)])).status_code == 200
        before = await counted(api_server, key, "messages")  # the counter exists in Redis
        assert before == await truth(api_server, world, "messages")
        failed = await post(client, [event("messages", 7, tx=DOOMED)])
        assert await counted(api_server, key, "messages") == before
        assert await truth(api_server, world, "messages") == before
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "storage_error"

        calls = await counted(api_server, key, "api_calls")
        consumed = await client.post(
            "/v1/quota/consume",
            json={"metric": "api_calls", "transaction_id": DOOMED + uuid.uuid4().hex},
        )
        assert await counted(api_server, key, "api_calls") == calls
        assert await truth(api_server, world, "api_calls") == calls
        assert consumed.status_code == 503, consumed.text


async def test_a_script_error_is_not_an_outage(
    world: World, key: str, api_server: ApiServer, redis_server: Redis
) -> None:
    """A counter Redis cannot add to fails its request; Redis stays in use and it is rebuilt."""
    counter = world.counter_key("api_calls")
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        await redis.set(counter, "not a number")
        async with api_server.client(key) as client:
            failed = await client.post("/v1/quota/consume", json={"metric": "api_calls"})
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"]["code"] == "storage_error"
            async with api_server.client() as anonymous:
                ready = (await anonymous.get("/readyz")).json()
            assert (ready["status"], ready["redis"]) == ("ready", "ok")
            admitted = await client.post("/v1/quota/consume", json={"metric": "api_calls"})
            assert admitted.status_code == 200, admitted.text
        assert admitted.json()["used"] == await truth(api_server, world, "api_calls")
        assert int(await redis.get(counter) or -1) == admitted.json()["used"]
    finally:
        await redis.aclose()
