"""License delivery: the instance's license, the keys to verify it, revocations, history."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import pytest
from api_harness import ApiServer, World
from sqlalchemy.ext.asyncio import create_async_engine
from support import Kube

from tenantry import license as lic
from tenantry.db.licenses import record_license

pytestmark = pytest.mark.cluster

ISSUER, AUDIENCE = "tenantry", "tenantry-instance"


@pytest.fixture(scope="module")
def world(make_world: Any) -> World:
    return make_world()


def signing_ring(kube: Kube) -> lic.KeyRing:
    secret = kube.get("secret", "tenantry-signing-keys", "tenantry-system")
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return lic.KeyRing.from_secret_data(data)


async def test_instance_gets_its_license_and_verifies_it_with_the_published_keys(
    kube: Kube, world: World, api_server: ApiServer
) -> None:
    key = world.issued_key("instance")
    async with api_server.client(key) as client:
        document = (await client.get("/v1/license")).json()
        jwks = (await client.get("/v1/license/jwks.json")).json()
        pem = await client.get("/v1/license/public-key")
        unknown = await client.get("/v1/license/public-key", params={"kid": "nope"})
    secret = kube.get("secret", "tenantry-license", world.target)
    assert secret is not None
    assert document["license"] == base64.b64decode(secret["data"]["license.jwt"]).decode()
    assert document["plan"] == world.plan
    assert document["license_id"]
    status = lic.verify(
        document["license"], lic.KeySet.from_jwks(jwks), issuer=ISSUER, audience=AUDIENCE
    )
    assert status.usable, status
    assert status.claims is not None
    assert status.claims.jti == document["license_id"]
    # Public halves only.
    for entry in jwks["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(entry)
    assert pem.headers["content-type"] == "application/x-pem-file"
    assert pem.headers["x-key-id"] in {k["kid"] for k in jwks["keys"]}
    assert pem.text.startswith("-----BEGIN PUBLIC KEY-----")
    assert b"PRIVATE" not in pem.content
    assert lic.VerificationKey.from_pem(pem.content).kid == pem.headers["x-key-id"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "key_not_found"


async def test_revocation_list_is_served_once_published(kube: Kube, start_api: Any) -> None:
    name = f"revocations-{uuid.uuid4().hex[:6]}"
    server = start_api(TENANTRY_REVOCATION_SECRET=name)
    async with server.client() as client:
        missing = await client.get("/v1/license/revocations")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "revocation_list_not_found"
    assert "no license is revoked" in missing.json()["error"]["message"]

    ring = signing_ring(kube)
    token = lic.issue_revocation_list(["jti-1", "jti-2"], ring.active, dt.datetime.now(dt.UTC),
                                      ISSUER)  # fmt: skip
    kube.kubectl("create", "secret", "generic", name, "-n", "tenantry-system",
                 f"--from-literal=revocations.jwt={token}")  # fmt: skip
    try:
        # Published lists show within the API's 2 s document cache.
        async with server.client() as client:
            for _ in range(50):
                found = await client.get("/v1/license/revocations")
                if found.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        assert found.status_code == 200
        revoked = lic.RevocationList.verify(
            found.json()["revocation_list"], ring.public_keys(), ISSUER
        )
        assert revoked.jtis == {"jti-1", "jti-2"}
    finally:
        kube.delete("secret", name, "tenantry-system")


async def test_license_history_is_recorded_once_and_listed_for_admins(
    world: World, api_server: ApiServer, database: str
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token = "header.payload.signature"
    engine = create_async_engine(database)
    try:
        for _ in range(2):  # a retried reconcile records nothing twice
            async with engine.begin() as conn:
                added = await record_license(
                    conn,
                    tenant_namespace=world.control,
                    tenant_name=world.tenant,
                    tenant_uid="uid-1",
                    license_id="jti-history",
                    action="issued",
                    plan=world.plan,
                    features={"jobs": True},
                    limits={"devices": 50},
                    token_sha256=lic.sha256_token(token),
                    issued_at=now,
                    expires_at=now + dt.timedelta(days=30),
                )
        assert added is False
    finally:
        await engine.dispose()
    async with api_server.admin() as client:
        response = await client.get(f"/admin/tenants/{world.control}/{world.tenant}/licenses")
    assert response.status_code == 200, response.text
    # The operator records the tenant's own licenses beside it; this one is there once.
    (entry,) = [e for e in response.json()["licenses"] if e["license_id"] == "jti-history"]
    assert entry["license_id"] == "jti-history"
    assert entry["action"] == "issued"
    assert entry["limits"] == {"devices": 50}
    assert entry["token_sha256"] == lic.sha256_token(token)
    assert token not in response.text


async def test_history_of_an_unknown_tenant_is_a_404(api_server: ApiServer) -> None:
    async with api_server.admin() as client:
        response = await client.get("/admin/tenants/nowhere/nobody/licenses")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "tenant_not_found"
    assert "nobody" in error["message"]
