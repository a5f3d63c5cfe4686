"""Invoices as plain data, and the arithmetic from lines to totals.

An invoice is a list of lines, each rounded once to minor units with its
unrounded amount kept beside it (Lago's fees); then, in this order:

1. `subtotal` = the sum of the rounded lines (credits are negative lines);
2. `discount` = the coupon's share of the base and metered lines (not of
   prorations, late usage or credits), rounded once, and never more than a
   positive subtotal, so no discount makes a total negative;
3. one tax amount per rate on `subtotal - discount`, rounded once per rate:
   an exclusive rate adds `p/100` of it, an inclusive rate is the part
   `p/(100+p)` already inside it; a reverse-charged invoice has rate 0;
4. `total` = `subtotal - discount` + the exclusive taxes.

`amount_due` is what is left of a positive total after payments and credit
notes. Pure: plain data in, frozen results out; no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from tenantry.core.money import divide, multiply, round_minor
from tenantry.core.periods import Period


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # still collecting late events; no number yet
    OPEN = "open"  # finalized and numbered; waits for payment
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


FINAL_STATES = frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE})


class LineKind(StrEnum):
    BASE = "base"  # the plan's recurring price, for the period that starts (in advance)
    METERED = "metered"  # usage of the period that ended (in arrears)
    LATE_USAGE = "late_usage"  # usage that arrived after its period's invoice was final
    PRORATION = "proration"  # a plan change mid-period: a credit and a charge line
    CANCEL_CREDIT = "cancel_credit"  # the unused base fee of a subscription canceled now


@dataclass(frozen=True)
class TierPart:
    """The part of a metered line one tier accounts for."""

    tier: int  # 1-based
    up_to: int | None  # the tier's upper bound; None for the last
    units: Decimal  # units priced in this tier (for `volume`: all of them, in the one tier)
    unit_amount: Decimal  # minor units per unit
    flat_amount: int  # minor units, charged once when the tier holds a unit
    amount: Decimal  # units × unit_amount + flat_amount, unrounded


@dataclass(frozen=True)
class Line:
    kind: LineKind
    description: str
    period: Period  # the service period the line charges for
    unrounded: Decimal  # exact amount in minor units
    amount: int  # rounded once, half up
    metric: str | None = None
    quantity: Decimal | None = None  # the metric's figure for the period (or the delta, late)
    billable: Decimal | None = None  # quantity past the allowance
    unit_amount: Decimal | None = None  # per unit (metered) or the full-period price (base)
    tiers: tuple[TierPart, ...] = ()

    @property
    def is_credit(self) -> bool:
        return self.amount < 0


@dataclass(frozen=True)
class Discount:
    """What a coupon takes off one invoice."""

    name: str
    percent_off: Decimal | None = None
    amount_off: int | None = None  # minor units, in the invoice's currency


@dataclass(frozen=True)
class TaxRate:
    name: str
    percentage: Decimal
    inclusive: bool = False


@dataclass(frozen=True)
class TaxAmount:
    name: str
    percentage: Decimal  # 0 when reverse-charged
    inclusive: bool
    taxable: int  # the discounted subtotal the rate applies to
    unrounded: Decimal
    amount: int


@dataclass(frozen=True)
class Totals:
    subtotal: int
    discount: int
    discount_unrounded: Decimal
    taxes: tuple[TaxAmount, ...]
    tax: int  # sum of the exclusive taxes: what tax adds to the total
    total: int
    reverse_charge: bool


_DISCOUNTED = frozenset({LineKind.BASE, LineKind.METERED})


def discount_amount(subtotal: int, discount: Discount | None) -> tuple[Decimal, int]:
    """The coupon's share of the subtotal (unrounded, rounded): never more than a
    positive subtotal, nothing off a zero or negative one."""
    if discount is None or subtotal <= 0:
        return Decimal(0), 0
    if discount.percent_off is not None:
        unrounded = divide(multiply(subtotal, discount.percent_off), 100)
    else:
        unrounded = Decimal(discount.amount_off or 0)
    unrounded = min(unrounded, Decimal(subtotal))
    return unrounded, min(round_minor(unrounded), subtotal)


def tax_amount(taxable: int, rate: TaxRate, *, reverse_charge: bool) -> TaxAmount:
    if reverse_charge:
        return TaxAmount(rate.name, Decimal(0), rate.inclusive, taxable, Decimal(0), 0)
    if rate.inclusive:
        unrounded = divide(multiply(taxable, rate.percentage), 100 + rate.percentage)
    else:
        unrounded = divide(multiply(taxable, rate.percentage), 100)
    return TaxAmount(
        rate.name, rate.percentage, rate.inclusive, taxable, unrounded, round_minor(unrounded)
    )


def totals(
    lines: Sequence[Line],
    *,
    discount: Discount | None = None,
    tax_rates: Sequence[TaxRate] = (),
    reverse_charge: bool = False,
) -> Totals:
    """The invoice's totals from its lines (see the module docstring for the order)."""
    subtotal = sum(line.amount for line in lines)
    discounted = sum(line.amount for line in lines if line.kind in _DISCOUNTED)
    discount_unrounded, discount_rounded = discount_amount(discounted, discount)
    # Credits on the same invoice (a proration, a cancellation) may leave less than that.
    cap = max(subtotal, 0)
    discount_unrounded = min(discount_unrounded, Decimal(cap))
    discount_rounded = min(discount_rounded, cap)
    taxable = subtotal - discount_rounded
    taxes = tuple(tax_amount(taxable, rate, reverse_charge=reverse_charge) for rate in tax_rates)
    exclusive = sum(t.amount for t in taxes if not t.inclusive)
    return Totals(
        subtotal=subtotal,
        discount=discount_rounded,
        discount_unrounded=discount_unrounded,
        taxes=taxes,
        tax=exclusive,
        total=taxable + exclusive,
        reverse_charge=reverse_charge,
    )


