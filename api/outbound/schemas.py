"""Wire shapes of the delivery log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenantry.db.outbox import Delivery


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class DeliveryOut(Wire):
    id: str = Field(description="This delivery (`Tenantry-Delivery-Id`).")
    event_id: str = Field(
        description="The event (`Tenantry-Event-Id`), the same for every endpoint."
    )
    event_type: str
    endpoint: str = Field(description="The endpoint's name in TENANTRY_WEBHOOKS.")
    url: str = Field(description="Where the last attempt went (where it will go, before one).")
    state: str = Field(description="pending, delivered or failed.")
    attempts: int = Field(description="Attempts made (since an admin queued it again).")
    next_attempt_at: dt.datetime | None = Field(description="When it is tried next, if pending.")
    last_status: int | None = Field(description="The HTTP status of the last attempt, if any.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    payload: dict[str, Any] = Field(description="The body sent: id, type, created, data.")


class DeliveryList(Wire):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


def delivery_out(d: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event_id=d.event_id,
        event_type=d.event_type,
        endpoint=d.endpoint,
        url=d.url,
        state=d.state,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        payload=d.payload,
    )
