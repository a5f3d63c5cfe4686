"""`GET /v1/admin/audit`: the audit trail of hand-made changes, newest first (db/audit.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenantry.api.auth import RuntimeDep, admin_token
from tenantry.api.errors import Unauthorized, Unavailable, Unprocessable, responses
from tenantry.db import audit

router = APIRouter(tags=["admin"])


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class AuditRecordOut(Wire):
    id: int
    at: dt.datetime
    actor: str = Field(description="`admin` (or `admin:<Tenantry-Actor header>`), `stripe`...")
    address: str | None = Field(description="The client's address, as the API saw it.")
    action: str = Field(description="e.g. `invoice.payment_recorded`, `invoice.void`.")
    target: str = Field(description="What it was done to: an invoice id, a delivery id...")
    details: dict[str, Any]


class AuditPage(Wire):
    records: list[AuditRecordOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for older records.")


@router.get(
    "/v1/admin/audit",
    summary="Who changed what by hand (payments, voids, credit notes, runs, retries), and when",
    dependencies=[Depends(admin_token)],
    responses=responses(Unauthorized, Unprocessable, Unavailable),
)
async def audit_trail(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Records per page.")] = 50,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="`nextCursor` of the last page.")
    ] = None,
    target: Annotated[
        str | None, Query(max_length=256, description="Only the records about this object.")
    ] = None,
) -> AuditPage:
    async with rt.engine.connect() as conn:
        found = await audit.page(conn, limit + 1, int(cursor) if cursor else None, target)
    records = [AuditRecordOut(**vars(r)) for r in found[:limit]]
    more = len(found) > limit
    return AuditPage(records=records, next_cursor=str(records[-1].id) if more else None)