def prorated(amount: int, period: Period, since: dt.datetime) -> tuple[Decimal, int]:
    """The share of a full-period `amount` for `[since, period.end)`, by the second:
    `amount × remaining seconds / period seconds`, unrounded and rounded once."""
    second = dt.timedelta(seconds=1)  # whole seconds, by integer division: no float
    remaining = max(0, (period.end - max(since, period.start)) // second)
    length = (period.end - period.start) // second
    unrounded = divide(multiply(amount, remaining), length) if length else Decimal(0)
    return unrounded, round_minor(unrounded)


@dataclass(frozen=True)
class Party:
    """A seller or a buyer, as printed on the invoice."""

    name: str
    address: tuple[str, ...] = ()  # printed lines
    country: str | None = None
    tax_id: str = ""
    email: str = ""


@dataclass(frozen=True)
class Payment:
    amount: int
    method: str
    reference: str
    paid_at: dt.datetime


@dataclass(frozen=True)
class Invoice:
    """An invoice as stored and shown: what the API serializes and the PDF prints."""

    id: str
    number: str | None
    status: InvoiceStatus
    currency: str
    seller: Party
    buyer: Party
    period: Period  # what the invoice covers: from the earliest line's start to the boundary
    lines: tuple[Line, ...]
    totals: Totals
    discount_name: str | None
    created_at: dt.datetime
    issued_at: dt.datetime | None  # when finalized
    due_at: dt.datetime | None
    amount_paid: int = 0
    amount_credited: int = 0  # credit notes
    payments: tuple[Payment, ...] = field(default_factory=tuple)
    plan: str = ""
    tenant: str = ""  # the Tenant as `<namespace>/<name>`, for people
    subscription: str = ""
    tenant_uid: str = ""
    boundary: dt.datetime | None = None  # the subscription boundary it bills (its key)

    @property
    def amount_due(self) -> int:
        if self.status in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE):
            return 0
        return max(0, self.totals.total - self.amount_paid - self.amount_credited)
