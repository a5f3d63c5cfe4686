"""Stripe's webhooks into the real API: verified, stored once, processed once, in a safe order.

Payloads are stripe-mock's own objects (Stripe's shapes) wrapped in stripe-mock's
event envelope, signed here as Stripe signs (`t=<ts>,v1=<HMAC-SHA256 of "t.body">`).
Subscriptions are real: the operator stores their terms, and turns the Stripe
status the worker writes into the Subscription's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from api_harness import ApiServer, World
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_support import (
    SECRET,
    Stripe,
    fetch_objects,
    row,
    settled,
    sign,
    stripe_env,
    subscription_uid,
)
from support import Kube, dig, wait_for
from testbed import StripeMock

from tenantry.api.errors import BadRequest
from tenantry.api.stripe.endpoints import verified
from tenantry.api.stripe.handlers import NotYet, Refused, StatusReport, next_status, payment_of
from tenantry.api.stripe.repository import StripeStatus
from tenantry.api.stripe.worker import backoff
from tenantry.core.invoices import Invoice, InvoiceStatus, Party, Payment, Totals
from tenantry.core.periods import Period
from tenantry.db.engine import create_engine

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


# ------------------------------------------------------------------ without I/O


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_an_older_event_never_overwrites_a_newer_status() -> None:
    created = StatusReport("incomplete", at(0))
    active = StatusReport("active", at(10), previous="incomplete")
    first = next_status(None, None, active)
    assert first == StripeStatus("active", at(10))
    assert next_status(first, at(10), created) is None  # `created` came late: kept
    late_past_due = StatusReport("past_due", at(5), previous="active")
    # An older, different status moves no status; it tells that `active` began after it.
    assert next_status(first, at(10), late_past_due) is None
    newer = StatusReport("past_due", at(20), previous="active")
    assert next_status(first, at(10), newer) == StripeStatus("past_due", at(20))


def test_an_unrelated_update_keeps_the_start_of_the_status() -> None:
    stored = StripeStatus("past_due", at(0))
    metadata_only = StatusReport("past_due", at(50))  # no status in previous_attributes
    assert next_status(stored, at(0), metadata_only) is None  # the grace counts from 0
    # A delayed event shows `active` at 20: past_due began again after it.
    flipped = StatusReport("active", at(20), previous="past_due")
    assert next_status(stored, at(50), flipped) == StripeStatus("past_due", at(20))


def test_events_of_the_same_second_are_ordered_by_what_they_left() -> None:
    incomplete = StatusReport("incomplete", at(0))
    active = StatusReport("active", at(0), previous="incomplete")
    stored = next_status(None, None, incomplete)
    assert next_status(stored, at(0), active) == StripeStatus("active", at(0))
    assert next_status(StripeStatus("active", at(0)), at(0), incomplete) is None
    deleted = StatusReport("canceled", at(0), terminal=True)
    assert next_status(StripeStatus("active", at(0)), at(0), deleted) == StripeStatus(
        "canceled", at(0)
    )


def invoice(status: InvoiceStatus, total: int = 4900, paid: int = 0, **kwargs: Any) -> Invoice:
    return Invoice(
        id=str(uuid.uuid4()), number="INV-000001", status=status, currency="USD",
        seller=Party("Seller"), buyer=Party("Buyer"), period=Period(at(0), at(1)), lines=(),
        totals=Totals(subtotal=total, discount=0, discount_unrounded=Decimal(0), taxes=(), tax=0,
                      total=total, reverse_charge=False),
        discount_name=None,
        created_at=at(0), issued_at=at(0), due_at=at(1), amount_paid=paid, **kwargs,
    )  # fmt: skip


def test_a_stripe_payment_is_bounded_by_the_amount_due_and_recorded_once() -> None:
    paid = {"id": "in_1", "amount_paid": 5000, "currency": "usd",
            "status_transitions": {"paid_at": 1_900_000_000}}  # fmt: skip
    payment = payment_of(invoice(InvoiceStatus.OPEN, paid=900), paid, at(0))
    assert (payment.amount, payment.reference) == (4000, "in_1")
    assert payment.paid_at == dt.datetime.fromtimestamp(1_900_000_000, dt.UTC)
    recorded = invoice(InvoiceStatus.PAID, payments=(Payment(4000, "stripe", "in_1", at(0)),))
    assert payment_of(recorded, paid, at(0)).amount == 0
    with pytest.raises(NotYet):
        payment_of(invoice(InvoiceStatus.DRAFT), paid, at(0))
    with pytest.raises(Refused, match="void"):
        payment_of(invoice(InvoiceStatus.VOID), paid, at(0))
    with pytest.raises(Refused, match="EUR"):
        payment_of(invoice(InvoiceStatus.OPEN), {**paid, "currency": "eur"}, at(0))


def test_signatures_are_checked_with_the_sdk() -> None:
    body = json.dumps({"id": "evt_1", "object": "event", "type": "x", "created": 1,
                       "data": {"object": {"id": "cus_1"}}}).encode()  # fmt: skip
    assert verified(body, sign(body), SECRET, 300).object_id == "cus_1"
    cases = {
        "invalid_signature": (body, sign(body, "whsec_other")),
        "signature_expired": (body, sign(body, at=int(time.time()) - 301)),
        "missing_signature": (body, None),
        "malformed_event": (b"[1, 2]", sign(b"[1, 2]")),
    }
    for code, (payload, header) in cases.items():
        with pytest.raises(BadRequest) as refused:
            verified(payload, header, SECRET, 300)
        assert refused.value.code == code


def test_retries_back_off_to_an_hour() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [2, 4, 8]
    assert backoff(30) == 3600


# ------------------------------------------------------------------ the real service


@pytest.fixture(scope="module")
def sender(stripe_mock: StripeMock) -> Stripe:
    return Stripe(fetch_objects(stripe_mock))


@pytest.fixture(scope="module")
def apis(
    start_api: Callable[..., ApiServer], stripe_mock: StripeMock, database: str
) -> dict[str, ApiServer]:
    """Two replicas with Stripe on, by their connections' application_name."""
    return {
        name: start_api(**stripe_env(stripe_mock, database, name))
        for name in ("stripe-a", "stripe-b")
    }


