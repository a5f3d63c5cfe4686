"""Tenantry prices, Stripe collects: each finalized invoice of Tenantry's onto a Stripe invoice.

Invariant: each invoice of Tenantry's is collected by at most one Stripe
invoice, whose total is Tenantry's. Which one is decided without a guess, by
`collection_for` (core/stripe_items.py), from the Stripe Subscription's start
and billing cycle anchor that the webhook worker records from its
`customer.subscription.*` events. Stripe opens a draft at each boundary from
its anchor on, and at none before (proration is off), so:

- at or after the anchor, Stripe's cycle draft collects it. On
  `invoice.created` the webhook worker links the draft to Tenantry's invoice
  for its boundary and holds it (`hold_draft`: `auto_advance` off), so Stripe
  does not finalize it on its own an hour later;
- before the anchor (the first paid period, or the one running when the
  Stripe Subscription was made), and for the final invoice (the subscription's
  terms ended at or before its boundary: a deleted Subscription's Stripe
  Subscription is canceled without an invoice, one canceled at the period's
  end ends with none), no draft comes: `open_one_offs` makes a one-off Stripe
  invoice for the customer (charged automatically, `pending_invoice_items_behavior`
  exclude, `auto_advance` off, metadata naming Tenantry's invoice and
  subscription) and links it. Only for an invoice that is open, with something
  due and nothing paid or credited on it yet (Stripe charges the whole total;
  whoever recorded a payment by hand collects the rest by hand), whose
  subscription has a Stripe customer;
- an invoice at a boundary a day or more before the Stripe Subscription
  started, from before Stripe was switched on for it, is not Stripe's: it is
  collected as without Stripe. While the schedule is unknown (no event of the
  Stripe Subscription handled yet) no one-off is made.

Once Tenantry's invoice is final (after its own grace window, so late events
are in it), `push_finalized` adds its lines to the linked Stripe invoice as
invoice items (`items_for`): every line but the base fee on a cycle draft,
which holds it as its Subscription's price; every line on any other (a
one-off, or a draft Stripe opened before its anchor, which charges nothing).
Then the discount and the exclusive taxes; then it finalizes the invoice and
Stripe collects. Stripe's total is Tenantry's, by construction; Stripe's invoice
number is recorded beside Tenantry's.

Every call is idempotent, its key derived from Tenantry's invoice id (and the
line): a one-off is created under one key, items under theirs, and a Stripe
invoice already finalized is read, not finalized again. A crash or a Stripe
error between two steps is finished by the next pass: a one-off made but not
linked is made again under its key, so Stripe answers with the same invoice
(Stripe keeps a key a day; the one-off's `invoice.created`, which names
Tenantry's invoice, links it too); one linked but not finished is finished. A
one-off that finds a Stripe invoice linked meanwhile is deleted (a draft).
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.billing.service import BillingService
from tenantry.api.stripe import repository as repo
from tenantry.core.stripe_items import Collection, StripeCycle, collection_for, items_for

log = logging.getLogger("tenantry.api.stripe")

INVOICE_KEY = "tenantry_invoice_id"
"""Metadata naming Tenantry's invoice (handlers.INVOICE_KEY: the webhook worker links by it)."""
SUBSCRIPTION_KEY = "tenantry_subscription_uid"
"""Metadata naming Tenantry's subscription (handlers.SUBSCRIPTION_KEY)."""

_SCHEDULE_FROM = (
    " s.stripe_customer_id, s.stripe_started_at, s.stripe_cycle_anchor,"
    " i.final OR COALESCE(s.ended_at <= i.boundary, false) AS ended"
    " FROM invoices i JOIN subscriptions s ON s.uid = i.subscription_uid"
)
"""What `collection_for` reads of an invoice (i) and its subscription (s)."""
_LINKED = (
    "SELECT i.id, i.stripe_invoice_id, i.currency, i.boundary,"
    + _SCHEDULE_FROM
    + " WHERE i.stripe_invoice_id IS NOT NULL AND i.stripe_invoice_number IS NULL"
    " AND i.status <> 'draft' ORDER BY i.issued_at"
)
"""Tenantry's finalized invoices whose Stripe invoice is not finished yet."""
_UNLINKED = (
    "SELECT i.id, i.number, i.currency, i.boundary, i.subscription_uid,"
    + _SCHEDULE_FROM
    + " WHERE i.status = 'open' AND i.stripe_invoice_id IS NULL"
    " AND i.total > 0 AND i.amount_paid = 0 AND i.amount_credited = 0"
    " AND s.stripe_customer_id IS NOT NULL ORDER BY i.issued_at"
)
"""Tenantry's open invoices no Stripe invoice collects yet, nothing paid or credited on them,
of subscriptions with a Stripe customer."""


