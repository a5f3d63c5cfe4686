"""Tenantry prices, Stripe collects: Tenantry's invoice lines onto Stripe's drafts.

When Stripe opens a subscription's draft invoice (`invoice.created`), the
webhook worker links it to Tenantry's invoice for the same boundary and holds
it (`hold_draft`: `auto_advance` off), so Stripe does not finalize it on its
own an hour later. When Tenantry
finalizes its invoice (after its own grace window, so late events are in it),
`push_finalized` adds every line but the base fee, the discount and the
exclusive taxes to Stripe's draft as invoice items (core/stripe_items.py), then
finalizes the draft and lets Stripe collect. Stripe's total is then
Tenantry's, by construction; Stripe's invoice number is recorded beside
Tenantry's.

Every call is idempotent: items carry keys derived from Tenantry's invoice id
and the line, and a draft already finalized is read, not finalized again. A
crash between two steps is finished by the next pass.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.billing.service import BillingService
from tenantry.core.stripe_items import items_for

log = logging.getLogger("tenantry.api.stripe")


async def hold_draft(client: stripe.StripeClient, stripe_invoice: str) -> None:
    """Keep Stripe from finalizing a draft on its own: Tenantry finalizes it (`push_finalized`)
    once its own invoice is final, late usage included."""
    await client.v1.invoices.update_async(
        stripe_invoice,
        {"auto_advance": False},
        {"idempotency_key": f"tenantry-hold-{stripe_invoice}"},
    )


class Collector:
    def __init__(self, client: stripe.StripeClient, engine: AsyncEngine, billing: BillingService):
        self.client = client
        self.engine = engine
        self.billing = billing

    async def push_finalized(self) -> int:
        """Finish every Stripe draft whose Tenantry invoice is final: items, then finalize."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT i.id, i.stripe_invoice_id, i.currency, s.stripe_customer_id"
                        " FROM invoices i JOIN subscriptions s ON s.uid = i.subscription_uid"
                        " WHERE i.stripe_invoice_id IS NOT NULL AND i.stripe_invoice_number IS NULL"
                        " AND i.status <> 'draft' ORDER BY i.issued_at"
                    )
                )
            ).all()
        pushed = 0
        for row in rows:
            try:
                await self._push(str(row.id), row.stripe_invoice_id, row.currency,
                                 row.stripe_customer_id)  # fmt: skip
                pushed += 1
            except stripe.StripeError as error:
                # Left for the next pass: the calls are idempotent.
                log.warning("Could not finish Stripe invoice %s: %s", row.stripe_invoice_id,
                            error.user_message or type(error).__name__)  # fmt: skip
        return pushed

    async def _push(
        self, invoice_id: str, stripe_invoice: str, currency: str, customer: str | None
    ) -> None:
        invoice = await self.billing.invoice(invoice_id)
        for item in items_for(invoice):
            params: dict[str, Any] = {
                "invoice": stripe_invoice,
                "amount": item.amount,
                "currency": currency.lower(),
                "description": item.description,
                "discountable": False,
                "metadata": {"tenantry_invoice_id": invoice.id, "tenantry_item": item.key},
            }
            if customer:
                params["customer"] = customer
            if item.period is not None:
                params["period"] = {
                    "start": int(item.period.start.timestamp()),
                    "end": int(item.period.end.timestamp()),
                }
            await self.client.v1.invoice_items.create_async(
                params,  # type: ignore[arg-type]  # a TypedDict the literal satisfies
                {"idempotency_key": f"tenantry-item-{invoice.id}-{item.key}"},
            )
        current = await self.client.v1.invoices.retrieve_async(stripe_invoice)
        if current.status == "draft":
            current = await self.client.v1.invoices.finalize_invoice_async(
                stripe_invoice,
                {"auto_advance": True},
                {"idempotency_key": f"tenantry-finalize-{invoice.id}"},
            )
        async with self.engine.begin() as conn:
            await conn.execute(
                text("UPDATE invoices SET stripe_invoice_number = :n WHERE id = CAST(:id AS uuid)"),
                {"n": current.number or stripe_invoice, "id": invoice.id},
            )
        log.info("Stripe invoice %s finalized for Tenantry invoice %s", current.number,
                 invoice.number)  # fmt: skip
