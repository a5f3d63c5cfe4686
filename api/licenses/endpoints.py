"""License routes: an instance's license, the verification keys, revocations, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from tenantry.api.auth import Caller, RuntimeDep, admin_token, scoped, utcnow
from tenantry.api.errors import Forbidden, NotFound, Unauthorized, Unavailable, responses
from tenantry.api.licenses.schemas import (
    JsonWebKeySet,
    LicenseDocument,
    LicenseHistory,
    LicenseHistoryEntry,
    RevocationListDocument,
)
from tenantry.api.paths import Name, Namespace
from tenantry.api.tenants.catalog import existing_tenant
from tenantry.db import licenses as repo

router = APIRouter(tags=["licenses"])


@router.get(
    "/v1/license",
    summary="The current license of the key's tenant",
    responses=responses(Unauthorized, Forbidden, NotFound, Unavailable),
)
async def current_license(
    rt: RuntimeDep, caller: Annotated[Caller, Depends(scoped("license:read"))]
) -> LicenseDocument:
    """403 `license_revoked` (details `state: revoked`) once the tenant's subscription
    has ended or its license was revoked without a successor."""
    return await rt.licenses.license_for(caller.tenant, utcnow())


@router.get(
    "/v1/license/jwks.json",
    summary="The keys licenses are signed with (public halves, as a JWKS)",
    responses=responses(NotFound, Unavailable),
)
async def jwks(rt: RuntimeDep) -> JsonWebKeySet:
    keys = await rt.licenses.public_keys()
    return JsonWebKeySet(keys=keys.keys.to_jwks()["keys"])


@router.get(
    "/v1/license/public-key",
    summary="One verification key as PEM (the active signing key's by default)",
    response_class=Response,
    responses={
        200: {"content": {"application/x-pem-file": {}}, "description": "A PEM public key."},
        **responses(NotFound, Unavailable),
    },
)
async def public_key(
    rt: RuntimeDep,
    kid: Annotated[str | None, Query(max_length=128, description="A key id from the JWKS.")] = None,
) -> Response:
    found, pem = await rt.licenses.public_pem(kid)
    return Response(pem, media_type="application/x-pem-file", headers={"X-Key-Id": found})


@router.get(
    "/v1/license/revocations",
    summary="The signed list of revoked license ids",
    responses=responses(NotFound, Unavailable),
)
async def revocations(rt: RuntimeDep) -> RevocationListDocument:
    return RevocationListDocument(revocation_list=await rt.licenses.revocation_list())


@router.get(
    "/admin/tenants/{namespace}/{name}/licenses",
    tags=["admin"],
    summary="Every license signed for a tenant (hashes, never tokens)",
    dependencies=[Depends(admin_token)],
    responses=responses(Unauthorized, NotFound, Unavailable),
)
async def license_history(namespace: Namespace, name: Name, rt: RuntimeDep) -> LicenseHistory:
    async with rt.engine.connect() as conn:
        records = await repo.history(conn, namespace, name)
    if not records:
        # A deleted tenant's history stays readable (it is an audit trail);
        # only a tenant that never had a license and does not exist is a 404.
        await existing_tenant(rt.catalog, namespace, name)
    return LicenseHistory(
        tenant=f"{namespace}/{name}",
        licenses=[LicenseHistoryEntry.model_validate(r, from_attributes=True) for r in records],
    )
