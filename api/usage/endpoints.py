"""Usage routes: batches of events, snapshots, and the admin report."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from tenantry.api.auth import Caller, RuntimeDep, admin_token, scoped, utcnow
from tenantry.api.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    parse_body,
    responses,
)
from tenantry.api.paths import Name, Namespace
from tenantry.api.tenants.catalog import existing_tenant
from tenantry.api.usage.schemas import (
    Snapshot,
    SnapshotAccepted,
    UsageAccepted,
    UsageBatch,
    UsageReport,
)
from tenantry.api.usage.validation import parse_batch

router = APIRouter(tags=["usage"])

OPENAPI_COMPONENTS: dict[str, Any] = {}
"""Schemas the hand-read request bodies refer to, for the app's OpenAPI document."""


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI for a body the route reads itself (strict JSON validation, partial acceptance)."""
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    OPENAPI_COMPONENTS.update(schema.pop("$defs", {}))
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": required, "content": content}}


_ERRORS = (BadRequest, Unauthorized, Forbidden, Conflict, PayloadTooLarge, Unprocessable,
           Unavailable)  # fmt: skip


async def read_body(
    request: Request, limit: int, hint: str = "Send fewer events per batch."
) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit, hint)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, hint)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, hint: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is {size} bytes or more; the limit is {limit}. {hint}",
        details={"limit_bytes": limit},
    )


@router.post(
    "/v1/usage",
    summary="Report a batch of usage events (up to 1,000)",
    openapi_extra=json_body(UsageBatch),
    responses=responses(*_ERRORS),
)
async def post_usage(
    request: Request,
    rt: RuntimeDep,
    caller: Annotated[Caller, Depends(scoped("usage:write"))],
) -> UsageAccepted:
    """Each event counts once per transaction id, whatever the retries: a replay is
    acknowledged as a duplicate. The answer comes after the events are committed.

    Events that cannot be counted (unknown metric, bad value, timestamp out of range,
    stamped at or after the end of the tenant's subscription) are listed in a 422 answer,
    by index; the other events of the batch are counted all the same. Usage is never
    refused for being over quota: overage is billed.
    """
    parsed, rejected = parse_batch(await read_body(request, rt.settings.max_body_bytes))
    return await rt.usage.report_batch(caller.tenant, parsed, rejected, utcnow())


@router.post(
    "/v1/usage/snapshot",
    summary="Report what an instance observes now (devices, messages, bytes, storage)",
    openapi_extra=json_body(Snapshot),
    responses=responses(
        Unauthorized, Forbidden, Conflict, PayloadTooLarge, Unprocessable, Unavailable
    ),
)
async def post_snapshot(
    request: Request,
    rt: RuntimeDep,
    caller: Annotated[Caller, Depends(scoped("usage:write"))],
) -> SnapshotAccepted:
    """Each figure becomes an event of the plan's metric of that name (`active_devices`
    -> `devices`), with transaction id `snapshot:<snapshot_id>:<metric>`, so a replayed
    snapshot counts once. Figures the plan does not meter, or meters as unique_count
    (distinct values, which a figure cannot give), are listed as ignored."""
    snapshot = parse_body(Snapshot, await read_body(request, rt.settings.max_body_bytes))
    return await rt.usage.report_snapshot(caller.tenant, snapshot, utcnow())


@router.get(
    "/admin/tenants/{namespace}/{name}/usage",
    tags=["admin"],
    summary="A tenant's usage in a billing period, per metric and hour",
    dependencies=[Depends(admin_token)],
    responses=responses(Unauthorized, NotFound, Unprocessable, Unavailable),
)
async def usage_report(
    namespace: Namespace,
    name: Name,
    rt: RuntimeDep,
    at: Annotated[
        dt.datetime | None,
        Query(
            description="Any moment of the billing period wanted (ISO 8601, e.g. "
            "`2026-10-20T00:00:00Z`); the current period if omitted."
        ),
    ] = None,
) -> UsageReport:
    tenant = await existing_tenant(rt.catalog, namespace, name)
    if at is not None and at.tzinfo is None:
        raise Unprocessable(
            f"at={at.isoformat()} has no time zone: add one, e.g. `Z` for UTC.",
            code="invalid_period",
        )
    return await rt.usage.usage_in_period(tenant, at or utcnow())
