"""Billing runs against the real PostgreSQL: invoices issued once, numbered without
gaps, late usage billed once, payments, voids and credit notes.

The service runs in-process with a clock of the test's own; subscriptions'
terms are stored as the operator stores them, usage as hourly rollups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import FixedClock

from tenantry.api.billing.service import BillingService
from tenantry.api.billing.settings import BillingSettings
from tenantry.api.errors import Conflict, Unprocessable
from tenantry.core.invoices import InvoiceStatus, LineKind, Party, TaxRate
from tenantry.core.lifecycle import Terms
from tenantry.core.periods import Period
from tenantry.core.resources import PlanSpec
from tenantry.db import subscriptions as repository
from tenantry.db.audit import Actor
from tenantry.db.engine import create_engine

UTC = dt.UTC
ADMIN = Actor("admin", "127.0.0.1")
PLAN = PlanSpec.model_validate(
    {
        "displayName": "Pro",
        "price": {"amount": 4900, "currency": "EUR", "interval": "month"},
        "metrics": [{"name": "api_calls", "aggregation": "sum"}],
        "meteredPrices": [
            {
                "metric": "api_calls",
                "model": "graduated",
                "allowance": 1000,
                "tiers": [
                    {"upTo": 1000, "unitAmount": "0.5"},
                    {"unitAmount": "0.25", "flatAmount": 100},
                ],
            }
        ],
    }
)


def first_period(start: dt.datetime) -> Period:
    return Period(start, dt.datetime(start.year, start.month + 1, start.day, tzinfo=UTC))


@pytest.fixture(scope="module")
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database, pool_size=10)
    yield engine
    await engine.dispose()


def service(engine: AsyncEngine, clock: FixedClock, **settings: object) -> BillingService:
    defaults = {
        "seller_name": "Tenantry GmbH",
        "seller_country": "DE",
        "invoice_prefix": f"T{uuid.uuid4().hex[:6].upper()}",  # numbers of this test's own
        "run_interval": 0,
    }
    configured = BillingSettings.model_validate({**defaults, **settings})
    return BillingService(engine, configured, clock)


async def subscribe(
    engine: AsyncEngine,
    started: dt.datetime,
    *,
    plan: PlanSpec = PLAN,
    buyer: Party | None = None,
    tax_rates: tuple[TaxRate, ...] = (),
) -> Terms:
    uid = str(uuid.uuid4())
    terms = Terms(
        uid=uid, namespace="billing", name=f"sub-{uid[:8]}", tenant_uid=f"tenant-{uid}",
        tenant_name=f"t-{uid[:8]}", plan_name="pro", plan=plan, started_at=started,
        anchor_day=started.day, tax_rates=tax_rates,
        buyer=buyer or Party(name="Acme GmbH", country="DE", email="billing@acme.test"),
    )  # fmt: skip
    async with engine.begin() as conn:
        await repository.save_terms(conn, terms)
    return terms


async def report(engine: AsyncEngine, tenant_uid: str, hour: dt.datetime, value: int) -> None:
    """Usage as the writer rolls it up: one hourly row (added to, like the writer does)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO usage_hourly (tenant_uid, metric, hour, aggregation, value, events,"
                " latest_at) VALUES (:t, 'api_calls', :h, 'sum', :v, 1, :h)"
                " ON CONFLICT (tenant_uid, metric, hour) DO UPDATE"
                " SET value = usage_hourly.value + EXCLUDED.value"
            ),
            {"t": tenant_uid, "h": hour, "v": value},
        )


async def invoices(svc: BillingService, terms: Terms) -> list:  # type: ignore[type-arg]
    found = await svc.invoices_of_tenant(terms.tenant_uid, limit=100, before=None)
    return sorted(found, key=lambda i: i.boundary)


