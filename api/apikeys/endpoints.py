"""Key routes: introspection for gateways, and the admin listing."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tenantry.api.apikeys.schemas import (
    ApiKeyInfo,
    ApiKeyList,
    Introspection,
    IntrospectRequest,
    PlanRef,
    TenantRef,
)
from tenantry.api.auth import (
    SERVICE_TOKEN_SCHEME,
    RuntimeDep,
    admin_token,
    check_service_token,
    resolve_key,
    utcnow,
)
from tenantry.api.errors import (
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    parse_body,
    responses,
)
from tenantry.api.paths import Name, Namespace
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import existing_tenant
from tenantry.core import keyformat
from tenantry.db import apikeys as repo

log = logging.getLogger("tenantry.api.keys")
router = APIRouter()


_INTROSPECT_BODY = IntrospectRequest.model_json_schema(by_alias=True)
_INACTIVE = b'{"active":false}'


@router.post(
    "/internal/api-keys/introspect",
    tags=["api keys"],
    summary="Whether a key is active, for whom, and the quota state",
    response_model=Introspection,
    response_model_exclude_none=True,
    responses=responses(Unauthorized, PayloadTooLarge, Unprocessable, Unavailable),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _INTROSPECT_BODY}},
        },
        "security": [{SERVICE_TOKEN_SCHEME: []}],
    },
)
async def introspect(request: Request) -> Response:
    """For gateways inside the cluster (service token). Any key that is not usable, for
    whatever reason, is `{"active": false}`: nothing more is told about it.

    This sits in front of every request a gateway serves, so it reads its body and
    token itself instead of through FastAPI's dependency machinery, which costs more
    than the rest of the work together.
    """
    rt: Runtime = request.app.state.runtime
    check_service_token(rt, request.headers.get("authorization"))
    presented = parse_body(IntrospectRequest, await request.body()).api_key.strip()
    if not keyformat.is_well_formed(presented):
        return Response(_INACTIVE, media_type="application/json")
    key_hash = keyformat.hash_key(presented)
    cached = rt.answers.get(key_hash)
    if cached is None:
        return Response(await answer(rt, presented, key_hash), media_type="application/json")
    rt.last_used.note(cached.key_id, utcnow())
    if rt.answers.refresh_due(key_hash, cached):
        rt.spawn(_refresh(rt, presented, key_hash))
    return Response(cached.body, media_type="application/json")


async def _refresh(rt: Runtime, presented: str, key_hash: str) -> None:
    try:
        await answer(rt, presented, key_hash)
    except Exception:
        rt.answers.drop(key_hash)  # the next request builds it, and sees any error itself
        log.warning("Failed to refresh an introspection answer", exc_info=True)
    finally:
        rt.answers.refreshed(key_hash)


async def answer(rt: Runtime, presented: str, key_hash: str) -> bytes:
    """Build, keep and return the introspection answer for a well-formed key."""
    caller = await resolve_key(rt, presented)
    # A key whose tenant's subscription has ended admits no new work either.
    if caller is None or caller.tenant.ended(utcnow()) is not None:
        rt.answers.drop(key_hash)
        return _INACTIVE
    tenant, plan = caller.tenant, caller.tenant.plan
    generation = rt.answers.generation(tenant.uid)
    view = await rt.quotas.quotas(tenant, utcnow())
    built = Introspection(
        active=True,
        tenant=TenantRef(
            namespace=tenant.namespace,
            name=tenant.name,
            uid=tenant.uid,
            instance_namespace=tenant.instance_namespace,
        ),
        key_prefix=caller.key.key_prefix,
        scopes=sorted(caller.key.scopes),
        expires_at=caller.key.expires_at,
        plan=PlanRef(name=plan.name, display_name=plan.spec.display_name) if plan else None,
        quotas=view.quotas,
        quota_source=view.source,
    )
    body = built.model_dump_json(exclude_none=True).encode()
    rt.answers.put(key_hash, body, caller.key.id, tenant.uid, generation, caller.key.expires_at)
    return body


@router.get(
    "/admin/tenants/{namespace}/{name}/api-keys",
    tags=["admin"],
    summary="A tenant's API keys (never the keys themselves)",
    dependencies=[Depends(admin_token)],
    responses=responses(Unauthorized, NotFound, Unavailable),
)
async def list_keys(namespace: Namespace, name: Name, rt: RuntimeDep) -> ApiKeyList:
    tenant = await existing_tenant(rt.catalog, namespace, name)
    async with rt.engine.connect() as conn:
        rows = await repo.list_for_tenant(conn, namespace, name, tenant.uid)
    now = utcnow()
    return ApiKeyList(
        tenant=f"{namespace}/{name}",
        keys=[
            ApiKeyInfo(
                resource=f"{r.resource_namespace}/{r.resource_name}",
                prefix=r.key_prefix,
                scopes=sorted(r.scopes),
                active=r.active(now),
                created_at=r.created_at,
                expires_at=r.expires_at,
                revoked_at=r.revoked_at,
                last_used_at=r.last_used_at,
            )
            for r in rows
        ],
    )
