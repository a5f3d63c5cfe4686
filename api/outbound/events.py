"""Enqueueing the API's events (invoices, usage) in the transaction of the change."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.api.billing import repository as billing_repo
from tenantry.api.billing.schemas import invoice_out
from tenantry.core import outbound
from tenantry.core.invoices import Invoice, InvoiceStatus
from tenantry.db import outbox


class Events:
    """What the configured endpoints are sent; with none, every call is a no-op."""

    def __init__(self, endpoints: Sequence[outbound.Endpoint]) -> None:
        self.endpoints = tuple(endpoints)

    def wants(self, event_type: str) -> bool:
        return bool(outbound.wanting(self.endpoints, event_type))

    async def emit(
        self,
        conn: AsyncConnection,
        event_type: str,
        data: Mapping[str, Any],
        now: dt.datetime,
        *,
        key: str | None = None,
    ) -> int:
        """Enqueue in `conn`'s transaction; `key` (what the event is about) makes a second
        record of the same happening a no-op. How many deliveries are new."""
        if not self.wants(event_type):
            return 0
        event = outbound.event(event_type, data, now, key=key)
        return await outbox.enqueue(conn, self.endpoints, event)

    async def invoice(
        self,
        conn: AsyncConnection,
        event_type: str,
        invoice: Invoice,
        now: dt.datetime,
        *,
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """An invoice event; `data.invoice` is the invoice as the admin API shows it.

        Finalized and paid happen once per invoice, so their key is the invoice's id;
        `invoice.payment_failed` (from Stripe) passes its own (the Stripe event's id)."""
        if not self.wants(event_type):
            return
        wire = invoice_out(invoice).model_dump(mode="json", by_alias=True)
        await self.emit(
            conn, event_type, {"invoice": wire, **(extra or {})}, now,
            key=key or (None if event_type == outbound.INVOICE_PAYMENT_FAILED else invoice.id),
        )  # fmt: skip

    async def finalized(
        self, conn: AsyncConnection, invoice_ids: Sequence[str], now: dt.datetime
    ) -> None:
        """`invoice.finalized` for invoices just finalized, and `invoice.paid` for those
        that owed nothing and were paid at once."""
        if not (self.wants(outbound.INVOICE_FINALIZED) or self.wants(outbound.INVOICE_PAID)):
            return
        for invoice_id in invoice_ids:
            invoice = await billing_repo.get_invoice(conn, invoice_id)
            assert invoice is not None, invoice_id
            await self.invoice(conn, outbound.INVOICE_FINALIZED, invoice, now)
            if invoice.status == InvoiceStatus.PAID:
                await self.invoice(conn, outbound.INVOICE_PAID, invoice, now)
