"""A Tenant's API keys die with it; a Tenant re-created under its name inherits none."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from api_harness import ApiServer
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