async def test_a_subscription_is_invoiced_in_advance_then_in_arrears_once(
    engine: AsyncEngine,
) -> None:
    start = dt.datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    terms = await subscribe(engine, start)
    clock = FixedClock(start + dt.timedelta(minutes=5))
    svc = service(engine, clock)

    result = await svc.run(tenant_uid=terms.tenant_uid)
    # The first period's base fee is due at once (its boundary, 00:00, is past its grace).
    assert (result.drafted, result.finalized) == (1, 1)
    [first] = await invoices(svc, terms)
    assert first.status == InvoiceStatus.OPEN
    assert first.number == f"{svc.settings.invoice_prefix}-000001"
    assert first.due_at == clock.now + dt.timedelta(days=7)
    assert [line.kind for line in first.lines] == [LineKind.BASE]
    assert first.totals.total == 4900
    assert first.lines[0].period.start == dt.datetime(2026, 3, 10, tzinfo=UTC)
    assert first.lines[0].period.end == dt.datetime(2026, 4, 10, tzinfo=UTC)

    # 1,000 included, then 1,000 at 0.5 and 1,500 at 0.25 + a flat 100: 500 + 375 + 100.
    await report(engine, terms.tenant_uid, dt.datetime(2026, 3, 20, 10, tzinfo=UTC), 2000)
    await report(engine, terms.tenant_uid, dt.datetime(2026, 4, 9, 22, tzinfo=UTC), 1000)
    clock.now = dt.datetime(2026, 4, 10, 0, 30, tzinfo=UTC)  # within the grace window
    drafted = await svc.run(tenant_uid=terms.tenant_uid)
    assert (drafted.drafted, drafted.finalized) == (1, 0)
    draft = (await invoices(svc, terms))[-1]
    assert draft.status == InvoiceStatus.DRAFT
    assert draft.number is None
    assert draft.lines[1].quantity == 3000

    # An event of the last hour lands in the draft while it waits.
    await report(engine, terms.tenant_uid, dt.datetime(2026, 4, 9, 23, tzinfo=UTC), 500)
    clock.now = dt.datetime(2026, 4, 10, 2, tzinfo=UTC)
    again = await svc.run(tenant_uid=terms.tenant_uid)
    assert (again.drafted, again.finalized) == (0, 1)
    second = (await invoices(svc, terms))[-1]
    kinds = [line.kind for line in second.lines]
    assert kinds == [LineKind.BASE, LineKind.METERED]
    metered = second.lines[1]
    assert (metered.quantity, metered.billable, metered.amount) == (3500, 2500, 975)
    assert second.totals.total == 4900 + 975
    assert second.number == f"{svc.settings.invoice_prefix}-000002"
    assert second.id == draft.id

    # Nothing new: a third run creates and changes nothing.
    third = await svc.run(tenant_uid=terms.tenant_uid)
    assert (third.drafted, third.finalized) == (0, 0)
    assert len(await invoices(svc, terms)) == 2


async def test_late_usage_is_billed_once_on_the_next_invoice(engine: AsyncEngine) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    terms = await subscribe(engine, start)
    clock = FixedClock(dt.datetime(2026, 2, 1, 2, tzinfo=UTC))
    svc = service(engine, clock)
    await report(engine, terms.tenant_uid, dt.datetime(2026, 1, 15, tzinfo=UTC), 1500)
    await svc.run(tenant_uid=terms.tenant_uid)
    february = (await invoices(svc, terms))[-1]
    assert february.lines[1].amount == 250  # 500 billable at 0.5

    # 600 more calls stamped in January arrive after January's invoice was final.
    await report(engine, terms.tenant_uid, dt.datetime(2026, 1, 31, 23, tzinfo=UTC), 600)
    clock.now = dt.datetime(2026, 3, 1, 2, tzinfo=UTC)
    await svc.run(tenant_uid=terms.tenant_uid)
    march = (await invoices(svc, terms))[-1]
    late = [line for line in march.lines if line.kind == LineKind.LATE_USAGE]
    assert len(late) == 1
    # 2,100 is 1,000 at 0.5 + 100 at 0.25 + flat 100 = 625; billed 250 already.
    assert (late[0].quantity, late[0].amount) == (600, 375)
    assert "2026-01-01" in late[0].description

    clock.now = dt.datetime(2026, 4, 1, 2, tzinfo=UTC)
    await svc.run(tenant_uid=terms.tenant_uid)
    april = (await invoices(svc, terms))[-1]
    assert not [line for line in april.lines if line.kind == LineKind.LATE_USAGE]


