"""Usage routes: batches of events, snapshots, and the admin report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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
from tenantry.api.quotas.endpoints import plan_of
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Plan, Tenant, existing_tenant
from tenantry.api.usage import repository as repo
from tenantry.api.usage import service
from tenantry.api.usage.periods import PERIOD, period_of, period_value
from tenantry.api.usage.schemas import (
    HourlyUsage,
    MetricUsage,
    Snapshot,
    SnapshotAccepted,
    UsageAccepted,
    UsageBatch,
    UsageEvent,
    UsageReport,
)
from tenantry.api.usage.validation import Rejection, judge, parse_batch

router = APIRouter(tags=["usage"])

OPENAPI_COMPONENTS: dict[str, Any] = {}
"""Schemas the hand-read request bodies refer to, for the app's OpenAPI document."""


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body the route reads itself (strict JSON validation, partial acceptance)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    OPENAPI_COMPONENTS.update(schema.pop("$defs", {}))
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


_ERRORS = (BadRequest, Unauthorized, Forbidden, Conflict, PayloadTooLarge, Unprocessable,
           Unavailable)  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is {size} bytes or more; the limit is {limit}. Send fewer events per batch.",
        details={"limit_bytes": limit},
    )


async def record(rt: Runtime, tenant: Tenant, plan: Plan, events: Sequence[UsageEvent]) -> int:
    """Commit new events; how many were new. The answer leaves only after the commit."""
    unique = service.dedupe(events)
    if not unique:
        return 0
    written = await rt.usage.write(tenant, plan, unique)
    if not written.in_redis:
        rt.tally.counted_in_database += written.accepted
    if written.accepted:
        rt.answers.changed(tenant.key)
        rt.status.touch(tenant)
    return written.accepted


def _refused(
    rejected: list[Rejection], accepted: int, duplicates: int, total: int
) -> Unprocessable:
    rejected.sort(key=lambda r: r.index)
    first = rejected[0]
    return Unprocessable(
        f"{len(rejected)} of {total} events were refused and not counted (the first, "
        f"#{first.index}: {first.message}); {accepted} were counted and {duplicates} were "
        "already counted before. Fix or drop the refused events; resending the others is "
        "harmless.",
        code="invalid_events",
        details={
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": [
                {"index": r.index, "transaction_id": r.transaction_id, "code": r.code,
                 "message": r.message}
                for r in rejected
            ],
        },
    )  # fmt: skip


@router.post(
    "/v1/usage",
    summary="Report a batch of usage events (up to 1,000)",
    openapi_extra=_json_body(UsageBatch),
    responses=responses(*_ERRORS),
)
async def post_usage(
    request: Request,
    rt: RuntimeDep,
    caller: Annotated[Caller, Depends(scoped("usage:write"))],
) -> UsageAccepted:
    """Each event counts once per transaction id, whatever the retries: a replay is
    acknowledged as a duplicate. The answer comes after the events are committed.

    Events that cannot be counted (unknown metric, bad value, timestamp out of range)
    are listed in a 422 answer, by index; the other events of the batch are counted all
    the same. Usage is never refused for being over quota: overage is billed.
    """
    body = await read_body(request, rt.settings.max_body_bytes)
    plan = plan_of(caller.tenant)
    parsed, rejected = parse_batch(body)
    total = len(parsed) + len(rejected)
    good, bad = judge(parsed, plan, utcnow(), dt.timedelta(seconds=rt.settings.future_tolerance))
    rejected += bad
    accepted = await record(rt, caller.tenant, plan, good)
    duplicates = len(good) - accepted
    rt.tally.events_accepted += accepted
    rt.tally.events_duplicate += duplicates
    rt.tally.events_rejected += len(rejected)
    if rejected:
        raise _refused(rejected, accepted, duplicates, total)
    return UsageAccepted(accepted=accepted, duplicates=duplicates)


@router.post(
    "/v1/usage/snapshot",
    summary="Report what an instance observes now (devices, messages, bytes, storage)",
    openapi_extra=_json_body(Snapshot),
    responses=responses(*_ERRORS),
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
    plan = plan_of(caller.tenant)
    events, ignored = service.snapshot_events(snapshot, plan)
    good, bad = judge(
        list(enumerate(events)), plan, utcnow(), dt.timedelta(seconds=rt.settings.future_tolerance)
    )
    if bad:
        raise Unprocessable(
            f"The snapshot cannot be counted: {bad[0].message}", code="invalid_snapshot",
            details={"problems": [{"metric": events[b.index].metric, "code": b.code,
                                   "message": b.message} for b in bad]},
        )  # fmt: skip
    accepted = await record(rt, caller.tenant, plan, good)
    return SnapshotAccepted(accepted=accepted, duplicates=len(good) - accepted, ignored=ignored)


@router.get(
    "/admin/tenants/{namespace}/{name}/usage",
    tags=["admin"],
    summary="A tenant's usage in a period, per metric and hour",
    dependencies=[Depends(admin_token)],
    responses=responses(Unauthorized, NotFound, Unprocessable, Unavailable),
)
async def usage_report(
    namespace: str,
    name: str,
    rt: RuntimeDep,
    period: Annotated[
        str | None, Query(pattern=PERIOD.pattern, description="`YYYY-MM`; this month if omitted.")
    ] = None,
) -> UsageReport:
    tenant = (await existing_tenant(rt.catalog, namespace, name)).key
    period = period or period_of(utcnow())
    async with rt.engine.connect() as conn:
        totals = await repo.period_totals(conn, tenant, period)
        hours = await repo.hourly(conn, tenant, period)
    metrics = {
        t.metric: MetricUsage(aggregation=t.aggregation.value, value=period_value(t))
        for t in totals
    }
    for metric, hour, value, events in hours:
        if metric in metrics:
            metrics[metric].hours.append(HourlyUsage(hour=hour, value=value, events=events))
    return UsageReport(tenant=tenant, period=period, metrics=metrics)
