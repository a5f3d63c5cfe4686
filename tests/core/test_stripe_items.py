"""What Stripe would charge for a Tenantry invoice equals it, line for line; and which
Stripe invoice collects it.

On Stripe's cycle draft, Stripe holds the base price on its Subscription and
every other line, the discount and each exclusive tax are invoice items; on a
one-off, the base fee is an item too (core/stripe_items.py). Checked on random
subscriptions: plans with metered prices, plan changes, coupons, inclusive and
exclusive taxes, reverse charge, cancellations.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry.core import lifecycle
from tenantry.core.invoices import Invoice, InvoiceStatus, LineKind, Party, TaxRate, totals
from tenantry.core.lifecycle import CouponTerms, PlanChange, Terms
from tenantry.core.resources import CouponSpec, PlanSpec
from tenantry.core.stripe_items import (
    Collection,
    StripeCycle,
    base_amount,
    collection_for,
    items_for,
    stripe_total,
)

UTC = dt.UTC


def plan(amount: int, unit: str, currency: str = "EUR") -> PlanSpec:
    return PlanSpec.model_validate(
        {
            "displayName": f"Plan {amount}",
            "price": {"amount": amount, "currency": currency, "interval": "month"},
            "metrics": [{"name": "calls"}, {"name": "seats", "aggregation": "max"}],
            "meteredPrices": [
                {"metric": "calls", "model": "per_unit", "unitAmount": unit, "allowance": 100},
                {
                    "metric": "seats",
                    "model": "graduated",
                    "tiers": [
                        {"upTo": 5, "unitAmount": "0", "flatAmount": 0},
                        {"unitAmount": "250", "flatAmount": 99},
                    ],
                },
            ],
        }
    )


def invoice_of(terms: Terms, at: dt.datetime, usage: dict[str, int], seller: str) -> Invoice:
    boundary = lifecycle.boundaries(terms, at)[-1]
    draft = lifecycle.draft_invoice(terms, boundary, usage, credit_unused_on_cancel=True)
    discount = lifecycle.discount_for(terms, boundary, 0, terms.currency)
    figures = totals(
        draft.lines,
        discount=discount,
        tax_rates=terms.tax_rates,
        reverse_charge=lifecycle.reverse_charged(terms.buyer, seller),
    )
    return Invoice(
        id="inv", number="INV-1", status=InvoiceStatus.OPEN, currency=terms.currency,
        seller=Party("Seller", country=seller), buyer=terms.buyer, period=draft.period,
        lines=draft.lines, totals=figures, discount_name=discount.name if discount else None,
        created_at=at, issued_at=at, due_at=at,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(0, 10**7),
    new_amount=st.integers(0, 10**7),
    unit=st.sampled_from(["0.5", "1", "0.000001", "12.345678901234"]),
    calls=st.integers(0, 10**9),
    seats=st.integers(0, 40),
    change_day=st.none() | st.integers(1, 27),
    percent=st.none() | st.sampled_from(["10", "12.5", "100"]),
    rates=st.lists(st.tuples(st.sampled_from(["7", "19", "20.5"]), st.booleans()), max_size=2),
    buyer_country=st.sampled_from(["DE", "FR"]),
    tax_id=st.booleans(),
    canceled=st.booleans(),
)
def test_stripe_charges_what_tenantry_invoices(
    amount: int, new_amount: int, unit: str, calls: int, seats: int, change_day: int | None,
    percent: str | None, rates: list[tuple[str, bool]], buyer_country: str, tax_id: bool,
    canceled: bool,
) -> None:  # fmt: skip
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    old, new = plan(amount, unit), plan(new_amount, unit)
    changes = ()
    if change_day is not None:
        changes = (
            PlanChange(dt.datetime(2026, 2, change_day, 12, tzinfo=UTC), "a", old, "b", new),
        )
    coupon = None
    if percent is not None:
        spec = CouponSpec.model_validate({"percentOff": percent, "duration": "forever"})
        coupon = CouponTerms("c", spec, start)
    terms = Terms(
        uid="s", namespace="n", name="s", tenant_uid="t", tenant_name="t",
        plan_name="b" if changes else "a", plan=new if changes else old, started_at=start,
        anchor_day=1, coupon=coupon,
        tax_rates=tuple(TaxRate(f"T{p}", Decimal(p), inclusive) for p, inclusive in rates),
        buyer=Party("Buyer", country=buyer_country, tax_id="X1" if tax_id else ""),
        plan_changes=changes,
        ended_at=dt.datetime(2026, 3, 9, tzinfo=UTC) if canceled else None,
    )  # fmt: skip
    invoice = invoice_of(terms, dt.datetime(2026, 3, 10, tzinfo=UTC), {"calls": calls,
                         "seats": seats}, "DE")  # fmt: skip

    items = items_for(invoice)
    assert stripe_total(base_amount(invoice), items) == invoice.totals.total
    # Line for line: each line but the base is one item of the same amount.
    lines = [line for line in invoice.lines if line.kind != LineKind.BASE]
    assert [i.amount for i in items[: len(lines)]] == [line.amount for line in lines]
    # Then the discount, then each exclusive tax that is not zero.
    rest = items[len(lines) :]
    expected = ([-invoice.totals.discount] if invoice.totals.discount else []) + [
        t.amount for t in invoice.totals.taxes if not t.inclusive and t.amount
    ]
    assert [i.amount for i in rest] == expected
    assert len({i.key for i in items}) == len(items), "idempotency keys are unique per invoice"

    # A one-off holds no base price: every line is an item, the base fee too.
    whole = items_for(invoice, with_base=True)
    assert stripe_total(0, whole) == invoice.totals.total
    assert [i.amount for i in whole[: len(invoice.lines)]] == [li.amount for li in invoice.lines]
    assert whole[len(invoice.lines) :] == rest
    # The keys of the lines both share are the same: one line is never two items.
    assert {i.key for i in items} <= {i.key for i in whole}
    assert len({i.key for i in whole}) == len(whole)


def test_an_invoice_of_only_a_base_fee_needs_no_items() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    terms = Terms(
        uid="s", namespace="n", name="s", tenant_uid="t", tenant_name="t", plan_name="a",
        plan=plan(4900, "0.5"), started_at=start, anchor_day=1,
    )  # fmt: skip
    invoice = invoice_of(terms, start, {}, "DE")
    assert items_for(invoice) == []
    assert base_amount(invoice) == invoice.totals.total == 4900


def test_a_first_periods_base_fee_is_an_item_of_its_one_off() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    terms = Terms(
        uid="s", namespace="n", name="s", tenant_uid="t", tenant_name="t", plan_name="a",
        plan=plan(4900, "0.5"), started_at=start, anchor_day=1,
        tax_rates=(TaxRate("VAT", Decimal(19)),),
    )  # fmt: skip
    invoice = invoice_of(terms, start, {}, "DE")
    [base, tax] = items_for(invoice, with_base=True)
    assert (base.key, base.amount, base.period) == ("line-1", 4900, invoice.lines[0].period)
    assert (tax.key, tax.amount) == ("tax-1", 931)
    assert stripe_total(0, [base, tax]) == invoice.totals.total == 5831


def test_stripe_collects_on_its_draft_from_its_anchor_on_and_a_one_off_before() -> None:
    """The rule, boundary by boundary, for a Stripe Subscription made at 10:00 on a
    subscription's first day and anchored at its first period's end."""
    day = dt.timedelta(days=1)
    first = dt.datetime(2026, 1, 1, tzinfo=UTC)
    anchor = dt.datetime(2026, 2, 1, tzinfo=UTC)
    cycle = StripeCycle(started_at=first + dt.timedelta(hours=10), anchor=anchor)
    assert collection_for(first, False, cycle) == Collection.ONE_OFF  # no draft before the anchor
    assert collection_for(anchor, False, cycle) == Collection.CYCLE  # Stripe's first draft
    assert collection_for(anchor + 28 * day, False, cycle) == Collection.CYCLE
    # The final invoice: Stripe's subscription ends with no invoice of its own.
    assert collection_for(anchor + 28 * day, True, cycle) == Collection.ONE_OFF
    assert collection_for(first + 3 * day, True, cycle) == Collection.ONE_OFF
    # From before Stripe was switched on (a day or more before it started): not Stripe's.
    assert collection_for(first - day, False, cycle) == Collection.TENANTRY
    assert collection_for(first - day, True, cycle) == Collection.TENANTRY
    late = StripeCycle(started_at=first + day, anchor=anchor)  # made a day after, at 00:00
    assert collection_for(first, False, late) == Collection.TENANTRY
    # Unknown until an event of the Stripe Subscription is handled: nothing made.
    assert collection_for(first, True, None) == Collection.UNKNOWN
    # Only Stripe's cycle draft holds the base fee; one linked while unknown is taken for one.
    holds = {c: c.stripe_holds_base for c in Collection}
    assert holds == {Collection.CYCLE: True, Collection.UNKNOWN: True,
                     Collection.ONE_OFF: False, Collection.TENANTRY: False}  # fmt: skip
