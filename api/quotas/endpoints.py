"""Quota routes: check-and-count before serving, and the current figures."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends

from tenantry.api.auth import Caller, RuntimeDep, scoped, utcnow
from tenantry.api.errors import (
    Conflict,
    Forbidden,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    Unprocessable,
    responses,
)
from tenantry.api.quotas import service
from tenantry.api.quotas.counters import CountersDown, counter_key
from tenantry.api.quotas.schemas import ConsumeRequest, ConsumeResult, Quotas
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Plan, Tenant
from tenantry.api.usage.periods import period_of
from tenantry.api.usage.writer import counters_unavailable

router = APIRouter(tags=["quotas"])


async def use_redis(rt: Runtime) -> bool:
    """Whether to count in Redis now; False means PostgreSQL (fail open)."""
    if await rt.counters.available():
        return True
    if rt.fail_open:
        return False
    raise counters_unavailable()


def plan_of(tenant: Tenant) -> Plan:
    if tenant.plan is None:
        raise Conflict(
            f"Tenant {tenant.key} has no plan in force yet: the operator has not finished "
            "provisioning it (see `kubectl get tenant`). Retry shortly.",
            code="tenant_not_ready",
        )
    return tenant.plan


async def quotas_of(rt: Runtime, tenant: Tenant) -> Quotas:
    now = utcnow()
    redis = await use_redis(rt)
    try:
        states = await service.quota_states(rt.engine, rt.counters, tenant, now, use_redis=redis)
    except CountersDown as error:
        if not rt.fail_open:
            raise counters_unavailable() from error
        redis = False
        states = await service.quota_states(rt.engine, rt.counters, tenant, now, use_redis=False)
    return Quotas(
        tenant=tenant.key,
        plan=tenant.plan.name if tenant.plan else None,
        quotas=states,
        source="redis" if redis else "database",
    )


@router.post(
    "/v1/quota/consume",
    summary="Check a quota and count this request against it",
    responses=responses(
        Unauthorized, Forbidden, Conflict, Unprocessable, QuotaExceeded, Unavailable
    ),
)
async def consume(
    request: ConsumeRequest,
    rt: RuntimeDep,
    caller: Annotated[Caller, Depends(scoped("quota:consume"))],
) -> ConsumeResult:
    """Ask before serving: admitted requests are counted (and recorded as usage), others get 429.

    Exact under concurrency: no request is admitted past the limit and every
    admitted one is counted once, also when retried with the same transaction id.
    """
    plan = plan_of(caller.tenant)
    service.consumable(plan, request.metric, request.amount)
    for _ in range(3):
        now = utcnow()
        redis = await use_redis(rt)
        outcome = None
        try:
            async with rt.engine.begin() as conn:
                outcome = await service.consume(
                    conn, rt.counters, caller.tenant, plan, request.metric, request.amount,
                    request.transaction_id, now, use_redis=redis,
                )  # fmt: skip
        except service.NeedsRebuild as missing:
            # If Redis fails here, the next attempt counts in PostgreSQL (or refuses).
            with contextlib.suppress(CountersDown):
                await service.rebuild(
                    rt.engine, rt.counters, caller.tenant.key, missing.metric, missing.period, now
                )
            continue
        except CountersDown as error:
            if not rt.fail_open:
                raise counters_unavailable() from error
            continue  # Redis went away mid-request: count it in PostgreSQL instead
        except QuotaExceeded:
            rt.tally.quota_refused += 1
            raise
        except BaseException:
            # Redis counted it but the commit failed, or its answer was lost: the event
            # may be in PostgreSQL or not. Giving the amount back would guess; dropping
            # the counter has the next use rebuild it from PostgreSQL (or, if Redis is
            # away too, it is dropped once Redis returns).
            if outcome is not None and outcome.counted_in_redis:
                await rt.counters.forget([outcome.counted_in_redis])
            raise
        if not redis and rt.counters.up:
            # Redis came back while this was counted in PostgreSQL alone: drop the
            # counter after the commit, so its rebuild sees this event.
            await rt.counters.forget(
                [counter_key(caller.tenant.key, request.metric, period_of(now))]
            )
        rt.tally.quota_admitted += 1
        if not outcome.result.duplicate:
            if not redis:
                rt.tally.counted_in_database += request.amount
            rt.answers.changed(caller.tenant.key)
            rt.status.touch(caller.tenant)
        return outcome.result
    raise Unavailable(
        "The quota could not be settled (Redis kept failing mid-request); retry shortly.",
        code="quota_retry",
        headers={"Retry-After": "1"},
    )


@router.get(
    "/v1/quota",
    summary="The key's tenant's quotas this period",
    responses=responses(Unauthorized, Unavailable),
)
async def quotas(
    rt: RuntimeDep, caller: Annotated[Caller, Depends(scoped("quota:consume"))]
) -> Quotas:
    return await quotas_of(rt, caller.tenant)
