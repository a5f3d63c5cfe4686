"""A canceled Subscription stops its tenant's new work at once; usage from before the end
is still taken for the final invoice, and nothing admitted before is lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_harness import ApiServer, World
from sqlalchemy.ext.asyncio import create_async_engine
from support import Kube

from tenantry.api.tenants.catalog import FreshCache, Plan, SubscriptionEnd, Tenant
from tenantry.api.usage.schemas import UsageEvent
from tenantry.api.usage.validation import judge
from tenantry.core.lifecycle import Terms
from tenantry.core.resources import PlanSpec
from tenantry.db.subscriptions import terms_of_tenant

SUBSCRIPTION_CACHE_TTL = 1.0  # the API's default: an end shows within this
NOW = dt.datetime(2030, 3, 15, 12, 0, tzinfo=dt.UTC)
PLAN = Plan(
    name="pro",
    spec=PlanSpec.model_validate({
        "displayName": "Professional",
        "price": {"amount": 100, "currency": "USD"},
        "usageMaxAgeDays": 10,
        "metrics": [{"name": "calls", "aggregation": "count"}],
    }),
)  # fmt: skip
TERMS = Terms(
    uid="sub-1", namespace="customers", name="acme", tenant_uid="tenant-1", tenant_name="acme",
    plan_name="pro", plan=PLAN.spec, started_at=NOW - dt.timedelta(days=40), anchor_day=15,
)  # fmt: skip


def test_events_from_the_end_on_are_refused_one_by_one() -> None:
    end = SubscriptionEnd("customers/acme", NOW - dt.timedelta(hours=1), "deleted")
    stamps = [
        end.at - dt.timedelta(microseconds=1),
        end.at,
        NOW,
        end.at - dt.timedelta(days=11),
    ]
    events = [
        (i, UsageEvent(transaction_id=f"t{i}", metric="calls", value=1, timestamp=at))
        for i, at in enumerate(stamps)
    ]
    events.append((4, UsageEvent(transaction_id="t4", metric="nope", value=1, timestamp=NOW)))
    good, bad = judge(events, PLAN, NOW, dt.timedelta(minutes=5), end)
    assert [e.transaction_id for e in good] == ["t0"]
    assert [(r.index, r.code) for r in bad] == [
        (1, "subscription_ended"),
        (2, "subscription_ended"),
        (3, "timestamp_too_old"),
        (4, "subscription_ended"),
    ]
    assert bad[0].message.startswith(f"timestamp {end.at.isoformat()} is not before the end")
    assert "Subscription customers/acme ended at 2030-03-15 11:00:00 UTC (it was deleted)" in (
        bad[0].message
    )


def test_the_end_is_ended_at_or_a_cancel_at_period_end() -> None:
    assert SubscriptionEnd.of(None) is None
    assert SubscriptionEnd.of(TERMS) is None
    deleted = Terms(**{**TERMS.__dict__, "ended_at": NOW, "end_reason": "deleted"})
    assert SubscriptionEnd.of(deleted) == SubscriptionEnd("customers/acme", NOW, "deleted")
    # cancelAtPeriodEnd: the operator records the end on its first pass after it; the API
    # stops new work at the moment itself.
    later = NOW + dt.timedelta(days=3)
    canceling = Terms(**{**TERMS.__dict__, "cancel_at": later})
    end = SubscriptionEnd.of(canceling)
    assert end == SubscriptionEnd("customers/acme", later, "cancel_at_period_end")
    tenant = Tenant("customers", "acme", "tenant-1", None, PLAN, subscription_end=end)
    assert tenant.ended(NOW) is None
    assert tenant.ended(later) == end


async def test_a_fresh_cache_never_serves_a_value_older_than_its_ttl() -> None:
    reads: list[int] = []

    async def load(_: str) -> int:
        reads.append(len(reads) + 1)
        if len(reads) == 3:
            raise OSError("the database is away")
        return reads[-1]

    cache: FreshCache[str, int] = FreshCache(0.2, load, "figure")
    assert await cache.get("a") == 1
    assert await cache.get("a") == 1  # young: no read
    await asyncio.sleep(0.25)
    assert await cache.get("a") == 2  # too old to serve: read again, and waited for
    await asyncio.sleep(0.25)
    with pytest.raises(OSError, match="away"):
        await cache.get("a")  # no stale answer when the read fails
    assert reads == [1, 2, 3]


@pytest.fixture(scope="module")
def ending(make_world: Any) -> World:
    return make_world(limits={"api_calls": 1000})


@pytest.fixture(scope="module")
def staying(make_world: Any) -> World:
    return make_world(limits={"api_calls": 1000})


def event(metric: str, value: int, at: dt.datetime) -> dict[str, Any]:
    return {
        "transaction_id": uuid.uuid4().hex,
        "metric": metric,
        "value": value,
        "timestamp": at.isoformat(),
    }


async def stored_terms(
    database: str, tenant_uid: str, until: Callable[[Terms], bool], what: str
) -> Terms:
    """The tenant's subscription terms as the operator stored them, once `until` holds."""
    engine = create_async_engine(database)
    deadline = time.monotonic() + 30
    try:
        while True:
            async with engine.connect() as conn:
                found = await terms_of_tenant(conn, tenant_uid)
            if found is not None and until(found):
                return found
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def consume(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v1/quota/consume", json={"metric": "api_calls"})


async def usage_at(server: ApiServer, world: World, at: dt.datetime) -> dict[str, Any]:
    async with server.admin() as client:
        response = await client.get(
            f"/admin/tenants/{world.control}/{world.tenant}/usage", params={"at": at.isoformat()}
        )
    assert response.status_code == 200, response.text
    return response.json()["metrics"]  # type: ignore[no-any-return]


@pytest.mark.cluster
async def test_a_deleted_subscription_stops_new_work_and_keeps_earlier_usage(
    kube: Kube, ending: World, staying: World, api_server: ApiServer, database: str
) -> None:
    key, other_key = ending.issued_key("instance"), staying.issued_key("instance")
    uid = ending.uid
    # The operator must have stored the terms before the deletion can end them.
    await stored_terms(database, uid, lambda _: True, "the subscription's terms in PostgreSQL")
    admitted = 0
    async with api_server.client(key) as client:
        first = await consume(client)
        assert first.status_code == 200, first.text
        admitted += 1
        assert (await client.get("/v1/quota")).status_code == 200
        assert (await client.get("/v1/license")).status_code == 200

        kube.delete("subscription", ending.tenant, ending.control)
        stored = await stored_terms(
            database, uid, lambda t: t.ended_at is not None, "the operator to record the end"
        )
        ended_at = stored.ended_at
        assert ended_at is not None
        recorded = time.monotonic()
        while (refused := await consume(client)).status_code == 200:
            admitted += 1
            assert time.monotonic() - recorded < SUBSCRIPTION_CACHE_TTL + 0.5, (
                "quota consume still admitted work after the subscription ended"
            )
            await asyncio.sleep(0.02)

        subscription = f"{ending.control}/{ending.tenant}"
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "subscription_ended"
        utc = ended_at.astimezone(dt.UTC)
        message = error["message"]
        assert f"Subscription {subscription} ended at {utc:%Y-%m-%d %H:%M:%S} UTC" in message
        assert "deleted" in message
        assert error["details"]["subscription"] == subscription
        assert dt.datetime.fromisoformat(error["details"]["ended_at"]) == ended_at

        quotas = await client.get("/v1/quota")
        assert quotas.status_code == 403, quotas.text
        assert quotas.json()["error"]["code"] == "subscription_ended"

        # The last report: one event from before the end, one after, one too old to bill.
        before = event("messages", 7, ended_at - dt.timedelta(seconds=5))
        after = event("messages", 5, ended_at + dt.timedelta(seconds=1))
        too_old = event("messages", 3, ended_at - dt.timedelta(days=36))
        batch = {"events": [before, after, too_old]}
        response = await client.post("/v1/usage", json=batch)
        assert response.status_code == 422, response.text
        details = response.json()["error"]["details"]
        assert details["accepted"] == 1
        assert [(r["index"], r["transaction_id"], r["code"]) for r in details["rejected"]] == [
            (1, after["transaction_id"], "subscription_ended"),
            (2, too_old["transaction_id"], "timestamp_too_old"),
        ]
        assert f"Subscription {subscription} ended at" in details["rejected"][0]["message"]
        # Resending is harmless: the event taken counts once.
        again = (await client.post("/v1/usage", json=batch)).json()["error"]["details"]
        assert (again["accepted"], again["duplicates"]) == (0, 1)

        snapshot = await client.post(
            "/v1/usage/snapshot",
            json={"snapshot_id": uuid.uuid4().hex, "timestamp": ended_at.isoformat(),
                  "messages": 4},
        )  # fmt: skip
        assert snapshot.status_code == 422, snapshot.text
        problems = snapshot.json()["error"]["details"]["problems"]
        assert [p["code"] for p in problems] == ["subscription_ended"]

        license_ = await client.get("/v1/license")
        assert license_.status_code == 403, license_.text
        error = license_.json()["error"]
        assert error["code"] == "license_revoked"
        assert error["details"]["state"] == "revoked"
        assert error["details"]["reason"] == "subscription_ended"
        assert error["details"]["subscription"] == subscription
        assert "revoked" in error["message"]

    # Everything admitted before the end is kept, and the event from before it.
    metrics = await usage_at(api_server, ending, ended_at - dt.timedelta(seconds=5))
    assert metrics["messages"]["value"] == 7
    assert metrics["api_calls"]["value"] == admitted

    # Another tenant's keys are not touched.
    async with api_server.client(other_key) as client:
        assert (await consume(client)).status_code == 200
        assert (await client.get("/v1/quota")).status_code == 200
        assert (await client.get("/v1/license")).status_code == 200
        now = dt.datetime.now(dt.UTC)
        fine = await client.post("/v1/usage", json={"events": [event("messages", 2, now)]})
        assert fine.status_code == 200, fine.text
        assert fine.json() == {"accepted": 1, "duplicates": 0}
