"""Quota routes: check-and-count before serving, and the current figures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from tenantry.api.auth import Caller, RuntimeDep, scoped, utcnow
from tenantry.api.errors import (
    Conflict,
    Forbidden,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    Unprocessable,
    responses,
)
from tenantry.api.quotas.schemas import ConsumeRequest, ConsumeResult, Quotas
from tenantry.api.quotas.service import admitting

router = APIRouter(tags=["quotas"])


@router.post(
    "/v1/quota/consume",
    summary="Check a quota and count this request against it",
    responses=responses(
        Unauthorized,
        Forbidden,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        QuotaExceeded,
        Unavailable,
    ),
)
async def consume(
    request: ConsumeRequest,
    rt: RuntimeDep,
    caller: Annotated[Caller, Depends(scoped("quota:consume"))],
) -> ConsumeResult:
    """Ask before serving: admitted requests are counted (and recorded as usage), others get 429,
    or 403 `subscription_ended` once the tenant's subscription has ended.

    Exact under concurrency: no request is admitted past the limit and every
    admitted one is counted once, also when retried with the same transaction id.
    Quotas run per billing period of the tenant's subscription.
    """
    return await rt.quotas.consume(caller.tenant, request, utcnow)


@router.get(
    "/v1/quota",
    summary="The key's tenant's quotas this billing period",
    responses=responses(Unauthorized, Forbidden, Unavailable),
)
async def quotas(
    rt: RuntimeDep, caller: Annotated[Caller, Depends(scoped("quota:consume"))]
) -> Quotas:
    """403 `subscription_ended` once the tenant's subscription has ended: there is no
    billing period left to admit work in."""
    now = utcnow()
    admitting(caller.tenant, now)
    return await rt.quotas.quotas(caller.tenant, now)
