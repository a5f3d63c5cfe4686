"""A Tenant's API keys die with it; a Tenant re-created under its name inherits none."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from api_harness import ApiServer, now_iso
from support import Kube, is_ready, wait_for

pytestmark = pytest.mark.cluster


async def license_status(server: ApiServer, key: str) -> int:
    async with server.client(key) as client:
        return (await client.get("/v1/license")).status_code


async def test_deleting_a_tenant_revokes_its_keys_for_good(
    kube: Kube, make_world: Any, api_server: ApiServer, database: str
) -> None:
    world = make_world()
    key = world.issued_key()
    assert await license_status(api_server, key) == 200
    tenant = world.tenant_object()
    assert tenant is not None

    kube.delete("tenant", world.tenant, world.control)
    wait_for(lambda: world.tenant_object() is None, "the Tenant to be gone", timeout=60)
    for _ in range(30):
        if await license_status(api_server, key) == 401:
            break
        await asyncio.sleep(0.1)
    assert await license_status(api_server, key) == 401

    kube.apply({key_: tenant[key_] for key_ in ("apiVersion", "kind")} | {
        "metadata": {"name": world.tenant, "namespace": world.control},
        "spec": tenant["spec"],
    })  # fmt: skip
    wait_for(lambda: is_ready(world.tenant_object()), "the re-created Tenant to be Ready", 60)
    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        revoked = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM api_keys"
            " WHERE tenant_namespace = %s AND tenant_name = %s",
            (world.control, world.tenant),
        ).fetchall()
    assert revoked == [(True,)]
    async with api_server.admin() as admin:
        for _ in range(50):  # until the API sees the re-created Tenant
            listing = await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/api-keys")
            if listing.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert listing.status_code == 200, listing.text
    assert await license_status(api_server, key) == 401, "the old key stays dead"


async def test_a_recreated_tenant_starts_from_zero_usage(
    kube: Kube, make_world: Any, api_server: ApiServer
) -> None:
    """Usage belongs to the Tenant's uid: its successor under the same name is not billed for it."""
    world = make_world()
    key = world.issued_key()
    event = {"transaction_id": "before", "metric": "api_calls", "value": 1, "timestamp": now_iso()}
    async with api_server.client(key) as client:
        assert (await client.post("/v1/usage", json={"events": [event]})).status_code == 200
    report_path = f"/admin/tenants/{world.control}/{world.tenant}/usage"
    async with api_server.admin() as admin:
        assert (await admin.get(report_path)).json()["metrics"]["api_calls"]["value"] == 1
    tenant = world.tenant_object()
    assert tenant is not None
    old_uid = tenant["metadata"]["uid"]

    kube.delete("tenant", world.tenant, world.control)
    wait_for(lambda: world.tenant_object() is None, "the Tenant to be gone", timeout=60)
    kube.apply({key_: tenant[key_] for key_ in ("apiVersion", "kind")} | {
        "metadata": {"name": world.tenant, "namespace": world.control},
        "spec": tenant["spec"],
    })  # fmt: skip
    wait_for(lambda: is_ready(world.tenant_object()), "the re-created Tenant to be Ready", 60)
    assert world.uid != old_uid

    new_key = world.issued_key()
    async with api_server.admin() as admin:
        for _ in range(50):  # until the API's catalog sees the new Tenant
            report = await admin.get(report_path)
            if (
                report.status_code == 200
                and report.json()["tenant"]
                and not report.json()["metrics"]
            ):
                break
            await asyncio.sleep(0.1)
    assert report.json()["metrics"] == {}, "the old tenant's usage is not the new one's"
    async with api_server.client(new_key) as client:
        quotas = (await client.get("/v1/quota")).json()["quotas"]
        # The same transaction id is new for the new tenant: counted, not a replay.
        replay = await client.post("/v1/usage", json={"events": [event]})
    assert quotas["api_calls"]["used"] == 0
    assert replay.json() == {"accepted": 1, "duplicates": 0}
