"""Stripe collects, and its word drives the cluster: signed webhooks into a real API with
Stripe on, the suite's operator, helm and control plane, on the suite's clock.

A renewal's payment fails (`invoice.payment_failed`, and the subscription `past_due`):
the Subscription is past_due and the license says so; once the plan's grace is over it
is unpaid and the instance is scaled to zero; Stripe's retry succeeds (`invoice.paid`,
and the subscription `active`): resumed, a new license, the payment on Tenantry's
invoice. Events delivered late do not undo it.

Stripe's objects are stripe-mock's, and stamped with the time the suite's processes
see (Stripe's clock, in the moved world); signatures are made with the real time, as
the API checks them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from api_harness import ApiServer, World, bill, replicas
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_support import Stripe, fetch_objects, stripe_env
from support import Clock, Kube, condition, dig, events, license_claims, wait_for
from testbed import StripeMock

from tenantry.api.stripe.handlers import SUBSCRIPTION_KEY
from tenantry.db.engine import create_engine

pytestmark = pytest.mark.cluster

GRACE = dt.timedelta(days=7)  # the Plan's pastDueGraceDays, by default


@pytest.fixture(scope="module")
def stripe_api(
    start_api: Callable[..., ApiServer], stripe_mock: StripeMock, database: str
) -> Iterator[ApiServer]:
    server = start_api(**stripe_env(stripe_mock, database, "lifecycle"))
    yield server
    # Stopped with the module: its worker would take other modules' events (one of
    # them tells the replicas that hold an event by their connections' names).
    server.stop()


@pytest.fixture(scope="module")
def sender(stripe_mock: StripeMock) -> Stripe:
    return Stripe(fetch_objects(stripe_mock))


@pytest.fixture(scope="module")
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    """Read only, to know when the worker is done with an event (no route lists them)."""
    engine = create_engine(database, pool_size=2)
    yield engine
    await engine.dispose()


async def processed(engine: AsyncEngine, event: dict[str, Any], within: float = 30) -> None:
    """Wait until the worker has handled the event; ignored or failed is a failure."""
    found = None
    for _ in range(int(within / 0.2)):
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT state, error FROM stripe_events WHERE id = :id"),
                    {"id": event["id"]},
                )
            ).first()
        if found is not None and found.state != "pending":
            assert found.state == "handled", (event["type"], found.state, found.error)
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{event['type']} {event['id']} is still pending: {found}")


def subscription_of(kube: Kube, world: World) -> dict[str, Any]:
    found = kube.get("subscription", world.tenant, world.control)
    assert found is not None
    return found


def state(kube: Kube, world: World) -> str | None:
    return dig(subscription_of(kube, world), "status", "state")  # type: ignore[no-any-return]


def columns(kube: Kube, world: World) -> dict[str, str]:
    """`kubectl get subscription`'s row, by column."""
    table = kube.kubectl("get", "subscription", world.tenant, "-n", world.control)
    header, row = table.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=True))


def event_messages(kube: Kube, world: World) -> set[str]:
    return {e["message"] for e in events(kube, world.control, "Subscription", world.tenant)}


def license_now(kube: Kube, world: World) -> dict[str, Any] | None:
    """The license in the tenant namespace's Secret, once the Tenant's status names it."""
    claims = license_claims(kube, world.target)
    current = dig(world.tenant_object(), "status", "license", "id")
    return claims if claims and claims["jti"] == current else None


def license_as(kube: Kube, world: World, status: str, *, period_after: int = 0) -> dict[str, Any]:
    """The Tenant's license once it is issued with subscription status `status` (and for a
    period ending after `period_after`)."""

    def issued() -> dict[str, Any] | None:
        claims = license_now(kube, world)
        if not claims or claims["subscription"]["status"] != status:
            return None
        return claims if claims["subscription"]["currentPeriodEnd"] > period_after else None

    found = wait_for(issued, f"a license issued as {status}", 30)
    assert found is not None
    return found


def stamp(moment: dt.datetime) -> int:
    return int(moment.timestamp())


async def invoice_of(api: ApiServer, invoice_id: str) -> dict[str, Any]:
    async with api.admin() as admin:
        got = await admin.get(f"/v1/admin/invoices/{invoice_id}")
    assert got.status_code == 200, got.text
    return got.json()  # type: ignore[no-any-return]