async def test_concurrent_runs_issue_each_invoice_once_with_gap_free_numbers(
    engine: AsyncEngine, database: str
) -> None:
    start = dt.datetime(2025, 6, 1, tzinfo=UTC)
    subscriptions = [await subscribe(engine, start + dt.timedelta(days=i)) for i in range(12)]
    clock = FixedClock(dt.datetime(2025, 9, 15, tzinfo=UTC))
    prefix = f"C{uuid.uuid4().hex[:6].upper()}"
    other = create_engine(database, pool_size=5)
    try:
        first = service(engine, clock, invoice_prefix=prefix)
        second = service(other, clock, invoice_prefix=prefix)  # another replica
        results = await asyncio.gather(*(s.run() for s in (first, second, first, second)))
    finally:
        await other.dispose()
    assert all(r.failed == 0 for r in results)
    numbers = []
    for terms in subscriptions:
        found = await invoices(first, terms)
        boundaries = [i.boundary for i in found]
        assert len(boundaries) == len(set(boundaries)) == 4  # at the start and 3 boundaries
        numbers += [i.number for i in found]
    assert sorted(numbers) == [f"{prefix}-{n:06d}" for n in range(1, 49)]
    assert sum(r.finalized for r in results) == 48


async def test_payments_void_and_credit_notes(engine: AsyncEngine) -> None:
    start = dt.datetime(2026, 5, 5, tzinfo=UTC)
    rates = (TaxRate("VAT", Decimal(19)),)
    terms = await subscribe(engine, start, tax_rates=rates)
    clock = FixedClock(start + dt.timedelta(hours=3))
    svc = service(engine, clock)
    await svc.run(tenant_uid=terms.tenant_uid)
    [invoice] = await invoices(svc, terms)
    assert (invoice.totals.subtotal, invoice.totals.tax, invoice.totals.total) == (4900, 931, 5831)

    paid = await svc.record_payment(invoice.id, 3000, "bank_transfer", "ref-1", None, by=ADMIN)
    assert (paid.status, paid.amount_due) == (InvoiceStatus.OPEN, 2831)
    again = await svc.record_payment(invoice.id, 3000, "bank_transfer", "ref-1", None, by=ADMIN)
    assert again.amount_due == 2831  # the same reference twice is one payment
    with pytest.raises(Unprocessable, match="exceeds the amount due"):
        await svc.record_payment(invoice.id, 5000, "card", "ref-2", None, by=ADMIN)
    done = await svc.record_payment(invoice.id, 2831, "card", "ref-2", None, by=ADMIN)
    assert (done.status, done.amount_due) == (InvoiceStatus.PAID, 0)
    with pytest.raises(Conflict, match="cannot become void"):
        await svc.change_status(invoice.id, InvoiceStatus.VOID, by=ADMIN)

    credited, number = await svc.credit(invoice.id, 500, "Outage on May 7", by=ADMIN)
    assert number.startswith("CN-")
    assert credited.amount_credited == 500
    with pytest.raises(Unprocessable, match="exceeds"):
        await svc.credit(invoice.id, 6000, "too much", by=ADMIN)


async def test_reverse_charge_and_void(engine: AsyncEngine) -> None:
    start = dt.datetime(2026, 5, 5, tzinfo=UTC)
    buyer = Party(name="Acme SARL", country="FR", tax_id="FR12345678901")
    terms = await subscribe(engine, start, buyer=buyer, tax_rates=(TaxRate("VAT", Decimal(19)),))
    clock = FixedClock(start + dt.timedelta(hours=3))
    svc = service(engine, clock)
    await svc.run(tenant_uid=terms.tenant_uid)
    [invoice] = await invoices(svc, terms)
    assert invoice.totals.reverse_charge
    assert invoice.totals.tax == 0
    assert invoice.totals.total == 4900
    lost = await svc.change_status(invoice.id, InvoiceStatus.UNCOLLECTIBLE, by=ADMIN)
    assert (lost.status, lost.amount_due) == (InvoiceStatus.UNCOLLECTIBLE, 0)
    with pytest.raises(Conflict, match="payments are recorded against open invoices"):
        await svc.record_payment(invoice.id, 100, "card", "late", None, by=ADMIN)
    voided = await svc.change_status(invoice.id, InvoiceStatus.VOID, by=ADMIN)
    assert (voided.status, voided.amount_due, voided.number) == (
        InvoiceStatus.VOID, 0, invoice.number,
    )  # fmt: skip


