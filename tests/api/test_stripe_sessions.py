"""Checkout and portal sessions, and changes made in Stripe coming back into the cluster.

Stripe's API is stripe-mock, which checks every request against Stripe's API
description; the operator's part (making the Customer) is played by writing
`status.stripeCustomerId` as it does.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import stripe
from api_harness import ApiServer, World
from stripe_support import (
    Recording,
    Stripe,
    fetch_objects,
    settled,
    stripe_env,
    subscription_uid,
)
from support import Kube, dig, plan, wait_for
from testbed import StripeMock

from tenantry.api.stripe.handlers import Context, StripeEvent, dispatch, spec_changes, stripe_plan
from tenantry.api.stripe.sessions import portal_features, portal_products
from tenantry.db.engine import create_engine

cluster = pytest.mark.cluster
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def synced_plan(name: str, product: str | None, price: str | None) -> dict[str, Any]:
    stripe = {"productId": product, "priceId": price} if product else None
    return {"metadata": {"name": name}, "status": {"stripe": stripe} if stripe else {}}


def test_the_portal_offers_every_plan_stripe_sells_and_never_prorates() -> None:
    plans = [
        synced_plan("pro", "prod_pro", "price_pro"),
        synced_plan("internal", None, None),  # not in Stripe (yet)
        synced_plan("basic", "prod_basic", "price_basic"),
    ]
    products = portal_products(plans)
    assert products == [
        {"product": "prod_basic", "prices": ["price_basic"]},
        {"product": "prod_pro", "prices": ["price_pro"]},
    ]
    features = portal_features(products)
    update = features["subscription_update"]
    assert update["enabled"]
    assert update["proration_behavior"] == "none"
    assert update["products"] == products
    assert features["subscription_cancel"] == {
        "enabled": True, "mode": "at_period_end", "proration_behavior": "none",
    }  # fmt: skip
    assert features["customer_update"] == {"enabled": False}
    assert portal_features([])["subscription_update"] == {"enabled": False}


def updated(obj: dict[str, Any], previous: dict[str, Any]) -> StripeEvent:
    return StripeEvent("evt_1", "customer.subscription.updated", T0, obj, previous)


def on_price(plan_name: str | None, **extra: Any) -> dict[str, Any]:
    price = {"id": "price_x", "metadata": {"tenantry_plan": plan_name} if plan_name else {}}
    return {"id": "sub_1", "items": {"data": [{"price": price}]}, **extra}


def test_only_what_the_event_changed_in_stripe_moves_the_spec() -> None:
    assert stripe_plan(on_price("pro")) == "pro"
    assert stripe_plan(on_price(None)) is None
    moved = updated(on_price("pro"), {"items": {"data": []}})
    assert spec_changes(moved) == {"planRef": {"name": "pro"}}
    # An update that did not touch the items leaves the plan alone, whatever price it shows.
    assert spec_changes(updated(on_price("pro"), {"metadata": {}})) == {}
    # A Price that is no Plan's is not followed.
    assert spec_changes(updated(on_price(None), {"items": {}})) == {}
    cancel = updated(on_price("basic", cancel_at_period_end=True), {"cancel_at_period_end": False})
    assert spec_changes(cancel) == {"cancelAtPeriodEnd": True}
    undo = updated(on_price("basic", cancel_at_period_end=False), {"cancel_at_period_end": True})
    assert spec_changes(undo) == {"cancelAtPeriodEnd": False}


# ------------------------------------------------------------------ the real service


@pytest.fixture(scope="module")
def stripe_api(
    start_api: Callable[..., ApiServer], stripe_mock: StripeMock, database: str
) -> Iterator[ApiServer]:
    """Stripe on, with no default return URLs; stopped with the module, so that its
    worker takes no other module's events."""
    server = start_api(**stripe_env(stripe_mock, database, "stripe-sessions"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sender(stripe_mock: StripeMock) -> Stripe:
    return Stripe(fetch_objects(stripe_mock))


def give_customer(kube: Kube, world: World, customer: str = "cus_123") -> None:
    """What the operator writes once it has made the Tenant's Customer."""
    kube.kubectl(
        "patch", "tenant", world.tenant, "-n", world.control, "--subresource=status",
        "--type=merge", "-p", f'{{"status": {{"stripeCustomerId": "{customer}"}}}}',
    )  # fmt: skip


async def open_session(
    api: ApiServer, path: str, body: dict[str, Any] | None = None, *, admin: bool = True
) -> httpx.Response:
    async with api.admin() if admin else httpx.AsyncClient(base_url=api.url) as client:
        return await client.post(path, json=body) if body is not None else await client.post(path)


@cluster
async def test_without_stripe_sessions_say_how_to_turn_it_on(
    api_server: ApiServer, make_world: Callable[..., World]
) -> None:
    world = make_world()
    for kind in ("checkout", "portal"):
        answer = await open_session(api_server, f"/v1/admin/tenants/{world.key}/{kind}-session")
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "stripe_not_configured"


@cluster
async def test_checkout_and_portal_open_stripe_on_the_tenants_customer(
    stripe_api: ApiServer, kube: Kube, make_world: Callable[..., World]
) -> None:
    world = make_world()
    checkout = f"/v1/admin/tenants/{world.key}/checkout-session"
    portal = f"/v1/admin/tenants/{world.key}/portal-session"
    success = {"successUrl": "https://app.example/billing/done"}

    assert (await open_session(stripe_api, checkout, success, admin=False)).status_code == 401
    pending = await open_session(stripe_api, checkout, success)
    assert pending.status_code == 409
    assert pending.json()["error"]["code"] == "stripe_customer_pending"
    assert pending.headers["Retry-After"]

    give_customer(kube, world)
    made = await open_session(stripe_api, checkout, success)
    assert made.status_code == 201, made.text
    session = made.json()
    assert session["id"].startswith("cs_")
    assert session["url"].startswith("https://")
    assert session["expiresAt"]

    opened = await open_session(stripe_api, portal, {"returnUrl": "https://app.example/account"})
    assert opened.status_code == 201, opened.text
    assert opened.json()["id"].startswith("bps_")
    assert opened.json()["url"].startswith("https://")
    assert (await open_session(stripe_api, portal)).status_code == 201  # the body is optional

    refusals = [
        (checkout, None, 422, "missing_return_url"),  # no body and no default
        (checkout, {"successUrl": "not a url"}, 422, "invalid_request"),
        (checkout, {"successUrl": "https://a.example", "price": 1}, 422, "invalid_request"),
        (f"/v1/admin/tenants/{world.control}/nobody/checkout-session", success, 404,
         "tenant_not_found"),
        ("/v1/admin/tenants/Not_A_Namespace/x/portal-session", None, 422, "invalid_request"),
    ]  # fmt: skip
    for path, body, status, code in refusals:
        answer = await open_session(stripe_api, path, body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text


@cluster
async def test_a_plan_change_made_in_the_portal_moves_the_subscriptions_plan(
    stripe_api: ApiServer, sender: Stripe, kube: Kube, make_world: Callable[..., World],
    database: str,
) -> None:  # fmt: skip
    world = make_world()
    bigger = f"{world.plan}-pro"
    kube.apply(plan(bigger, devices=500))
    engine = create_engine(database, pool_size=2)
    try:
        uid = await subscription_uid(kube, engine, world)
        now = int(time.time())
        tags = {"tenantry_subscription_uid": uid}

        def on(plan_name: str, **changes: Any) -> dict[str, Any]:
            item = {**sender.objects["subscription"]["items"]["data"][0]}
            item["price"] = {**item["price"], "metadata": {"tenantry_plan": plan_name}}
            return {**base, "items": {**base["items"], "data": [item]}, **changes}

        base = sender.obj("subscription", metadata=tags, status="active")
        created = sender.event("customer.subscription.created", on(world.plan), created=now - 30)
        moved = sender.event(
            "customer.subscription.updated", on(bigger), created=now - 20,
            previous={"items": base["items"]},
        )  # fmt: skip
        for event in (created, moved):
            assert (await sender.send(stripe_api, event)).status_code == 202
            done = await settled(engine, event["id"])
            assert done.state == "handled", done.error

        def subscription() -> dict[str, Any] | None:
            return kube.get("subscription", world.tenant, world.control)

        assert dig(subscription(), "spec", "planRef", "name") == bigger
        wait_for(lambda: dig(subscription(), "status", "plan") == bigger, "the new plan in force")
        wait_for(
            lambda: (
                dig(kube.get("tenant", world.tenant, world.control), "status", "plan") == bigger
            ),
            "the Tenant on the new plan",
        )

        # A late delivery of an older change does not move it back.
        stale = sender.event(
            "customer.subscription.updated", on(world.plan), created=now - 25,
            previous={"items": base["items"]},
        )  # fmt: skip
        assert (await sender.send(stripe_api, stale)).status_code == 202
        assert (await settled(engine, stale["id"])).state == "handled"
        assert dig(subscription(), "spec", "planRef", "name") == bigger

        # Canceled in the portal, at the period's end.
        canceled = sender.event(
            "customer.subscription.updated", on(bigger, cancel_at_period_end=True),
            created=now - 10, previous={"cancel_at_period_end": False},
        )  # fmt: skip
        assert (await sender.send(stripe_api, canceled)).status_code == 202
        assert (await settled(engine, canceled["id"])).state == "handled"
        assert dig(subscription(), "spec", "cancelAtPeriodEnd") is True
        wait_for(lambda: dig(subscription(), "status", "cancelAt"), "the end in the status")
    finally:
        await engine.dispose()


@cluster
async def test_a_setup_checkout_without_a_method_is_kept_and_changes_nothing(
    stripe_api: ApiServer, sender: Stripe, database: str
) -> None:
    engine = create_engine(database, pool_size=2)
    try:
        session = sender.obj(
            "checkout_session", mode="setup", customer="cus_123", setup_intent="seti_123",
            metadata={"tenantry_tenant_uid": "5f0c6d9e-0000-4000-8000-000000000000"},
        )  # fmt: skip
        event = sender.event("checkout.session.completed", session)
        assert (await sender.send(stripe_api, event)).status_code == 202
        done = await settled(engine, event["id"])
        # stripe-mock's SetupIntent has no payment method: nothing to make the default.
        assert (done.state, done.error) == ("ignored", None)
    finally:
        await engine.dispose()


async def test_a_setup_checkout_makes_its_method_the_customers_default(
    stripe_mock: StripeMock, sender: Stripe
) -> None:
    """In-process against stripe-mock, its SetupIntent answered as a stateful Stripe
    would once the customer has saved a card."""
    http = Recording()
    http.recorded["GET setup_intents/seti_123"] = {"payment_method": "pm_123"}
    client = stripe.StripeClient(
        "sk_test_123", http_client=http, base_addresses={"api": stripe_mock.url}
    )
    session = sender.obj(
        "checkout_session", mode="setup", customer="cus_123", setup_intent="seti_123",
        metadata={"tenantry_tenant_uid": "5f0c6d9e-0000-4000-8000-000000000000"},
    )  # fmt: skip
    event = StripeEvent.from_payload(sender.event("checkout.session.completed", session))
    # This handler reads only Stripe: no transaction, billing or Kubernetes.
    ctx = Context(conn=None, billing=None, client=client, kube=None)  # type: ignore[arg-type]
    try:
        outcome = await dispatch(ctx, event)
        again = await dispatch(ctx, event)  # a retried event asks the same, under one key
    finally:
        await http.close_async()
    assert outcome.state == "handled", outcome.note
    assert again == outcome
    updates = [c for c in http.calls if (c.method, c.path) == ("POST", "customers/cus_123")]
    assert [c.params for c in updates] == [
        {"invoice_settings[default_payment_method]": "pm_123"}
    ] * 2
    assert {c.key for c in updates} == {f"tenantry-default-method-{session['id']}"}