class StripeSide:
    """One Stripe Subscription and its invoices, as Stripe would send them."""

    def __init__(self, sender: Stripe, api: ApiServer, engine: AsyncEngine, uid: str) -> None:
        self.sender, self.api, self.engine = sender, api, engine
        self.tags = {SUBSCRIPTION_KEY: uid}
        self.subscription = sender.obj("subscription", metadata=self.tags, status="active")

    def updated(
        self, status: str, at: int, previous: dict[str, Any], kind: str = "updated"
    ) -> dict[str, Any]:
        return self.sender.event(
            f"customer.subscription.{kind}", {**self.subscription, "status": status},
            created=at, previous=previous or None,
        )  # fmt: skip

    def invoice(
        self, period: tuple[int, int], reason: str, **fields: Any
    ) -> dict[str, Any]:  # fmt: skip
        """A Stripe invoice of 4900 USD for this subscription; linked by `period`'s end."""
        return self.sender.obj(
            "invoice", currency="usd", total=4900, amount_due=4900, billing_reason=reason,
            period_start=period[0], period_end=period[1], metadata={},
            customer=self.subscription["customer"], subscription=None,
            parent={"type": "subscription_details", "quote_details": None,
                    "subscription_details": {"subscription": self.subscription["id"],
                                             "metadata": self.tags}},
            **fields,
        )  # fmt: skip

    async def send(self, *events: dict[str, Any]) -> None:
        """Deliver, in this order, and wait until each is processed."""
        for event in events:
            answer = await self.sender.send(self.api, event)
            assert answer.status_code == 202, answer.text
            await processed(self.engine, event)


def paid(invoice: dict[str, Any], at: int, **fields: Any) -> dict[str, Any]:
    transitions = {**(invoice.get("status_transitions") or {}), "paid_at": at}
    return {**invoice, "status": "paid", "amount_paid": invoice["amount_due"],
            "amount_remaining": 0, "status_transitions": transitions, **fields}  # fmt: skip