@pytest.fixture(scope="module")
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database, pool_size=4)
    yield engine
    await engine.dispose()


async def stripe_side(engine: AsyncEngine, uid: str) -> Any:
    return await row(
        engine,
        "SELECT stripe_status, stripe_status_at, stripe_subscription_id, stripe_customer_id,"
        " ended_at, end_reason FROM subscriptions WHERE uid = :u",
        u=uid,
    )


cluster = pytest.mark.cluster


@cluster
async def test_without_stripe_the_endpoint_says_how_to_turn_it_on(
    api_server: ApiServer, sender: Stripe
) -> None:
    answer = await sender.send(api_server, sender.event("customer.created", sender.obj("customer")))
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "stripe_not_configured"
    assert "TENANTRY_STRIPE_WEBHOOK_SECRET" in answer.json()["error"]["message"]


@cluster
async def test_a_valid_event_is_stored_and_acknowledged(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine
) -> None:
    event = sender.event("payment_intent.succeeded", sender.obj("payment_intent"))
    answer = await sender.send(apis["stripe-a"], event)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"received": True, "id": event["id"], "duplicate": False}
    done = await settled(engine, event["id"])
    assert (done.state, done.type) == ("handled", event["type"])
    assert done.object_id == event["data"]["object"]["id"]
    assert done.payload == event
    unknown = sender.event("plan.created", event["data"]["object"])
    assert (await sender.send(apis["stripe-b"], unknown)).status_code == 202
    assert (await settled(engine, unknown["id"])).state == "ignored"


