"""The delivery log of webhooks out, for admins: list, and queue a failed one again."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from tenantry.api.auth import AdminActor, RuntimeDep, admin_token
from tenantry.api.errors import (
    Conflict,
    NotFound,
    Unauthorized,
    Unavailable,
    Unprocessable,
    responses,
)
from tenantry.api.outbound.schemas import DeliveryList, DeliveryOut, delivery_out
from tenantry.api.outbound.service import no_delivery
from tenantry.api.paging import decode as decode_cursor
from tenantry.api.paging import encode as encode_cursor

router = APIRouter()
admin = [Depends(admin_token)]
MAX_PAGE = 100


def _delivery_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise no_delivery(raw) from None


@router.get(
    "/v1/admin/webhook-deliveries",
    tags=["webhooks"],
    summary="The delivery log of webhooks out, newest first",
    dependencies=admin,
    responses=responses(Unauthorized, Unprocessable, Unavailable),
)
async def deliveries(
    rt: RuntimeDep,
    state: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(description="Only this state.")
    ] = None,
    event_type: Annotated[
        str | None,
        Query(max_length=100, description="Only these events; `*` is a wildcard (`invoice.*`)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Deliveries per page.")] = 20,
    cursor: Annotated[str | None, Query(description="`nextCursor` of the previous page.")] = None,
) -> DeliveryList:
    found = await rt.outbound.deliveries(
        limit=limit + 1, state=state, event_type=event_type, before=decode_cursor(cursor)
    )
    page = found[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if page and len(found) > limit else None
    )
    return DeliveryList(deliveries=[delivery_out(d) for d in page], next_cursor=next_cursor)


@router.post(
    "/v1/admin/webhook-deliveries/{delivery_id}/retry",
    tags=["webhooks"],
    summary="Queue a failed delivery again, with a fresh set of attempts",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, Conflict, Unavailable),
)
async def retry(delivery_id: str, rt: RuntimeDep, by: AdminActor) -> DeliveryOut:
    return delivery_out(await rt.outbound.retry(_delivery_id(delivery_id), by=by))
