"""Wire shapes of invoices, payments, credit notes, billing runs and revenue.

Money is integer minor units of the invoice's currency (`exponent` says how
many digits are decimals: USD 2, JPY 0, KWD 3); exact decimals (quantities,
unit prices, unrounded amounts) are strings.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

from tenantry.core.invoices import Invoice, Line, Party, TaxAmount
from tenantry.core.money import exponent, plain
from tenantry.core.revenue import Revenue


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PeriodOut(Wire):
    start: dt.datetime
    end: dt.datetime


class TierOut(Wire):
    tier: int
    up_to: int | None
    units: str
    unit_amount: str
    flat_amount: int
    amount: str = Field(description="Unrounded, minor units.")


class LineOut(Wire):
    kind: str = Field(description="base, metered, late_usage, proration or cancel_credit.")
    description: str
    period: PeriodOut
    metric: str | None = None
    quantity: str | None = None
    billable: str | None = None
    unit_amount: str | None = Field(default=None, description="Minor units per unit.")
    unrounded: str = Field(description="The exact amount before rounding, minor units.")
    amount: int = Field(description="Rounded once, half up, minor units.")
    tiers: list[TierOut] = Field(default_factory=list)


class TaxOut(Wire):
    name: str
    percentage: str
    inclusive: bool
    taxable: int
    unrounded: str
    amount: int


class PartyOut(Wire):
    name: str
    address: list[str]
    country: str | None
    tax_id: str
    email: str


class PaymentOut(Wire):
    amount: int
    method: str
    reference: str
    paid_at: dt.datetime


class InvoiceOut(Wire):
    id: str
    number: str | None = Field(description="Set when the invoice is finalized.")
    status: str = Field(description="draft, open, paid, void or uncollectible.")
    currency: str
    exponent: int = Field(description="Decimal digits of the currency's minor unit.")
    tenant: str
    subscription: str
    plan: str
    period: PeriodOut
    created_at: dt.datetime
    issued_at: dt.datetime | None
    due_at: dt.datetime | None
    lines: list[LineOut]
    subtotal: int
    discount: int
    discount_name: str | None
    taxes: list[TaxOut]
    tax: int = Field(description="Exclusive taxes: what tax adds to the total.")
    total: int
    reverse_charge: bool
    amount_paid: int
    amount_credited: int
    amount_due: int
    seller: PartyOut
    buyer: PartyOut
    payments: list[PaymentOut]


class InvoiceList(Wire):
    invoices: list[InvoiceOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class PaymentIn(Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    amount: Annotated[StrictInt, Field(gt=0, description="Minor units of the invoice currency.")]
    method: Annotated[StrictStr, Field(min_length=1, max_length=64, examples=["bank_transfer"])]
    reference: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=200,
            description="Your reference (bank transaction id…): recording it twice is one payment.",
        ),
    ]
    paid_at: AwareDatetime | None = Field(default=None, description="Default: now.")


class CreditNoteIn(Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    amount: Annotated[StrictInt, Field(gt=0, description="Minor units to credit.")]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]


class CreditNoteOut(Wire):
    number: str
    invoice: InvoiceOut


class TenantSelector(Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    namespace: StrictStr
    name: StrictStr


class RunIn(Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    tenant: TenantSelector | None = Field(default=None, description="One tenant; all if omitted.")


class RunOut(Wire):
    id: int | None
    state: Literal["succeeded", "failed"]
    subscriptions: int
    drafted: int
    finalized: int
    failed: int


def _party(party: Party) -> PartyOut:
    return PartyOut(
        name=party.name,
        address=list(party.address),
        country=party.country,
        tax_id=party.tax_id,
        email=party.email,
    )


def _line(line: Line) -> LineOut:
    return LineOut(
        kind=line.kind.value,
        description=line.description,
        period=PeriodOut(start=line.period.start, end=line.period.end),
        metric=line.metric,
        quantity=None if line.quantity is None else plain(line.quantity),
        billable=None if line.billable is None else plain(line.billable),
        unit_amount=None if line.unit_amount is None else plain(line.unit_amount),
        unrounded=plain(line.unrounded),
        amount=line.amount,
        tiers=[
            TierOut(
                tier=t.tier,
                up_to=t.up_to,
                units=plain(t.units),
                unit_amount=plain(t.unit_amount),
                flat_amount=t.flat_amount,
                amount=plain(t.amount),
            )
            for t in line.tiers
        ],
    )


def _tax(tax: TaxAmount) -> TaxOut:
    return TaxOut(
        name=tax.name,
        percentage=plain(tax.percentage),
        inclusive=tax.inclusive,
        taxable=tax.taxable,
        unrounded=plain(tax.unrounded),
        amount=tax.amount,
    )


def invoice_out(invoice: Invoice) -> InvoiceOut:
    totals = invoice.totals
    return InvoiceOut(
        id=invoice.id,
        number=invoice.number,
        status=invoice.status.value,
        currency=invoice.currency,
        exponent=exponent(invoice.currency),
        tenant=invoice.tenant,
        subscription=invoice.subscription,
        plan=invoice.plan,
        period=PeriodOut(start=invoice.period.start, end=invoice.period.end),
        created_at=invoice.created_at,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        lines=[_line(line) for line in invoice.lines],
        subtotal=totals.subtotal,
        discount=totals.discount,
        discount_name=invoice.discount_name,
        taxes=[_tax(t) for t in totals.taxes],
        tax=totals.tax,
        total=totals.total,
        reverse_charge=totals.reverse_charge,
        amount_paid=invoice.amount_paid,
        amount_credited=invoice.amount_credited,
        amount_due=invoice.amount_due,
        seller=_party(invoice.seller),
        buyer=_party(invoice.buyer),
        payments=[
            PaymentOut(amount=p.amount, method=p.method, reference=p.reference, paid_at=p.paid_at)
            for p in invoice.payments
        ],
    )


class CurrencyRevenueOut(Wire):
    mrr: int = Field(description="Monthly recurring revenue now, minor units.")
    arr: int = Field(description="12 × MRR.")
    month_start_mrr: int
    new: int
    expansion: int
    contraction: int
    churned: int
    past_due: int = Field(description="Open invoices past their due date, minor units.")


class RevenueOut(Wire):
    month: str
    currencies: dict[str, CurrencyRevenueOut]
    subscriptions: dict[str, int] = Field(description="Subscriptions per state now.")


def revenue_out(month: str, figures: Revenue) -> RevenueOut:
    return RevenueOut(
        month=month,
        currencies={
            currency: CurrencyRevenueOut(
                mrr=r.mrr,
                arr=r.arr,
                month_start_mrr=r.month_start_mrr,
                new=r.new,
                expansion=r.expansion,
                contraction=r.contraction,
                churned=r.churned,
                past_due=r.past_due,
            )
            for currency, r in figures.currencies.items()
        },
        subscriptions=dict(figures.states),
    )