@cluster
async def test_what_is_not_stripes_is_refused_and_not_stored(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine
) -> None:
    api = apis["stripe-a"]
    count = "SELECT count(*) AS n FROM stripe_events"
    before = (await row(engine, count)).n
    event = sender.event("customer.created", sender.obj("customer"))
    body = json.dumps(event).encode()
    async with httpx.AsyncClient(base_url=api.url) as client:
        unsigned = await client.post("/webhooks/stripe", content=body)
    tampered = body.replace(b'"customer.created"', b'"invoice.paid"')
    refusals = [
        ("signature_expired", await sender.send(api, body, signed_at=int(time.time()) - 301)),
        ("invalid_signature", await sender.send(api, body, secret="whsec_" + secrets.token_hex(8))),
        ("invalid_signature", await sender.send(api, tampered, secret="whsec_x")),
        ("missing_signature", unsigned),
        ("malformed_event", await sender.send(api, b'{"id": "evt_x", "object": "event"')),
    ]
    for code, answer in refusals:
        assert answer.status_code == 400, (code, answer.text)
        assert answer.json()["error"]["code"] == code
    assert "TENANTRY_STRIPE_WEBHOOK_SECRET" in refusals[1][1].json()["error"]["message"]
    assert (await row(engine, count)).n == before
    # Signed, with a character jsonb could not hold: kept as received, byte for byte.
    unusual = sender.event("customer.created", sender.obj("customer", name="a\u0000b"))
    answer = await sender.send(api, unusual)
    assert answer.status_code == 202, answer.text
    kept = await row(engine, "SELECT payload::text AS body FROM stripe_events WHERE id = :id",
                     id=unusual["id"])  # fmt: skip
    assert kept.body == json.dumps(unusual)


@cluster
async def test_the_same_event_five_times_is_stored_once_and_applied_once(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, kube: Kube,
    make_world: Callable[..., World],
) -> None:  # fmt: skip
    world = make_world()
    uid = await subscription_uid(kube, engine, world)
    subscription = sender.obj(
        "subscription", status="past_due", metadata={"tenantry_subscription_uid": uid}
    )
    event = sender.event(
        "customer.subscription.updated", subscription, previous={"status": "active"}
    )
    answers = [await sender.send(apis["stripe-a"], event) for _ in range(5)]
    assert [a.status_code for a in answers] == [202] * 5
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    done = await settled(engine, event["id"])
    assert (done.state, done.deliveries, done.attempts) == ("handled", 5, 1)
    linked = await stripe_side(engine, uid)
    assert linked.stripe_status == "past_due"
    assert linked.stripe_subscription_id == subscription["id"]
    assert linked.stripe_status_at == dt.datetime.fromtimestamp(event["created"], dt.UTC)
    assert linked.stripe_customer_id == subscription["customer"]
    # The operator's timer turns Stripe's status into the Subscription's state.
    wait_for(
        lambda: (
            dig(kube.get("subscription", world.tenant, world.control), "status", "state")
            == "past_due"
        ),
        f"Subscription {world.key} past_due",
        30,
    )


@cluster
async def test_events_out_of_order_end_at_the_newest_state(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, kube: Kube,
    make_world: Callable[..., World],
) -> None:  # fmt: skip
    world = make_world()
    uid = await subscription_uid(kube, engine, world)
    now = int(time.time())
    tags = {"tenantry_subscription_uid": uid}
    base = sender.obj("subscription", metadata=tags)

    def version(status: str) -> dict[str, Any]:
        return {**base, "status": status}

    created = sender.event("customer.subscription.created", version("incomplete"), created=now - 30)
    active = sender.event(
        "customer.subscription.updated", version("active"), created=now - 20,
        previous={"status": "incomplete"},
    )  # fmt: skip
    past_due = sender.event(
        "customer.subscription.updated", version("past_due"), created=now - 10,
        previous={"status": "active"},
    )  # fmt: skip
    api = apis["stripe-a"]
    # `updated` before `created`, and the older `updated` after the newer one.
    for event in (past_due, created, active):
        assert (await sender.send(api, event)).status_code == 202
        assert (await settled(engine, event["id"])).state == "handled"
    final = await stripe_side(engine, uid)
    assert (final.stripe_status, final.stripe_status_at) == (
        "past_due", dt.datetime.fromtimestamp(now - 10, dt.UTC),
    )  # fmt: skip

    deleted = sender.event(
        "customer.subscription.deleted", {**version("canceled"), "ended_at": now - 5},
        created=now - 5, previous={"status": "past_due"},
    )  # fmt: skip
    stale = sender.event(
        "customer.subscription.updated", version("active"), created=now - 8,
        previous={"status": "past_due"},
    )  # fmt: skip
    for event in (deleted, stale):
        assert (await sender.send(api, event)).status_code == 202
        assert (await settled(engine, event["id"])).state == "handled"
    ended = await stripe_side(engine, uid)
    assert (ended.stripe_status, ended.end_reason) == ("canceled", "stripe_canceled")
    assert ended.ended_at == dt.datetime.fromtimestamp(now - 5, dt.UTC)
    wait_for(
        lambda: (
            dig(kube.get("subscription", world.tenant, world.control), "status", "state")
            == "canceled"
        ),
        f"Subscription {world.key} canceled",
        30,
    )


