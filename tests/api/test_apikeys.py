"""The ApiKey resource end to end: issued by the operator, used at the API, revoked, deleted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from api_harness import ApiServer, World, ready_condition, secret_key
from support import Kube, OperatorProcess, wait_for

from tenantry.core import keyformat

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def world(make_world: Any) -> World:
    return make_world()


async def license_status(server: ApiServer, key: str) -> tuple[int, dict[str, Any]]:
    async with server.client(key) as client:
        response = await client.get("/v1/license")
    return response.status_code, response.json()


async def introspect(server: ApiServer, key: str) -> dict[str, Any]:
    async with server.gateway() as client:
        response = await client.post("/internal/api-keys/introspect", json={"apiKey": key})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_key_is_issued_once_into_a_secret_and_works(
    kube: Kube, world: World, api_server: ApiServer
) -> None:
    key = world.issued_key("instance")
    apikey = kube.get("apikey", "instance", world.control)
    assert apikey is not None
    status = apikey["status"]
    assert keyformat.is_well_formed(key)
    assert status["prefix"] == keyformat.display_prefix(key)
    assert status["secretRef"] == f"{world.target}/instance"
    assert ready_condition(apikey) == ("True", "Active")
    # The key works where the instance uses it.
    code, body = await license_status(api_server, key)
    assert code == 200, body
    assert body["license"].count(".") == 2
    events = kube.kubectl("get", "events", "-n", world.control, "-o", "name",
                          "--field-selector", "reason=KeyIssued")  # fmt: skip
    assert events.strip()
    # Nothing but the Secret holds the plaintext: not the status, not the operator's events.
    assert key not in kube.kubectl("get", "apikey", "instance", "-n", world.control, "-o", "yaml")
    assert key not in kube.kubectl("get", "events", "-n", world.control, "-o", "yaml")


async def test_key_is_not_regenerated_when_the_operator_restarts(
    kube: Kube, world: World, operator: OperatorProcess, api_server: ApiServer
) -> None:
    key = world.issued_key("survivor")
    operator.stop()
    operator.start()
    kube.kubectl("annotate", "apikey", "survivor", "-n", world.control, "touch=1", "--overwrite")
    await asyncio.sleep(1.5)
    assert secret_key(kube, world.target, "survivor") == key
    apikey = kube.get("apikey", "survivor", world.control)
    assert apikey is not None
    assert apikey["status"]["prefix"] == keyformat.display_prefix(key)
    assert (await license_status(api_server, key))[0] == 200
    assert key not in operator.log_text()


async def test_revoked_key_stops_within_a_second_with_the_unknown_key_answer(
    kube: Kube, world: World, api_server: ApiServer
) -> None:
    key = world.issued_key("revoke-me")
    assert (await introspect(api_server, key))["active"] is True
    unknown = keyformat.generate()
    unknown_code, unknown_body = await license_status(api_server, unknown)
    assert unknown_code == 401

    kube.kubectl("patch", "apikey", "revoke-me", "-n", world.control, "--type", "merge",
                 "-p", '{"spec": {"revoked": true}}')  # fmt: skip
    revoked_at = time.monotonic()
    while (await license_status(api_server, key))[0] == 200:
        assert time.monotonic() - revoked_at < 1.0, "the revoked key still worked after 1 s"
        await asyncio.sleep(0.02)
    # Revoked and unknown keys are told apart by nothing.
    assert await license_status(api_server, key) == (unknown_code, unknown_body)
    assert await introspect(api_server, key) == {"active": False}
    assert await introspect(api_server, unknown) == {"active": False}
    apikey = wait_for(
        lambda: (
            ready_condition(o := kube.get("apikey", "revoke-me", world.control))
            == ("False", "Revoked")
            and o
        ),
        "the ApiKey to say Revoked",
    )
    assert "revoked" in apikey["status"]["conditions"][0]["message"]
    async with api_server.admin() as admin:
        trail = (await admin.get("/v1/admin/audit", params={"target": world.key})).json()
    assert [(r["action"], r["actor"]) for r in trail["records"]] == [
        ("api_key.revoked", "kubernetes:kubectl-patch")
    ]
    # Revocation is permanent: un-setting it does not bring the key back.
    kube.kubectl("patch", "apikey", "revoke-me", "-n", world.control, "--type", "merge",
                 "-p", '{"spec": {"revoked": false}}')  # fmt: skip
    await asyncio.sleep(1.5)
    assert (await license_status(api_server, key))[0] == 401
    assert ready_condition(kube.get("apikey", "revoke-me", world.control)) == (
        "False",
        "Revoked",
    )


async def test_deleted_key_stops_within_a_second_and_its_secret_goes(
    kube: Kube, world: World, api_server: ApiServer
) -> None:
    key = world.issued_key("delete-me")
    assert (await license_status(api_server, key))[0] == 200
    kube.delete("apikey", "delete-me", world.control)
    deleted_at = time.monotonic()
    while (await license_status(api_server, key))[0] == 200:
        assert time.monotonic() - deleted_at < 1.0, "the deleted key still worked after 1 s"
        await asyncio.sleep(0.02)
    wait_for(lambda: kube.get("secret", "delete-me", world.target) is None, "the Secret to go")
    wait_for(lambda: kube.get("apikey", "delete-me", world.control) is None, "the ApiKey to go")


async def test_key_waits_for_its_tenant_and_refuses_a_foreign_secret(
    kube: Kube, world: World, make_world: Any
) -> None:
    world.apikey("orphan", tenantRef={"name": "nobody"})
    wait_for(
        lambda: (
            ready_condition(kube.get("apikey", "orphan", world.control))
            == ("False", "TenantNotFound")
        ),
        "the ApiKey to wait for its Tenant",
    )
    # A Secret of someone else's is never overwritten.
    kube.kubectl("create", "secret", "generic", "taken", "-n", world.target,
                 "--from-literal=api-key=theirs")  # fmt: skip
    world.apikey("squatter", secretName="taken")
    wait_for(
        lambda: (
            ready_condition(kube.get("apikey", "squatter", world.control))
            == ("False", "SecretConflict")
        ),
        "the ApiKey to refuse the foreign Secret",
    )
    secret = kube.get("secret", "taken", world.target)
    assert secret is not None
    assert secret["data"]["api-key"] == "dGhlaXJz"  # "theirs", untouched


async def test_scopes_expiry_and_malformed_keys(
    kube: Kube, world: World, api_server: ApiServer
) -> None:
    key = world.issued_key("usage-only", scopes=["usage:write"])
    code, body = await license_status(api_server, key)
    assert code == 403
    assert body["error"]["code"] == "insufficient_scope"
    assert "license:read" in body["error"]["message"]

    expired = world.apikey("expired", expiresAt="2020-01-01T00:00:00Z")
    wait_for(
        lambda: (
            ready_condition(kube.get("apikey", "expired", world.control)) == ("False", "Expired")
        ),
        "the ApiKey to say Expired",
    )
    expired_key = secret_key(kube, world.target, expired["metadata"]["name"])
    assert (await license_status(api_server, expired_key))[0] == 401

    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    code, body = await license_status(api_server, typo)
    assert code == 401
    assert body["error"]["code"] == "malformed_api_key"
    assert "checksum" in body["error"]["message"]
    async with api_server.client() as client:
        response = await client.get("/v1/license")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    # The key may also come in X-API-Key.
    async with api_server.client(headers={"X-API-Key": key}) as client:
        snapshot = {"snapshot_id": "s1", "timestamp": "2020-01-01T00:00:00Z", "active_devices": 1}
        response = await client.post("/v1/usage/snapshot", json=snapshot)
    assert response.status_code == 422  # authenticated; the snapshot is too old


async def test_admin_lists_keys_without_secrets(world: World, api_server: ApiServer) -> None:
    key = world.issued_key("listed")
    async with api_server.admin() as client:
        response = await client.get(f"/admin/tenants/{world.control}/{world.tenant}/api-keys")
    assert response.status_code == 200, response.text
    listed = {k["resource"]: k for k in response.json()["keys"]}
    entry = listed[f"{world.control}/listed"]
    assert entry["prefix"] == keyformat.display_prefix(key)
    assert entry["active"] is True
    assert key not in response.text
    assert keyformat.hash_key(key) not in response.text
    async with api_server.client(api_server.introspection_token) as client:
        refused = await client.get(f"/admin/tenants/{world.control}/{world.tenant}/api-keys")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_admin_token"


async def test_admin_asking_about_an_unknown_tenant_gets_404(
    world: World, api_server: ApiServer
) -> None:
    async with api_server.admin() as client:
        answers = [
            await client.get(f"/admin/tenants/{world.control}/no-such-tenant/{what}")
            for what in ("api-keys", "usage")
        ]
    for answer in answers:
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["code"] == "tenant_not_found"
        assert "no-such-tenant" in error["message"]
        assert error["details"] == {"namespace": world.control, "name": "no-such-tenant"}
