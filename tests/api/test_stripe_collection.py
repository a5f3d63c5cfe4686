"""Tenantry's finalized invoices onto Stripe invoices, against the real PostgreSQL and
stripe-mock (which checks each request against Stripe's API).

stripe-mock keeps no state: a create answers with a new id whatever its idempotency
key. So the tests read what was asked of Stripe (path, idempotency key, parameters)
from the SDK's HTTP client, and what was linked and recorded from the database. The
Stripe Subscription's start and anchor are recorded as the webhook worker records
them; billing runs in-process with a clock of the test's own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_support import Recording
from support import FixedClock
from testbed import StripeMock

from tenantry.api.billing.service import BillingService
from tenantry.api.billing.settings import BillingSettings
from tenantry.api.stripe import handlers
from tenantry.api.stripe import repository as stripe_repository
from tenantry.api.stripe.collection import Collector
from tenantry.core.invoices import Invoice, InvoiceStatus, LineKind, Party, TaxRate
from tenantry.core.lifecycle import Terms
from tenantry.core.resources import PlanSpec
from tenantry.db import subscriptions as repository
from tenantry.db.engine import create_engine

UTC = dt.UTC
JAN_1 = dt.datetime(2026, 1, 1, tzinfo=UTC)
FEB_1 = dt.datetime(2026, 2, 1, tzinfo=UTC)
PLAN = PlanSpec.model_validate(
    {
        "displayName": "Pro",
        "price": {"amount": 4900, "currency": "EUR", "interval": "month"},
        "metrics": [{"name": "api_calls", "aggregation": "sum"}],
        "meteredPrices": [
            {"metric": "api_calls", "model": "per_unit", "unitAmount": "0.5", "allowance": 1000}
        ],
    }
)


@pytest.fixture(scope="module")
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def http() -> AsyncIterator[Recording]:
    client = Recording()
    yield client
    await client.close_async()


@pytest.fixture
def client(http: Recording, stripe_mock: StripeMock) -> stripe.StripeClient:
    # No retries by the SDK: each request is one call here, and a fault is seen as is.
    return stripe.StripeClient(
        "sk_test_123", http_client=http, base_addresses={"api": stripe_mock.url},
        max_network_retries=0,
    )  # fmt: skip


def service(engine: AsyncEngine, clock: FixedClock) -> BillingService:
    settings = BillingSettings.model_validate(
        {
            "seller_name": "Tenantry GmbH",
            "seller_country": "DE",
            "invoice_prefix": f"C{uuid.uuid4().hex[:6].upper()}",
            "run_interval": 0,
            "finalize_grace": 0,
        }
    )
    return BillingService(engine, settings, clock)


async def subscribe(engine: AsyncEngine, started: dt.datetime) -> Terms:
    uid = str(uuid.uuid4())
    terms = Terms(
        uid=uid, namespace="collect", name=f"sub-{uid[:8]}", tenant_uid=f"tenant-{uid}",
        tenant_name=f"t-{uid[:8]}", plan_name="pro", plan=PLAN, started_at=started,
        anchor_day=started.day, tax_rates=(TaxRate("VAT", Decimal(19)),),
        buyer=Party(name="Acme GmbH", country="DE"),
    )  # fmt: skip
    async with engine.begin() as conn:
        await repository.save_terms(conn, terms)
    return terms


async def stripe_subscription(
    engine: AsyncEngine, terms: Terms, started: dt.datetime, anchor: dt.datetime
) -> str:
    """The Stripe Subscription made at `started`, anchored at `anchor`, recorded as the
    webhook worker records it; its Customer's id."""
    customer = f"cus_{terms.uid[:12]}"
    async with engine.begin() as conn:
        await stripe_repository.link_subscription(
            conn, terms.uid, customer_id=customer, subscription_id=f"sub_{terms.uid[:12]}"
        )
        await stripe_repository.record_cycle(
            conn, terms.uid, started_at=started, anchor=anchor, seen_at=started
        )
    return customer


async def report(engine: AsyncEngine, tenant_uid: str, hour: dt.datetime, value: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO usage_hourly (tenant_uid, metric, hour, aggregation, value, events,"
                " latest_at) VALUES (:t, 'api_calls', :h, 'sum', :v, 1, :h)"
            ),
            {"t": tenant_uid, "h": hour, "v": value},
        )