@cluster
async def test_deliveries_racing_on_two_replicas_are_one_event(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, kube: Kube,
    make_world: Callable[..., World],
) -> None:  # fmt: skip
    world = make_world()
    uid = await subscription_uid(kube, engine, world)
    event = sender.event(
        "checkout.session.completed",
        {"id": f"cs_{uuid.uuid4().hex[:14]}", "object": "checkout.session",
         "client_reference_id": uid, "customer": "cus_race", "subscription": None,
         "metadata": {}},
    )  # fmt: skip
    others = [
        sender.event("customer.created", sender.obj("customer", metadata={})) for _ in range(20)
    ]
    replicas = list(apis.values())
    answers = await asyncio.gather(
        *(sender.send(replicas[i % 2], event) for i in range(10)),
        *(sender.send(replicas[i % 2], other) for i, other in enumerate(others)),
    )
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert sum(not a.json()["duplicate"] for a in answers[:10]) == 1
    done = await settled(engine, event["id"])
    assert (done.state, done.deliveries, done.attempts) == ("handled", 10, 1)
    assert (await stripe_side(engine, uid)).stripe_customer_id == "cus_race"
    for other in others:  # each processed by one replica, once
        assert (await settled(engine, other["id"])).attempts == 1


@cluster
async def test_a_checkout_adopts_the_subscription_events_that_came_first(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, kube: Kube,
    make_world: Callable[..., World],
) -> None:  # fmt: skip
    world = make_world()
    uid = await subscription_uid(kube, engine, world)
    api = apis["stripe-a"]
    made = sender.obj("subscription", status="active", metadata={})  # made by Checkout
    early = sender.event("customer.subscription.created", made, created=int(time.time()) - 5)
    assert (await sender.send(api, early)).status_code == 202
    assert (await settled(engine, early["id"])).state == "ignored"  # no one's, yet
    session = sender.event(
        "checkout.session.completed",
        {"id": f"cs_{uuid.uuid4().hex[:14]}", "object": "checkout.session",
         "client_reference_id": None, "customer": made["customer"], "subscription": made["id"],
         "metadata": {"tenantry_subscription_uid": uid}},
    )  # fmt: skip
    assert (await sender.send(api, session)).status_code == 202
    assert (await settled(engine, session["id"])).state == "handled"
    assert (await settled(engine, early["id"])).state == "handled"
    linked = await stripe_side(engine, uid)
    assert (linked.stripe_subscription_id, linked.stripe_status) == (made["id"], "active")


