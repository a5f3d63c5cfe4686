"""What Stripe charges for a Tenantry invoice: its items, computed from the invoice. Pure.

Tenantry prices, Stripe collects. A Stripe Subscription carries only the Plan's
base price, so Stripe's own draft for a period already holds the base fee;
every other line of Tenantry's invoice becomes one Stripe invoice item with
the same rounded amount: metered and late usage, prorations (Stripe's are
turned off), a cancellation credit, the discount as one negative item, and one
item per exclusive tax rate (an inclusive tax is already inside the prices).
Coupons and tax rates are not attached to the Stripe Subscription: Stripe would
compute them a second time, with its own rounding.

So, by construction, Stripe's total is Tenantry's: the base price plus these items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tenantry.core.invoices import Invoice, LineKind
from tenantry.core.money import plain
from tenantry.core.periods import Period


@dataclass(frozen=True)
class StripeItem:
    """One invoice item to add to Stripe's draft."""

    key: str  # stable per Tenantry invoice and line: the idempotency key's tail
    description: str
    amount: int  # minor units, may be negative
    period: Period | None


def items_for(invoice: Invoice) -> list[StripeItem]:
    """The items Stripe's draft needs beside the base price it already holds."""
    found: list[StripeItem] = []
    for position, line in enumerate(invoice.lines, start=1):
        if line.kind == LineKind.BASE:
            continue  # the Stripe Subscription's price
        found.append(
            StripeItem(
                f"line-{position}",
                _describe(line.description, line.quantity),
                line.amount,
                line.period,
            )
        )
    if invoice.totals.discount:
        name = invoice.discount_name or "Discount"
        found.append(StripeItem("discount", f"Discount: {name}", -invoice.totals.discount, None))
    for number, tax in enumerate(invoice.totals.taxes, start=1):
        if tax.inclusive or tax.amount == 0:
            continue
        label = f"{tax.name} {plain(tax.percentage)}% on {tax.taxable}"
        found.append(StripeItem(f"tax-{number}", label, tax.amount, None))
    return found


def _describe(description: str, quantity: object) -> str:
    return description if quantity is None else f"{description} × {quantity}"


def base_amount(invoice: Invoice) -> int:
    """What the Stripe Subscription's price contributes to this invoice."""
    return sum(line.amount for line in invoice.lines if line.kind == LineKind.BASE)


def stripe_total(base: int, items: Sequence[StripeItem]) -> int:
    """What Stripe charges: its base price line plus the items."""
    return base + sum(item.amount for item in items)
