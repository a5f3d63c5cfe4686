"""Webhooks out in the API service: what it enqueues, the worker that delivers, the log."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.errors import Conflict, NotFound
from tenantry.api.outbound.events import Events
from tenantry.api.outbound.settings import WebhookSettings
from tenantry.api.outbound.thresholds import ThresholdWatch
from tenantry.api.outbound.worker import DeliveryWorker
from tenantry.api.tenants.catalog import Tenant
from tenantry.core.clock import Clock
from tenantry.db import audit, outbox
from tenantry.db.audit import Actor

THRESHOLD_CHECK_DELAY = 1.0
"""Seconds after a tenant's usage moved before its thresholds are checked (one check
for all the changes meanwhile)."""


class Outbound:
    def __init__(self, engine: AsyncEngine, settings: WebhookSettings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.events = Events(settings.endpoints)
        self.thresholds = ThresholdWatch(engine, self.events, clock, THRESHOLD_CHECK_DELAY)
        self.worker = DeliveryWorker(engine, settings)

    def start(self) -> None:
        self.worker.start()

    def usage_changed(self, tenant: Tenant) -> None:
        self.thresholds.changed(tenant)

    async def deliveries(
        self,
        *,
        limit: int,
        state: str | None,
        event_type: str | None,
        before: tuple[dt.datetime, str] | None,
    ) -> list[outbox.Delivery]:
        async with self.engine.connect() as conn:
            return await outbox.log(
                conn, limit=limit, state=state, event_type=event_type, before=before
            )

    async def retry(self, delivery_id: str, *, by: Actor) -> outbox.Delivery:
        """Queue a failed delivery again; a pending one is answered as it is."""
        async with self.engine.begin() as conn:
            delivery = await outbox.requeue(conn, delivery_id)
            if delivery is not None and delivery.state == "pending":
                about = {"endpoint": delivery.endpoint, "event": delivery.event_type}
                await audit.record(conn, by, "webhook.delivery_retried", delivery_id, about)
        if delivery is None:
            raise no_delivery(delivery_id)
        if delivery.state == "delivered":
            raise Conflict(
                f"Delivery {delivery_id} was delivered (HTTP {delivery.last_status}): it is not "
                "sent again. Receivers deduplicate on Tenantry-Event-Id, so one delivery is "
                "enough.",
                code="delivery_already_delivered",
                details={"state": delivery.state},
            )
        return delivery

    async def close(self) -> None:
        await self.thresholds.close()
        await self.worker.close()


def no_delivery(delivery_id: str) -> NotFound:
    return NotFound(
        f"There is no webhook delivery {delivery_id} (see GET /v1/admin/webhook-deliveries).",
        code="delivery_not_found",
        details={"id": delivery_id},
    )