async def test_a_canceled_subscription_gets_a_final_invoice_without_a_new_base_fee(
    engine: AsyncEngine,
) -> None:
    start = dt.datetime(2026, 7, 1, tzinfo=UTC)
    terms = await subscribe(engine, start)
    clock = FixedClock(dt.datetime(2026, 7, 16, 12, tzinfo=UTC))
    svc = service(engine, clock, credit_unused_on_cancel=True)
    await report(engine, terms.tenant_uid, dt.datetime(2026, 7, 10, tzinfo=UTC), 1200)
    ended = dataclasses.replace(terms, ended_at=clock.now, end_reason="deleted")
    async with engine.begin() as conn:
        await repository.save_terms(conn, ended)
    clock.now += dt.timedelta(hours=2)
    await svc.run(tenant_uid=terms.tenant_uid)
    _, final = await invoices(svc, terms)
    kinds = [line.kind for line in final.lines]
    assert kinds == [LineKind.METERED, LineKind.CANCEL_CREDIT]
    assert final.lines[0].period == first_period(start)
    assert final.lines[0].amount == 100  # 200 billable at 0.5
    # 15.5 of 31 days unused: -4900 × 15.5/31 = -2450.
    assert final.lines[1].amount == -2450
    assert final.totals.total == 100 - 2450
    # Nothing is due on a negative total: it is settled (the credit is the seller's to refund).
    assert final.status == InvoiceStatus.PAID
    assert final.amount_due == 0


async def test_final_invoices_are_pushed_to_stripes_drafts(
    engine: AsyncEngine, stripe_mock: Any
) -> None:
    """Tenantry's lines onto Stripe's draft, then finalized there (against stripe-mock,
    which checks each request against Stripe's API): the number is recorded, once."""
    import stripe

    from tenantry.api.stripe.collection import Collector, hold_draft

    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    terms = await subscribe(engine, start, tax_rates=(TaxRate("VAT", Decimal(19)),))
    await report(engine, terms.tenant_uid, dt.datetime(2026, 1, 20, tzinfo=UTC), 3000)
    clock = FixedClock(dt.datetime(2026, 2, 1, 2, tzinfo=UTC))
    svc = service(engine, clock)
    await svc.run(tenant_uid=terms.tenant_uid)
    february = (await invoices(svc, terms))[-1]
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE subscriptions SET stripe_customer_id = 'cus_test' WHERE uid = :u"),
            {"u": terms.uid},
        )
        await conn.execute(
            text("UPDATE invoices SET stripe_invoice_id = :s WHERE id = CAST(:i AS uuid)"),
            {"s": f"in_{terms.uid[:8]}", "i": february.id},
        )
    sent: list[tuple[str, str]] = []

    class Recording(stripe.AIOHTTPClient):  # type: ignore[misc]
        async def request_async(
            self, method: str, url: str, headers: Any, post_data: Any = None
        ) -> Any:
            sent.append((method.upper(), url.split("/v1/", 1)[-1].split("?")[0]))
            return await super().request_async(method, url, headers, post_data)

    client = stripe.StripeClient(
        "sk_test_123", http_client=Recording(), base_addresses={"api": stripe_mock.url}
    )
    await hold_draft(client, f"in_{terms.uid[:8]}")
    collector = Collector(client, engine, svc)
    assert await collector.push_finalized() >= 1
    items = [path for method, path in sent if path == "invoiceitems"]
    # The metered line, and the tax: the base fee is the Stripe Subscription's own price.
    assert len(items) == 2
    assert ("POST", f"invoices/in_{terms.uid[:8]}/finalize") in sent
    async with engine.connect() as conn:
        number = await conn.scalar(
            text("SELECT stripe_invoice_number FROM invoices WHERE id = CAST(:i AS uuid)"),
            {"i": february.id},
        )
    assert number
    sent.clear()
    await collector.push_finalized()
    assert not [s for s in sent if f"in_{terms.uid[:8]}" in s[1]], "pushed once"