def _collection(row: Any) -> Collection:
    cycle = None
    if row.stripe_started_at is not None and row.stripe_cycle_anchor is not None:
        cycle = StripeCycle(row.stripe_started_at, row.stripe_cycle_anchor)
    return collection_for(row.boundary, row.ended, cycle)


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
        """Open the one-offs due, then finish every Stripe invoice whose Tenantry invoice is
        final: items, then finalize. How many were finished."""
        await self.open_one_offs()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(_LINKED))).all()
        pushed = 0
        for row in rows:
            with_base = not _collection(row).stripe_holds_base
            try:
                await self._push(str(row.id), row.stripe_invoice_id, row.currency,
                                 row.stripe_customer_id, with_base=with_base)  # fmt: skip
                pushed += 1
            except stripe.StripeError as error:
                # Left for the next pass: the calls are idempotent.
                log.warning("Could not finish Stripe invoice %s: %s", row.stripe_invoice_id,
                            error.user_message or type(error).__name__)  # fmt: skip
        return pushed

    async def open_one_offs(self) -> int:
        """A one-off Stripe invoice, linked, for each open invoice no Stripe draft comes for
        (see the module's docstring). How many were opened."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(_UNLINKED))).all()
        opened = 0
        for row in rows:
            if _collection(row) != Collection.ONE_OFF:
                continue  # Stripe's draft is to come, or Stripe is not to collect it
            try:
                if await self._open_one_off(row):
                    opened += 1
            except stripe.StripeError as error:
                log.warning("Could not open a Stripe invoice for invoice %s: %s", row.number,
                            error.user_message or type(error).__name__)  # fmt: skip
        return opened

    async def _open_one_off(self, row: Any) -> bool:
        invoice_id = str(row.id)
        made = await self.client.v1.invoices.create_async(
            {
                "customer": row.stripe_customer_id,
                "currency": row.currency.lower(),
                "collection_method": "charge_automatically",
                "pending_invoice_items_behavior": "exclude",
                "auto_advance": False,  # until `_push` finalizes it, its items in
                "description": f"Invoice {row.number}",
                "metadata": {INVOICE_KEY: invoice_id, SUBSCRIPTION_KEY: row.subscription_uid},
            },
            {"idempotency_key": f"tenantry-one-off-{invoice_id}"},
        )
        async with self.engine.begin() as conn:
            other = await repo.link_invoice(conn, invoice_id, made.id, None)
        if other is not None:
            # A Stripe invoice of Stripe's own was linked meanwhile: it collects instead.
            await self.client.v1.invoices.delete_async(made.id)
            log.warning("Deleted Stripe draft %s: invoice %s is linked to Stripe invoice %s",
                        made.id, row.number, other)  # fmt: skip
            return False
        log.info("Opened Stripe invoice %s for invoice %s (no Stripe draft comes for it)",
                 made.id, row.number)  # fmt: skip
        return True

    async def _push(
        self, invoice_id: str, stripe_invoice: str, currency: str, customer: str | None,
        *, with_base: bool,
    ) -> None:  # fmt: skip
        invoice = await self.billing.invoice(invoice_id)
        for item in items_for(invoice, with_base=with_base):
            params: dict[str, Any] = {
                "invoice": stripe_invoice,
                "amount": item.amount,
                "currency": currency.lower(),
                "description": item.description,
                "discountable": False,
                "metadata": {INVOICE_KEY: invoice.id, "tenantry_item": item.key},
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
