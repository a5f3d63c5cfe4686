"""What Stripe charges for a Tenantry invoice, and on which Stripe invoice. Pure.

Tenantry prices, Stripe collects. A Stripe Subscription carries only the Plan's
base price, anchored on Tenantry's next period boundary with proration off,
so Stripe opens a draft at each boundary from its billing cycle anchor on,
holding the base fee of the period that starts, and charges nothing before
the anchor. Which Stripe invoice collects an invoice of Tenantry's
(`collection_for`):

- Stripe's own cycle draft, for a boundary at or after the anchor: every line
  but the base fee becomes an item on it;
- a one-off Stripe invoice Tenantry makes, for an invoice no draft comes for:
  one at a boundary before the anchor (the first paid period, or the one
  running when the Stripe Subscription was made), or the final invoice (the
  Stripe Subscription ends with no invoice of its own). Every line, the base
  fee included, is an item on it;
- none, for an invoice from before the Stripe Subscription started (less a
  day: Tenantry's first boundary is that day's 00:00 UTC, Stripe's start a
  little later): it is collected as without Stripe.

An item has the line's rounded amount: base fee, metered and late usage,
prorations (Stripe's are off), a cancellation credit; then the discount as
one negative item and one item per exclusive tax rate (an inclusive tax is
already inside the prices). Coupons and tax rates are not attached to the
Stripe Subscription: Stripe would compute them a second time, with its own
rounding. So, by construction, Stripe's total is Tenantry's: the items, plus
the base price on Stripe's cycle draft.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from tenantry.core.invoices import Invoice, LineKind
from tenantry.core.money import plain
from tenantry.core.periods import Period

STARTED_LEEWAY = dt.timedelta(days=1)
"""How long after Tenantry's boundary the Stripe Subscription may have started for the
invoice at that boundary to be Stripe's to collect: Tenantry's boundaries are at 00:00
UTC, and the operator makes the Stripe Subscription later on a subscription's first day."""


@dataclass(frozen=True)
class StripeCycle:
    """A Stripe Subscription's schedule, as its events tell (`start_date`,
    `billing_cycle_anchor`)."""

    started_at: dt.datetime
    anchor: dt.datetime  # Stripe's first draft; none before it


class Collection(StrEnum):
    """Which Stripe invoice collects one of Tenantry's invoices."""

    CYCLE = "cycle"  # Stripe's own cycle draft, which holds the base fee
    ONE_OFF = "one_off"  # a one-off Stripe invoice Tenantry makes, with every line
    TENANTRY = "tenantry"  # none: from before Stripe started, collected as without it
    UNKNOWN = "unknown"  # the Stripe Subscription's schedule is not known (yet)

    @property
    def stripe_holds_base(self) -> bool:
        """Whether the Stripe invoice linked to it holds the base fee already. Only a cycle
        draft does; one linked while the schedule is unknown is taken for one, as was the
        rule before schedules were stored."""
        return self in (Collection.CYCLE, Collection.UNKNOWN)


def collection_for(boundary: dt.datetime, ended: bool, cycle: StripeCycle | None) -> Collection:
    """How Tenantry's invoice at `boundary` is collected; `ended`: the subscription's terms
    ended at or before it (the final invoice)."""
    if cycle is None:
        return Collection.UNKNOWN
    if boundary <= cycle.started_at - STARTED_LEEWAY:
        return Collection.TENANTRY
    if ended or boundary < cycle.anchor:
        return Collection.ONE_OFF
    return Collection.CYCLE


@dataclass(frozen=True)
class StripeItem:
    """One invoice item to add to a Stripe invoice."""

    key: str  # stable per Tenantry invoice and line: the idempotency key's tail
    description: str
    amount: int  # minor units, may be negative
    period: Period | None


def items_for(invoice: Invoice, *, with_base: bool = False) -> list[StripeItem]:
    """The items Stripe's invoice needs: beside the base price a cycle draft holds, or
    `with_base`, every line (a one-off)."""
    found: list[StripeItem] = []
    for position, line in enumerate(invoice.lines, start=1):
        if line.kind == LineKind.BASE and not with_base:
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
    """What Stripe charges: its base price line (0 on a one-off) plus the items."""
    return base + sum(item.amount for item in items)