@cluster
async def test_a_worker_killed_mid_event_leaves_it_to_another(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, kube: Kube,
    make_world: Callable[..., World],
) -> None:  # fmt: skip
    world = make_world()
    uid = await subscription_uid(kube, engine, world)
    event = sender.event(
        "customer.subscription.updated",
        sender.obj("subscription", status="unpaid", metadata={"tenantry_subscription_uid": uid}),
        previous={"status": "past_due"},
    )
    async with engine.connect() as holder:
        # The test holds the subscription's row: the worker that claims the event waits
        # for it, mid-event, its claim on the event held.
        await holder.execute(text("SELECT 1 FROM subscriptions WHERE uid = :u FOR UPDATE"),
                             {"u": uid})  # fmt: skip
        me = await holder.scalar(text("SELECT pg_backend_pid()"))
        assert (await sender.send(apis["stripe-a"], event)).status_code == 202
        waiting = None
        for _ in range(100):
            waiting = await row(
                engine,
                "SELECT application_name FROM pg_stat_activity"
                " WHERE :me = ANY(pg_blocking_pids(pid)) AND application_name LIKE 'stripe-%'",
                me=me,
            )
            if waiting is not None:
                break
            await asyncio.sleep(0.1)
        assert waiting is not None, "no worker took the event"
        victim = apis[waiting.application_name]
        assert victim.process is not None
        try:
            victim.process.kill()  # SIGKILL: no clean-up of any kind
            victim.process.wait(10)
            pending = await row(
                engine, "SELECT * FROM stripe_events WHERE id = :id", id=event["id"]
            )
            assert (pending.state, pending.attempts) == ("pending", 0)
            await holder.rollback()
            # The killed worker's transaction rolls back; the other replica takes the event.
            done = await settled(engine, event["id"], within=60)
        finally:
            victim.start()  # the module's replicas, for the tests after this one
    assert (done.state, done.attempts, done.deliveries) == ("handled", 1, 1)
    assert (await stripe_side(engine, uid)).stripe_status == "unpaid"


@cluster
async def test_a_paid_stripe_invoice_records_one_payment(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, kube: Kube,
    make_world: Callable[..., World],
) -> None:  # fmt: skip
    world = make_world()
    uid = await subscription_uid(kube, engine, world)
    api = apis["stripe-a"]
    terms = await row(engine, "SELECT started_at FROM subscriptions WHERE uid = :u", u=uid)
    # Stripe stamps its first invoice when the Stripe Subscription is made, a little after
    # the Subscription; Tenantry's first boundary is that day's 00:00 UTC.
    made = int(terms.started_at.timestamp()) + 40
    stripe_invoice = sender.obj(
        "invoice", status="paid", amount_paid=4900, amount_due=4900, total=4900,
        currency="usd", number="STRIPE-0001", billing_reason="subscription_create",
        period_start=made, period_end=made,
        status_transitions={"paid_at": made + 60, "finalized_at": made + 30,
                            "marked_uncollectible_at": None, "voided_at": None},
        parent={"type": "subscription_details", "quote_details": None,
                "subscription_details": {"subscription": f"sub_{uuid.uuid4().hex[:14]}",
                                         "metadata": {"tenantry_subscription_uid": uid}}},
    )  # fmt: skip
    paid = sender.event("invoice.paid", stripe_invoice)
    succeeded = sender.event("invoice.payment_succeeded", stripe_invoice)
    # Stripe's invoice is paid before Tenantry's is drafted: the event waits for it.
    assert (await sender.send(api, paid)).status_code == 202
    for _ in range(100):
        early = await row(engine, "SELECT * FROM stripe_events WHERE id = :id", id=paid["id"])
        if early.attempts:
            break
        await asyncio.sleep(0.1)
    assert (early.state, early.attempts) == ("pending", 1)
    assert "a billing run drafts it" in early.error
    async with api.admin() as admin:
        run = await admin.post(
            "/v1/admin/billing-runs",
            json={"tenant": {"namespace": world.control, "name": world.tenant}},
        )
        assert run.status_code == 200, run.text
    mine = await row(
        engine, "SELECT id, total, status FROM invoices WHERE subscription_uid = :u", u=uid
    )
    assert (mine.status, mine.total) == ("open", 4900)
    replicas = list(apis.values())
    answers = await asyncio.gather(
        *(sender.send(replicas[i % 2], paid) for i in range(4)),
        *(sender.send(replicas[i % 2], succeeded) for i in range(2)),
    )
    assert all(a.status_code == 202 for a in answers)
    for event in (paid, succeeded):
        assert (await settled(engine, event["id"])).state == "handled"
    payments = (
        await row(
            engine,
            "SELECT count(*) AS n, sum(amount) AS total, min(reference) AS reference,"
            " min(method) AS method FROM payments WHERE invoice_id = :i",
            i=mine.id,
        )
    )  # fmt: skip
    assert (payments.n, payments.total, payments.reference, payments.method) == (
        1, 4900, stripe_invoice["id"], "stripe",
    )  # fmt: skip
    linked = await row(
        engine,
        "SELECT status, amount_paid, stripe_invoice_id, stripe_invoice_number"
        " FROM invoices WHERE id = :i",
        i=mine.id,
    )
    assert (linked.status, linked.amount_paid) == ("paid", 4900)
    assert (linked.stripe_invoice_id, linked.stripe_invoice_number) == (
        stripe_invoice["id"], "STRIPE-0001",
    )  # fmt: skip


