"""Instance heartbeats: the Tenant's status shows them, InstanceHealthy follows them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_harness import ApiServer, World, ready_condition
from support import Kube, condition, dig, wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 4
"""Seconds of silence the fast API turns into HeartbeatMissing."""


@pytest.fixture(scope="module")
def fast_api(start_api: Any) -> Iterator[ApiServer]:
    """An API that calls an instance silent after a few seconds, and sweeps every second;
    stopped with this module: its sweeps reach every Tenant of the shared cluster, and
    would call the instances of later tests silent within seconds."""
    server: ApiServer = start_api(
        TENANTRY_HEARTBEAT_TIMEOUT=str(TIMEOUT),
        TENANTRY_HEARTBEAT_SWEEP_INTERVAL="1",
        TENANTRY_HEARTBEAT_STATUS_INTERVAL="2",
    )
    yield server
    server.stop()


async def beat(server: ApiServer, key: str, **body: Any) -> httpx.Response:
    async with server.client(key) as client:
        return await client.post("/v1/instance/heartbeat", json=body)


def instance_healthy(world: World) -> tuple[str, str] | None:
    found = condition(world.tenant_object(), "InstanceHealthy")
    return (found["status"], found["reason"]) if found else None


async def test_heartbeats_become_status_and_silence_becomes_heartbeat_missing(
    make_world: Any, fast_api: ApiServer
) -> None:
    world: World = make_world()
    key = world.issued_key("beats")
    ready_before = ready_condition(world.tenant_object())
    assert instance_healthy(world) is None  # no heartbeat yet: no claim either way

    answer = await beat(fast_api, key, version="1.4.2", health="healthy",
                        figures={"devices": 12, "cpu_load": "0.75"})  # fmt: skip
    assert answer.status_code == 202, answer.text
    assert answer.json()["timeout_seconds"] == TIMEOUT
    tenant = wait_for(
        lambda: (t := world.tenant_object()) and dig(t, "status", "instance", "version") and t,
        "status.instance to show the heartbeat",
    )
    assert tenant["status"]["instance"]["health"] == "healthy"
    assert tenant["status"]["instance"]["lastHeartbeat"]
    assert instance_healthy(world) == ("True", "HeartbeatHealthy")
    async with fast_api.admin() as admin:
        report = (await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/instance")).json()
    assert report["figures"] == {"devices": 12, "cpu_load": "0.75"}
    assert report["silent"] is False

    # Unhealthy shows at once (a change of health is never held back), with its message.
    await beat(fast_api, key, version="1.4.2", health="unhealthy", message="database unreachable")
    wait_for(lambda: instance_healthy(world) == ("False", "InstanceUnhealthy"),
             "InstanceHealthy=False, InstanceUnhealthy")  # fmt: skip
    found = condition(world.tenant_object(), "InstanceHealthy")
    assert found is not None
    assert "database unreachable" in found["message"]
    assert dig(world.tenant_object(), "status", "instance", "health") == "unhealthy"

    # Healthy again, then silence: HeartbeatMissing once the timeout has passed.
    last_beat = time.monotonic()
    await beat(fast_api, key, version="1.5.0", health="healthy")
    wait_for(lambda: instance_healthy(world) == ("True", "HeartbeatHealthy"), "healthy again")
    assert dig(world.tenant_object(), "status", "instance", "version") == "1.5.0"
    wait_for(lambda: instance_healthy(world) == ("False", "HeartbeatMissing"),
             "InstanceHealthy=False, HeartbeatMissing", timeout=TIMEOUT + 15)  # fmt: skip
    assert time.monotonic() - last_beat >= TIMEOUT
    # The operator's Ready is its own: heartbeats never touched it.
    assert ready_condition(world.tenant_object()) == ready_before

    # A heartbeat brings it back.
    await beat(fast_api, key, version="1.5.0", health="healthy")
    wait_for(lambda: instance_healthy(world) == ("True", "HeartbeatHealthy"), "healthy again")


async def test_status_writes_are_throttled(make_world: Any, api_server: ApiServer) -> None:
    """At most one write per TENANTRY_HEARTBEAT_STATUS_INTERVAL (60 s here) while the
    version and health stay the same."""
    world: World = make_world()
    key = world.issued_key("chatty")
    await beat(api_server, key, version="2.0.0", health="healthy")
    first = wait_for(
        lambda: dig(world.tenant_object(), "status", "instance", "lastHeartbeat"),
        "the first heartbeat in status",
    )
    # Heartbeats many times a second: no second write.
    for _ in range(20):
        assert (await beat(api_server, key, version="2.0.0", health="healthy")).status_code == 202
        await asyncio.sleep(0.05)
    assert dig(world.tenant_object(), "status", "instance", "lastHeartbeat") == first
    # A new version is written at once.
    await beat(api_server, key, version="2.0.1", health="healthy")
    wait_for(lambda: dig(world.tenant_object(), "status", "instance", "version") == "2.0.1",
             "the new version in status", timeout=5)  # fmt: skip


async def test_bad_heartbeats_are_refused_readably(make_world: Any, api_server: ApiServer) -> None:
    world: World = make_world()
    key = world.issued_key("sloppy")
    cases = [
        ({"health": "healthy"}, "version"),
        ({"version": "1.0", "health": "fine"}, "health"),
        ({"version": "1.0", "health": "healthy", "figures": {"cpu": 0.5}}, "float"),
        ({"version": "1.0", "health": "healthy", "figures": {"CPU": 1}}, "snake_case"),
        ({"version": "1.0", "health": "healthy", "figures": {"cpu": "1e3"}}, "not a decimal"),
        ({"version": "1.0", "health": "healthy",
          "figures": {f"f{i}": i for i in range(17)}}, "at most 16"),
        ({"version": "1 0", "health": "healthy"}, "version"),
        ({"version": "1.0", "health": "healthy", "tenant": "someone-else"}, "tenant"),
    ]  # fmt: skip
    for body, says in cases:
        answer = await beat(api_server, key, **body)
        assert answer.status_code == 422, (body, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_request"
        assert says in error["message"], (body, error["message"])
    async with api_server.client(key) as client:
        for content in (b"{", b'"\x08i\xff\xfe'):  # not JSON; not even UTF-8
            not_json = await client.post(
                "/v1/instance/heartbeat", content=content,
                headers={"content-type": "application/json"},
            )  # fmt: skip
            assert not_json.status_code == 422, (content, not_json.text)
            assert not_json.json()["error"]["code"] == "invalid_request"
    async with api_server.client() as client:  # no key: refused before the body is read
        anonymous = await client.post("/v1/instance/heartbeat", content=b"\xff")
    assert anonymous.status_code == 401
    async with api_server.admin() as admin:
        nothing = await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/instance")
    assert nothing.status_code == 404
    assert nothing.json()["error"]["code"] == "no_heartbeat"


async def test_the_key_decides_the_tenant(make_world: Any, api_server: ApiServer) -> None:
    ours: World = make_world()
    theirs: World = make_world()
    our_key, their_key = ours.issued_key("ours"), theirs.issued_key("theirs")
    mine = await beat(api_server, our_key, version="1.0.0", health="healthy")
    other = await beat(api_server, their_key, version="9.9.9", health="unhealthy")
    assert (mine.status_code, other.status_code) == (202, 202)
    async with api_server.admin() as admin:
        reports = [
            (await admin.get(f"/admin/tenants/{w.control}/{w.tenant}/instance")).json()
            for w in (ours, theirs)
        ]
    assert [(r["version"], r["health"]) for r in reports] == [
        ("1.0.0", "healthy"),
        ("9.9.9", "unhealthy"),
    ]
    wait_for(
        lambda: dig(theirs.tenant_object(), "status", "instance", "version") == "9.9.9",
        "their status",
    )
    assert dig(ours.tenant_object(), "status", "instance", "version") == "1.0.0"


async def test_revoked_and_unscoped_keys_cannot_beat(
    kube: Kube, make_world: Any, api_server: ApiServer
) -> None:
    world: World = make_world()
    key = world.issued_key("soon-revoked")
    assert (await beat(api_server, key, version="1.0.0", health="healthy")).status_code == 202
    kube.kubectl("patch", "apikey", "soon-revoked", "-n", world.control, "--type", "merge",
                 "-p", '{"spec": {"revoked": true}}')  # fmt: skip
    deadline = time.monotonic() + 5
    while (
        answer := await beat(api_server, key, version="1.0.0", health="healthy")
    ).status_code == 202:
        assert time.monotonic() < deadline, "the revoked key still beat after 5 s"
        await asyncio.sleep(0.05)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"

    reader = world.issued_key("reader", scopes=["license:read"])
    refused = await beat(api_server, reader, version="1.0.0", health="healthy")
    assert refused.status_code == 403
    assert "usage:write" in refused.json()["error"]["message"]
    no_key = await beat(api_server, "", version="1.0.0", health="healthy")
    assert no_key.status_code == 401
