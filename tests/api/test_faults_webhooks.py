"""Webhook storms: Stripe's events for one subscription, each delivered five times,
shuffled and racing on two replicas, end where one ordered delivery ends.

Two tenants get the same story: the first hears it once, in order; the second in
a storm. Their final states (Stripe's status and its start, the ids linked, the
Subscription's spec and state) must be the same.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_harness import ApiServer, World
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_support import Stripe, fetch_objects, row, settled, stripe_env, subscription_uid
from support import Kube, dig
from testbed import StripeMock

from tenantry.db.engine import create_engine

pytestmark = [pytest.mark.cluster, pytest.mark.faults]


@pytest.fixture(scope="module")
def replicas(
    start_api: Callable[..., ApiServer], stripe_mock: StripeMock, database: str
) -> Iterator[list[ApiServer]]:
    servers = [start_api(**stripe_env(stripe_mock, database, f"storm-{n}")) for n in (1, 2)]
    yield servers
    for server in servers:  # their workers must take no other module's events
        server.stop()


def story(sender: Stripe, uid: str, start: int) -> list[dict[str, Any]]:
    """What Stripe says of one subscription over a minute: made, a failed payment,
    recovered, canceled at the period's end in the portal, the cancellation undone,
    then past due again; and the checkout that linked its customer."""
    base = sender.obj(
        "subscription", metadata={"tenantry_subscription_uid": uid}, customer="cus_storm",
        cancel_at_period_end=False,
    )  # fmt: skip

    def at(seconds: int, kind: str, previous: dict[str, Any] | None = None,
           **changes: Any) -> dict[str, Any]:  # fmt: skip
        return sender.event(kind, {**base, **changes}, created=start + seconds, previous=previous)

    updated = "customer.subscription.updated"
    checkout = sender.obj(
        "checkout_session", mode="subscription", customer="cus_storm",
        subscription=base["id"], metadata={"tenantry_subscription_uid": uid},
    )  # fmt: skip
    return [
        at(0, "customer.subscription.created", status="incomplete"),
        sender.event("checkout.session.completed", checkout, created=start + 5),
        at(10, updated, {"status": "incomplete"}, status="active"),
        at(20, updated, {"status": "active"}, status="past_due"),
        at(30, updated, {"status": "past_due"}, status="active"),
        at(40, updated, {"cancel_at_period_end": False}, status="active",
           cancel_at_period_end=True),
        at(50, updated, {"cancel_at_period_end": True}, status="active",
           cancel_at_period_end=False),
        at(59, updated, {"status": "active"}, status="past_due"),
    ]  # fmt: skip


async def final_state(kube: Kube, engine: AsyncEngine, world: World, uid: str) -> dict[str, Any]:
    stored = await row(
        engine,
        "SELECT stripe_status, stripe_status_at, stripe_customer_id, cancel_at IS NOT NULL"
        " AS cancels FROM subscriptions WHERE uid = :u",
        u=uid,
    )
    subscription = kube.get("subscription", world.tenant, world.control)
    return {
        "stripe_status": stored.stripe_status,
        "since": stored.stripe_status_at.timestamp(),
        "customer": stored.stripe_customer_id,
        "cancels": stored.cancels,
        "spec_cancel": dig(subscription, "spec", "cancelAtPeriodEnd") or False,
        "state": dig(subscription, "status", "state"),
    }


async def test_a_storm_of_redelivered_shuffled_racing_events_ends_as_one_ordered_delivery(
    replicas: list[ApiServer], stripe_mock: StripeMock, kube: Kube,
    make_world: Callable[..., World], database: str,
) -> None:  # fmt: skip
    sender = Stripe(fetch_objects(stripe_mock))
    engine = create_engine(database, pool_size=2)
    calm, stormy = make_world(), make_world()
    start = int(time.time()) - 120
    try:
        uids = [await subscription_uid(kube, engine, w) for w in (calm, stormy)]
        ordered = story(sender, uids[0], start)
        for event in ordered:
            assert (await sender.send(replicas[0], event)).status_code == 202
            assert (await settled(engine, event["id"])).state == "handled"

        storm = story(sender, uids[1], start) * 5
        random.Random(7).shuffle(storm)
        answers = await asyncio.gather(
            *(sender.send(replicas[n % 2], event) for n, event in enumerate(storm))
        )
        assert {a.status_code for a in answers} == {202}
        assert sum(not a.json()["duplicate"] for a in answers) == len(storm) // 5
        for event in storm:
            done = await settled(engine, event["id"], within=60)
            assert done.state == "handled", done.error
            assert done.deliveries == 5

        # The operator carries both to the same state and spec.
        async def both() -> list[dict[str, Any]]:
            return [
                await final_state(kube, engine, w, u)
                for w, u in zip((calm, stormy), uids, strict=True)
            ]

        deadline = time.monotonic() + 60
        while True:
            calm_state, stormy_state = await both()
            for state in (calm_state, stormy_state):
                state["since"] -= start
            if calm_state == stormy_state and calm_state["state"] == "past_due":
                break
            assert time.monotonic() < deadline, (calm_state, stormy_state)
            await asyncio.sleep(0.5)
        assert calm_state["since"] == 59
        assert calm_state["customer"] == "cus_storm"
        assert calm_state["spec_cancel"] is False
    finally:
        await engine.dispose()