async def invoices(svc: BillingService, terms: Terms) -> list[Invoice]:
    found = await svc.invoices_of_tenant(terms.tenant_uid, limit=100, before=None)
    return sorted(found, key=lambda i: i.boundary or JAN_1)


async def link(engine: AsyncEngine, invoice_id: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT stripe_invoice_id, stripe_invoice_number FROM invoices"
                    " WHERE id = CAST(:i AS uuid)"
                ),
                {"i": invoice_id},
            )
        ).first()


def item_amounts(http: Recording, invoice_id: str) -> list[int]:
    return [int(c.params["amount"]) for c in http.posts(invoice_id, "invoiceitems")]


async def test_a_first_period_invoice_is_collected_by_a_one_off_with_every_line(
    engine: AsyncEngine, client: stripe.StripeClient, http: Recording
) -> None:
    """Stripe charges nothing up to its anchor (the first period's end): Tenantry's first
    invoice, base fee in advance, gets a Stripe invoice of its own, linked and finalized."""
    terms = await subscribe(engine, JAN_1)
    customer = await stripe_subscription(engine, terms, JAN_1 + dt.timedelta(hours=10), FEB_1)
    svc = service(engine, FixedClock(JAN_1 + dt.timedelta(hours=11)))
    await svc.run(tenant_uid=terms.tenant_uid)
    [first] = await invoices(svc, terms)
    assert (first.status, first.totals.total) == (InvoiceStatus.OPEN, 5831)  # 4900 + 19 % VAT

    assert await Collector(client, engine, svc).push_finalized() >= 1

    [made] = http.posts(first.id, "invoices")
    assert made.key == f"tenantry-one-off-{first.id}"
    assert made.params == {
        "customer": customer,
        "currency": "eur",
        "collection_method": "charge_automatically",
        "pending_invoice_items_behavior": "exclude",
        "auto_advance": "false",
        "description": f"Invoice {first.number}",
        f"metadata[{handlers.INVOICE_KEY}]": first.id,
        f"metadata[{handlers.SUBSCRIPTION_KEY}]": terms.uid,
    }
    assert made.answer is not None
    one_off = made.answer["id"]
    # Every line is an item, the base fee too, then the tax: Stripe's total is Tenantry's.
    items = http.posts(first.id, "invoiceitems")
    assert [c.params["invoice"] for c in items] == [one_off, one_off]
    assert [c.key for c in items] == [
        f"tenantry-item-{first.id}-line-1", f"tenantry-item-{first.id}-tax-1",
    ]  # fmt: skip
    assert item_amounts(http, first.id) == [4900, 931]
    assert sum(item_amounts(http, first.id)) == first.totals.total
    [finalized] = http.posts(first.id, f"invoices/{one_off}/finalize")
    assert finalized.params == {"auto_advance": "true"}
    linked = await link(engine, first.id)
    assert linked.stripe_invoice_id == one_off
    assert linked.stripe_invoice_number  # stripe-mock's finalized invoice has no number: its id


async def test_a_cycle_invoice_waits_for_stripes_draft_and_adds_all_but_the_base(
    engine: AsyncEngine, client: stripe.StripeClient, http: Recording
) -> None:
    terms = await subscribe(engine, JAN_1)
    await stripe_subscription(engine, terms, JAN_1 + dt.timedelta(hours=10), FEB_1)
    await report(engine, terms.tenant_uid, JAN_1 + dt.timedelta(days=9), 3000)
    svc = service(engine, FixedClock(FEB_1 + dt.timedelta(hours=2)))
    await svc.run(tenant_uid=terms.tenant_uid)
    first, february = await invoices(svc, terms)
    collector = Collector(client, engine, svc)
    await collector.push_finalized()
    assert http.posts(first.id, "invoices"), "the first period's one-off"
    # February's boundary is Stripe's anchor: Stripe's draft comes, with the base fee.
    assert http.about(february.id) == []
    assert (await link(engine, february.id)).stripe_invoice_id is None

    # Stripe's draft comes: the webhook worker links it (handlers.invoice_created).
    draft = f"in_{february.id[:12]}"
    async with engine.begin() as conn:
        assert await stripe_repository.link_invoice(conn, february.id, draft, None) is None
    http.calls.clear()
    await collector.push_finalized()
    assert http.posts(february.id, "invoices") == []  # no one-off for it
    items = http.posts(february.id, "invoiceitems")
    assert {c.params["invoice"] for c in items} == {draft}
    # January's usage (2000 billable at 0.5) and the tax; the base is the draft's own line.
    assert [line.kind for line in february.lines] == [LineKind.BASE, LineKind.METERED]
    assert item_amounts(http, february.id) == [1000, 1121]
    assert 4900 + sum(item_amounts(http, february.id)) == february.totals.total
    assert http.posts(february.id, f"invoices/{draft}/finalize")


