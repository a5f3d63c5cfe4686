"""Usage ingestion: counted once whatever the retries, bad events named, rollups by aggregation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
import uuid
from typing import Any

import httpx
import pytest
from api_harness import ApiServer, World, now_iso
from support import Kube, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def world(make_world: Any) -> World:
    return make_world(limits={"api_calls": 1000, "messages": 100})


@pytest.fixture(scope="module")
def key(world: World) -> str:
    return world.issued_key("ingest")


def event(metric: str, value: Any, *, tx: str | None = None, at: str | None = None,
          **properties: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "transaction_id": tx or uuid.uuid4().hex,
        "metric": metric,
        "value": value,
        "timestamp": at or now_iso(),
        "properties": properties,
    }


async def post(server: ApiServer, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    async with server.client(key) as client:
        return await client.post("/v1/usage", json={"events": events})


async def report(server: ApiServer, world: World) -> dict[str, Any]:
    async with server.admin() as client:
        response = await client.get(f"/admin/tenants/{world.control}/{world.tenant}/usage")
    assert response.status_code == 200, response.text
    return response.json()["metrics"]  # type: ignore[no-any-return]


async def test_batch_is_counted_once_and_replays_are_acknowledged(
    world: World, key: str, api_server: ApiServer
) -> None:
    batch = [event("api_calls", 1) for _ in range(50)]
    first = await post(api_server, key, batch)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 50, "duplicates": 0}
    replay = await post(api_server, key, batch)
    assert replay.json() == {"accepted": 0, "duplicates": 50}
    # Half old, half new, and a repeat inside the batch itself.
    fresh = [event("api_calls", 1) for _ in range(10)]
    mixed = await post(api_server, key, batch[:10] + fresh + fresh[:1])
    assert mixed.json() == {"accepted": 10, "duplicates": 11}
    assert (await report(api_server, world))["api_calls"]["value"] == 60


async def test_racing_replays_count_once(world: World, key: str, api_server: ApiServer) -> None:
    batch = [event("messages", 3) for _ in range(100)]
    before = (await report(api_server, world)).get("messages", {}).get("value", 0)
    answers = await asyncio.gather(*(post(api_server, key, batch) for _ in range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum(a.json()["accepted"] for a in answers) == 100
    assert sum(a.json()["duplicates"] for a in answers) == 700
    assert (await report(api_server, world))["messages"]["value"] == before + 300


async def test_bad_events_are_named_and_the_good_ones_counted(
    world: World, key: str, api_server: ApiServer
) -> None:
    good = [event("devices", 7), event("devices", 9)]
    bad = [
        event("no_such_metric", 1),
        event("devices", 1.5),
        event("devices", "12"),
        event("devices", -1),
        event("devices", 1, at=now_iso(3600)),
        event("devices", 1, at=now_iso(-40 * 86400)),
        event("devices", 1, at="yesterday"),
        event("active_users", 1),  # unique_count without its `user` property
        {"metric": "devices", "value": 1, "timestamp": now_iso()},
    ]
    response = await post(api_server, key, [good[0], *bad, good[1]])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_events"
    assert error["details"]["accepted"] == 2
    assert error["details"]["duplicates"] == 0
    rejected = {r["index"]: r for r in error["details"]["rejected"]}
    assert sorted(rejected) == list(range(1, 10))
    assert rejected[1]["code"] == "unknown_metric"
    assert "api_calls" in rejected[1]["message"]  # names the plan's metrics
    assert "whole number" in rejected[2]["message"]
    assert "whole number" in rejected[3]["message"]
    assert rejected[4]["code"] == "invalid_event"
    assert rejected[5]["code"] == "timestamp_in_future"
    assert rejected[6]["code"] == "timestamp_too_old"
    assert "RFC 3339" in rejected[7]["message"] or "datetime" in rejected[7]["message"]
    assert rejected[8]["code"] == "missing_property"
    assert "transaction_id" in rejected[9]["message"]
    assert "2 were counted" in error["message"]
    # The good events beside them were committed.
    assert (await report(api_server, world))["devices"]["value"] == 9
    # Sending the same batch again counts nothing twice.
    again = await post(api_server, key, [good[0], *bad, good[1]])
    assert again.json()["error"]["details"]["duplicates"] == 2


async def test_whole_request_problems(world: World, key: str, api_server: ApiServer) -> None:
    async with api_server.client(key) as client:
        not_json = await client.post("/v1/usage", content=b"{not json",
                                     headers={"content-type": "application/json"})  # fmt: skip
        wrong_shape = await client.post("/v1/usage", json=[event("api_calls", 1)])
        too_many = await client.post("/v1/usage", json={"events": [event("api_calls", 1)] * 1001})
        empty = await client.post("/v1/usage", json={"events": []})
        huge = await client.post("/v1/usage", content=b"x" * (2 * 1024 * 1024))
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "invalid_json"
    assert wrong_shape.status_code == 422
    assert '"events"' in wrong_shape.json()["error"]["message"]
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"] == {"events": 1001, "max": 1000}
    assert empty.status_code == 422
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"


async def test_aggregations_roll_up_by_hour(world: World, key: str, api_server: ApiServer) -> None:
    now = dt.datetime.now(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    if now - hour < dt.timedelta(minutes=2):
        hour -= dt.timedelta(hours=1)  # keep both events of a pair inside one past hour
    earlier, later = (hour + dt.timedelta(minutes=m) for m in (1, 2))

    def at(moment: dt.datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    events = [
        event("storage_bytes", 500, at=at(later)),
        event("storage_bytes", 900, at=at(earlier)),  # older: not the latest
        event("active_users", 1, user="ann"),
        event("active_users", 1, user="bob"),
        event("active_users", 1, user="ann"),
        event("active_users", 1, user=42),
    ]
    assert (await post(api_server, key, events)).status_code == 200
    more = [event("active_users", 1, user="bob"), event("active_users", 1, user="cy")]
    assert (await post(api_server, key, more)).status_code == 200
    metrics = await report(api_server, world)
    assert metrics["storage_bytes"]["value"] == 500
    assert metrics["storage_bytes"]["aggregation"] == "latest"
    assert metrics["active_users"]["value"] == 4  # ann, bob, 42, cy
    assert sum(h["events"] for h in metrics["active_users"]["hours"]) == 6


async def test_snapshot_maps_onto_metrics_once(
    world: World, key: str, api_server: ApiServer
) -> None:
    snapshot = {"snapshot_id": uuid.uuid4().hex, "timestamp": now_iso(), "active_devices": 31,
                "messages": 5, "bytes": 1024, "storage_bytes": 2048}  # fmt: skip
    async with api_server.client(key) as client:
        first = await client.post("/v1/usage/snapshot", json=snapshot)
        replay = await client.post("/v1/usage/snapshot", json=snapshot)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 3, "duplicates": 0, "ignored": ["bytes"]}
    assert replay.json() == {"accepted": 0, "duplicates": 3, "ignored": ["bytes"]}
    metrics = await report(api_server, world)
    assert metrics["devices"]["value"] == 31
    assert metrics["storage_bytes"]["value"] == 2048


async def test_usage_summary_reaches_the_tenant_status(
    kube: Kube, world: World, key: str, api_server: ApiServer
) -> None:
    assert (await post(api_server, key, [event("api_calls", 1)])).status_code == 200
    expected = (await report(api_server, world))["api_calls"]["value"]

    def summary() -> dict[str, Any] | None:
        tenant = world.tenant_object() or {}
        usage = (tenant.get("status") or {}).get("usage") or {}
        return usage if usage.get("metrics", {}).get("api_calls") == expected else None

    usage = wait_for(summary, "the usage summary in the Tenant's status", timeout=10)
    period = world.period()
    assert dt.datetime.fromisoformat(usage["period"]["start"]) == period.start
    assert dt.datetime.fromisoformat(usage["period"]["end"]) == period.end
    assert set(usage["metrics"]) == {"api_calls", "messages", "devices", "storage_bytes",
                                     "active_users"}  # fmt: skip
    # The operator's own status fields are untouched by the API's merge patch.
    status = (world.tenant_object() or {})["status"]
    assert status["plan"] == world.plan
    assert any(c["type"] == "Ready" for c in status["conditions"])


async def test_heavy_traffic_writes_the_status_sparingly(
    world: World, key: str, api_server: ApiServer
) -> None:
    before = _status_writes(await api_server.metrics())
    started = time.monotonic()
    for _ in range(30):
        await post(api_server, key, [event("api_calls", 1)])
    await asyncio.sleep(1.2)
    elapsed = time.monotonic() - started
    after = _status_writes(await api_server.metrics())
    # One write a second at most (TENANTRY_STATUS_WRITE_INTERVAL=1), whatever the number of
    # requests: bounded by the time the requests took, not by their count. (On a loaded
    # machine the 30 requests take longer, and more seconds allow more writes.)
    assert after - before <= math.ceil(elapsed) + 1, (before, after, elapsed)
    assert after - before < 30


def _status_writes(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith("tenantry_api_status_writes_total "):
            return int(float(line.split()[1]))
    raise AssertionError(metrics)


async def test_usage_needs_the_scope_and_a_provisioned_tenant(
    world: World, api_server: ApiServer
) -> None:
    license_only = world.issued_key("license-only", scopes=["license:read"])
    response = await post(api_server, license_only, [event("api_calls", 1)])
    assert response.status_code == 403
    assert json.loads(response.text)["error"]["details"]["required"] == "usage:write"