async def test_a_failed_stripe_payment_suspends_and_its_retry_resumes(
    kube: Kube, make_world: Callable[..., World], stripe_api: ApiServer, sender: Stripe,
    engine: AsyncEngine, clock: Clock,
) -> None:  # fmt: skip
    world = make_world()
    wait_for(lambda: state(kube, world) == "active", "the subscription to be active")
    sub = subscription_of(kube, world)
    stripe_side = StripeSide(sender, stripe_api, engine, sub["metadata"]["uid"])
    started = dt.datetime.fromisoformat(sub["status"]["startedAt"])

    # Stripe makes its Subscription (the operator's metadata names ours) and charges the
    # first period at once; Tenantry's first invoice is that day's.
    created = stamp(clock.now())
    await stripe_side.send(stripe_side.updated("active", created, {}, kind="created"))
    invoices: list[dict[str, Any]] = []
    for _ in range(40):  # until the operator has stored the subscription's terms
        invoices = await bill(stripe_api, world)
        if invoices:
            break
        await asyncio.sleep(0.5)
    [first] = invoices
    assert (first["status"], first["total"]) == ("open", 4900)
    charged = stamp(started) + 40
    first_paid = paid(
        stripe_side.invoice((charged, charged), "subscription_create", number="STRIPE-0001"),
        charged + 5,
    )
    await stripe_side.send(sender.event("invoice.paid", first_paid, created=charged + 5))
    assert (await invoice_of(stripe_api, first["id"]))["status"] == "paid"

    # The period ends: Tenantry invoices the next one, Stripe tries to collect it.
    first_period = sub["status"]["currentPeriod"]
    period_start = dt.datetime.fromisoformat(first_period["start"])
    period_end = dt.datetime.fromisoformat(first_period["end"])
    clock.move_past(period_end, dt.timedelta(minutes=5))
    invoices = await bill(stripe_api, world)
    second = invoices[0]
    assert second["id"] != first["id"]
    assert (second["status"], second["amountDue"]) == ("open", 4900)
    wait_for(
        lambda: dig(subscription_of(kube, world), "status", "latestInvoice", "id") == second["id"],
        "the Subscription's status to name the renewal's invoice",
    )
    before = license_as(kube, world, "active", period_after=stamp(period_end))

    # Its payment fails; Stripe marks the subscription past_due in the same second.
    failed_at = stamp(clock.now())
    renewal = stripe_side.invoice(
        (stamp(period_start), stamp(period_end)), "subscription_cycle", number="STRIPE-0002",
        status="open",
        amount_paid=0, amount_remaining=4900, attempt_count=1, attempted=True,
    )  # fmt: skip
    past_due = stripe_side.updated("past_due", failed_at, {"status": "active"})
    await stripe_side.send(
        sender.event("invoice.payment_failed", renewal, created=failed_at), past_due
    )
    wait_for(lambda: state(kube, world) == "past_due", "the subscription to be past_due", 30)
    assert (columns(kube, world)["STATE"], columns(kube, world)["AMOUNT-DUE"]) == (
        "past_due", "4900",
    )  # fmt: skip
    assert (condition(subscription_of(kube, world), "Ready") or {}).get("reason") == "PastDue"
    assert "Subscription is past_due (was active): 4900 USD minor units unpaid" in (
        event_messages(kube, world)
    )
    owing = license_as(kube, world, "past_due")
    assert owing["jti"] != before["jti"]
    payment = condition(world.tenant_object(), "PaymentCurrent")
    assert payment is not None
    assert (payment["status"], payment["reason"]) == ("False", "PaymentFailed")
    assert replicas(kube, world) == 1  # past_due keeps running while Stripe retries
    assert (await invoice_of(stripe_api, second["id"]))["status"] == "open"

    # Stripe's retries go on failing past the plan's grace: unpaid, scaled to zero.
    clock.move_past(dt.datetime.fromtimestamp(failed_at, dt.UTC) + GRACE, dt.timedelta(hours=1))
    wait_for(lambda: state(kube, world) == "unpaid", "the subscription to be unpaid", 30)
    assert "Subscription is unpaid (was past_due)" in event_messages(kube, world)
    wait_for(lambda: replicas(kube, world) == 0, "the instance to be scaled to zero", 60)
    # The status is written after helm has scaled the release: wait for it, too.
    wait_for(
        lambda: (condition(world.tenant_object(), "Ready") or {}).get("reason") == "Suspended",
        "the Tenant to say Suspended",
    )
    suspended = license_as(kube, world, "unpaid")

    # A retry succeeds: the invoice is paid, and Stripe makes the subscription active.
    card_changed_at = stamp(clock.now())
    paid_at = card_changed_at + 60
    card_changed = stripe_side.updated(
        "past_due", card_changed_at, {"default_payment_method": None}
    )
    active = stripe_side.updated("active", paid_at, {"status": "past_due"})
    renewal_paid = paid(renewal, paid_at, attempt_count=3)
    await stripe_side.send(sender.event("invoice.paid", renewal_paid, created=paid_at), active)
    wait_for(lambda: state(kube, world) == "active", "the subscription to be active again", 30)
    wait_for(lambda: replicas(kube, world) == 1, "the instance to be resumed", 60)
    after = license_as(kube, world, "active", period_after=stamp(period_end))
    assert after["jti"] not in {before["jti"], owing["jti"], suspended["jti"]}
    wait_for(
        lambda: (
            (c := condition(world.tenant_object(), "PaymentCurrent"))
            and (c["status"], c["reason"]) == ("True", "Paid")
        ),
        "the Tenant to say Paid",
    )
    settled = await invoice_of(stripe_api, second["id"])
    assert (settled["status"], settled["amountDue"], settled["amountPaid"]) == ("paid", 0, 4900)
    assert [(p["amount"], p["method"], p["reference"]) for p in settled["payments"]] == [
        (4900, "stripe", renewal["id"]),
    ]
    assert (columns(kube, world)["STATE"], columns(kube, world)["AMOUNT-DUE"]) == ("active", "0")
    assert dig(subscription_of(kube, world), "status", "latestInvoice", "status") == "paid"
    assert "Subscription is active (was unpaid)" in event_messages(kube, world)

    # Late deliveries: the card change (a past_due update older than `active`), a failed
    # attempt before the one that succeeded, and Stripe's retry of the past_due update.
    late_failure = sender.event(
        "invoice.payment_failed", {**renewal, "attempt_count": 2}, created=paid_at - 30
    )
    await stripe_side.send(card_changed, late_failure)
    replay = await sender.send(stripe_api, past_due)
    assert (replay.status_code, replay.json()["duplicate"]) == (202, True)
    for _ in range(5):  # the operator's passes see nothing to undo
        await asyncio.sleep(1)
        assert state(kube, world) == "active"
    assert replicas(kube, world) == 1
    assert dig(world.tenant_object(), "status", "license", "id") == after["jti"]
    settled = await invoice_of(stripe_api, second["id"])
    assert (settled["status"], settled["amountDue"]) == ("paid", 0)