async def test_a_final_invoice_is_collected_by_a_one_off(
    engine: AsyncEngine, client: stripe.StripeClient, http: Recording
) -> None:
    """Deleted mid-period after Stripe's anchor: the Stripe Subscription is canceled with no
    invoice, and Tenantry's final invoice (the period's usage) gets one of its own."""
    terms = await subscribe(engine, JAN_1)
    await stripe_subscription(engine, terms, JAN_1 + dt.timedelta(hours=10), FEB_1)
    ended_at = dt.datetime(2026, 2, 15, 9, tzinfo=UTC)
    await report(engine, terms.tenant_uid, ended_at - dt.timedelta(days=1), 1600)
    async with engine.begin() as conn:
        await repository.save_terms(
            conn, dataclasses.replace(terms, ended_at=ended_at, end_reason="deleted")
        )
    svc = service(engine, FixedClock(ended_at + dt.timedelta(hours=1)))
    await svc.run(tenant_uid=terms.tenant_uid)
    _, february, final = await invoices(svc, terms)
    assert [line.kind for line in final.lines] == [LineKind.METERED]
    assert final.totals.total == 357  # 600 billable at 0.5, and 19 % VAT

    await Collector(client, engine, svc).push_finalized()
    [made] = http.posts(final.id, "invoices")
    assert made.params[f"metadata[{handlers.INVOICE_KEY}]"] == final.id
    assert made.answer is not None
    assert item_amounts(http, final.id) == [300, 57]
    assert (await link(engine, final.id)).stripe_invoice_id == made.answer["id"]
    assert http.about(february.id) == [], "February's waits for Stripe's draft"


async def test_a_pass_twice_makes_nothing_twice(
    engine: AsyncEngine, client: stripe.StripeClient, http: Recording
) -> None:
    terms = await subscribe(engine, JAN_1)
    await stripe_subscription(engine, terms, JAN_1 + dt.timedelta(hours=10), FEB_1)
    svc = service(engine, FixedClock(JAN_1 + dt.timedelta(hours=11)))
    await svc.run(tenant_uid=terms.tenant_uid)
    [first] = await invoices(svc, terms)
    collector = Collector(client, engine, svc)
    await collector.push_finalized()
    done = await link(engine, first.id)
    assert len(http.about(first.id)) == 4  # create, two items, finalize
    await collector.push_finalized()
    assert len(http.about(first.id)) == 4, "the second pass asked Stripe nothing for it"
    assert await link(engine, first.id) == done


async def test_a_stripe_error_or_a_crash_between_steps_is_finished_by_the_next_pass(
    engine: AsyncEngine, client: stripe.StripeClient, http: Recording
) -> None:
    terms = await subscribe(engine, JAN_1)
    await stripe_subscription(engine, terms, JAN_1 + dt.timedelta(hours=10), FEB_1)
    svc = service(engine, FixedClock(JAN_1 + dt.timedelta(hours=11)))
    await svc.run(tenant_uid=terms.tenant_uid)
    [first] = await invoices(svc, terms)
    collector = Collector(client, engine, svc)

    http.faults = {"POST invoices": "refuse"}  # Stripe refuses the create
    await collector.push_finalized()
    assert (await link(engine, first.id)).stripe_invoice_id is None
    # Made in Stripe, but the answer is lost: nothing is linked, and the next pass asks
    # again under the same key with the same parameters (Stripe answers with that invoice).
    http.faults = {"POST invoices": "lose"}
    await collector.push_finalized()
    assert (await link(engine, first.id)).stripe_invoice_id is None
    # Linked, then the items fail: the next pass adds them, under the same keys.
    http.faults = {"POST invoiceitems": "refuse"}
    await collector.push_finalized()
    linked = await link(engine, first.id)
    assert linked.stripe_invoice_id
    assert linked.stripe_invoice_number is None
    http.faults = {}
    await collector.push_finalized()
    assert (await link(engine, first.id)).stripe_invoice_number

    creates = http.posts(first.id, "invoices")
    assert len(creates) == 3
    assert {c.key for c in creates} == {f"tenantry-one-off-{first.id}"}
    assert all(c.params == creates[0].params for c in creates)
    items = http.posts(first.id, "invoiceitems")
    line, tax = f"tenantry-item-{first.id}-line-1", f"tenantry-item-{first.id}-tax-1"
    assert [c.key for c in items] == [line, line, tax]  # the refused one, then both
    assert {c.params["invoice"] for c in items} == {linked.stripe_invoice_id}
    assert len(http.posts(first.id, f"invoices/{linked.stripe_invoice_id}/finalize")) == 1