@cluster
async def test_a_body_past_the_limit_without_a_length_is_refused_and_not_stored(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine
) -> None:
    # Just past the 1 MiB limit: what the API leaves unread when it answers fits in the
    # sockets' buffers, so the client ends its sending and reads the answer.
    event = sender.event("customer.created", sender.obj("customer", description="x" * 1_100_000))
    body = json.dumps(event).encode()
    assert 1_048_576 < len(body) < 1_048_576 + 100_000

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async with httpx.AsyncClient(base_url=apis["stripe-a"].url, timeout=30) as client:
        answer = await client.post(
            "/webhooks/stripe", content=chunks(),
            headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
        )  # fmt: skip
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "payload_too_large"
    stored = await row(engine, "SELECT count(*) AS n FROM stripe_events WHERE id = :id",
                       id=event["id"])  # fmt: skip
    assert stored.n == 0


@cluster
async def test_the_route_served_ahead_of_the_router_is_described_and_takes_only_posts(
    apis: dict[str, ApiServer],
) -> None:
    async with httpx.AsyncClient(base_url=apis["stripe-a"].url) as client:
        described = (await client.get("/openapi.json")).json()["paths"]["/webhooks/stripe"]
        assert set(described) == {"post"}
        assert {"202", "400", "503"} <= set(described["post"]["responses"])
        wrong = await client.get("/webhooks/stripe")  # not POST: on to the application
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


SLOW = "evt_slow"
"""Events whose id starts so take two seconds to insert (a trigger of the test's own)."""


@pytest.fixture
def slow_inserts(database: str) -> Iterator[str]:
    url = database.replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION test_slow_event() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER test_slow_event BEFORE INSERT ON stripe_events FOR EACH ROW"
            f" WHEN (NEW.id LIKE '{SLOW}%') EXECUTE FUNCTION test_slow_event()"
        )
    try:
        yield SLOW
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER test_slow_event ON stripe_events")
            conn.execute("DROP FUNCTION test_slow_event()")


@cluster
async def test_under_a_light_load_a_delivery_does_not_wait_for_another_ones_write(
    apis: dict[str, ApiServer], sender: Stripe, engine: AsyncEngine, slow_inserts: str
) -> None:
    api = apis["stripe-a"]
    slow = sender.event("customer.created", sender.obj("customer", metadata={}))
    slow["id"] = f"{slow_inserts}_{uuid.uuid4().hex[:16]}"
    slowly = asyncio.create_task(sender.send(api, slow))
    await asyncio.sleep(0.5)  # its write is on its way, and takes two seconds
    started = time.monotonic()
    quick = [sender.event("customer.created", sender.obj("customer", metadata={}))
             for _ in range(5)]  # fmt: skip
    answers = await asyncio.gather(*(sender.send(api, event) for event in quick))
    assert [a.status_code for a in answers] == [202] * 5, answers[0].text
    assert time.monotonic() - started < 1.2
    assert not slowly.done()
    assert (await slowly).status_code == 202
    for event in (slow, *quick):
        stored = await row(engine, "SELECT deliveries FROM stripe_events WHERE id = :id",
                           id=event["id"])  # fmt: skip
        assert stored.deliveries == 1
