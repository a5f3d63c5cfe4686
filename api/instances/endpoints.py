"""Instance routes: the heartbeat an instance sends, and what an admin reads of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from tenantry.api.auth import Caller, RuntimeDep, admin_token, scoped
from tenantry.api.errors import (
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    parse_body,
    responses,
)
from tenantry.api.instances.schemas import Heartbeat, HeartbeatAccepted, InstanceReport
from tenantry.api.paths import Name, Namespace
from tenantry.api.tenants.catalog import existing_tenant
from tenantry.api.usage.endpoints import json_body, read_body

router = APIRouter(tags=["instances"])

HEARTBEAT_SCOPE = "usage:write"
"""A heartbeat is a report of the instance about itself, as usage is: a key that may
report usage may report health (every instance key has it by default)."""


@router.post(
    "/v1/instance/heartbeat",
    status_code=202,
    summary="Report the instance's version and health (and a few figures)",
    responses=responses(Unauthorized, Forbidden, PayloadTooLarge, Unprocessable, Unavailable),
    openapi_extra=json_body(Heartbeat),
)
async def heartbeat(
    request: Request,
    rt: RuntimeDep,
    caller: Annotated[Caller, Depends(scoped(HEARTBEAT_SCOPE))],
) -> HeartbeatAccepted:
    """The key says which tenant beats. Stored as the tenant's last heartbeat and
    answered at once; the Tenant's `status.instance` and its `InstanceHealthy`
    condition follow when the version or health changed, else at most once per
    TENANTRY_HEARTBEAT_STATUS_INTERVAL. Silent for TENANTRY_HEARTBEAT_TIMEOUT,
    the condition turns False (`HeartbeatMissing`)."""
    # Read by hand, after the key: whatever the body is (not JSON, not UTF-8), a 422.
    beat = parse_body(Heartbeat, await read_body(request, rt.settings.max_body_bytes))
    return await rt.heartbeats.receive(caller.tenant, beat)


@router.get(
    "/admin/tenants/{namespace}/{name}/instance",
    tags=["admin"],
    summary="A tenant's last heartbeat, with its figures",
    dependencies=[Depends(admin_token)],
    responses=responses(Unauthorized, NotFound, Unavailable),
)
async def instance_report(namespace: Namespace, name: Name, rt: RuntimeDep) -> InstanceReport:
    tenant = await existing_tenant(rt.catalog, namespace, name)
    return await rt.heartbeats.report(tenant)