async def test_invoices_from_before_stripe_or_of_an_unknown_schedule_get_no_one_off(
    engine: AsyncEngine, client: stripe.StripeClient, http: Recording
) -> None:
    before = await subscribe(engine, JAN_1)  # Stripe switched on two weeks in
    await stripe_subscription(engine, before, dt.datetime(2026, 1, 15, 12, tzinfo=UTC), FEB_1)
    unknown = await subscribe(engine, JAN_1)  # a customer, no event of its Stripe Subscription
    async with engine.begin() as conn:
        await stripe_repository.link_subscription(
            conn, unknown.uid, customer_id="cus_unknown", subscription_id=None
        )
    svc = service(engine, FixedClock(dt.datetime(2026, 1, 16, tzinfo=UTC)))
    for terms in (before, unknown):
        await svc.run(tenant_uid=terms.tenant_uid)
    await Collector(client, engine, svc).push_finalized()
    for terms in (before, unknown):
        [first] = await invoices(svc, terms)
        assert first.status == InvoiceStatus.OPEN
        assert http.about(first.id) == []
        assert (await link(engine, first.id)).stripe_invoice_id is None


def context(conn: Any, client: stripe.StripeClient) -> handlers.Context:
    """The worker's context; what `_subscription_row` does not use is None."""
    given = {"conn": conn, "client": client}
    return handlers.Context(
        **{f.name: given.get(f.name) for f in dataclasses.fields(handlers.Context)}
    )


async def test_the_stripe_subscriptions_schedule_is_recorded_from_its_events_in_order(
    engine: AsyncEngine, client: stripe.StripeClient, stripe_mock: StripeMock
) -> None:
    terms = await subscribe(engine, JAN_1)
    fixture = await client.v1.subscriptions.retrieve_async("sub_123")
    obj = json.loads(fixture.last_response.body)  # Stripe's shape, as an event carries it
    obj.update(id=f"sub_{terms.uid[:12]}", metadata={handlers.SUBSCRIPTION_KEY: terms.uid})

    def event(created: dt.datetime, started: dt.datetime, anchor: dt.datetime) -> Any:
        stamped = {**obj, "start_date": int(started.timestamp()),
                   "billing_cycle_anchor": int(anchor.timestamp())}  # fmt: skip
        return handlers.StripeEvent(f"evt_{uuid.uuid4().hex}", "customer.subscription.created",
                                    created, stamped)  # fmt: skip

    made = JAN_1 + dt.timedelta(hours=10)
    newer = event(made + dt.timedelta(minutes=5), made, dt.datetime(2026, 1, 15, tzinfo=UTC))
    older = event(made, made, FEB_1)
    for applied in (newer, older):  # out of order: the older one changes nothing
        async with engine.begin() as conn:
            row, why = await handlers._subscription_row(context(conn, client), applied)
            assert row is not None, why
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text(
                    "SELECT stripe_started_at, stripe_cycle_anchor, stripe_customer_id"
                    " FROM subscriptions WHERE uid = :u"
                ),
                {"u": terms.uid},
            )
        ).first()
    assert stored.stripe_started_at == made
    assert stored.stripe_cycle_anchor == dt.datetime(2026, 1, 15, tzinfo=UTC)
    assert stored.stripe_customer_id == obj["customer"]
