"""Billing drives the cluster, without Stripe: usage in, clock forward, invoice
finalized and readable as PDF; no payment → past_due → unpaid → the release scaled
to zero; a payment recorded → active, resumed, with a new license.

The operator and the API share the suite's clock file; this test moves it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from api_harness import ApiServer, World, bill, replicas
from support import Clock, Kube, condition, dig, wait_for

pytestmark = pytest.mark.cluster

METERED = [{"metric": "api_calls", "model": "per_unit", "unitAmount": "0.5"}]


@pytest.fixture(scope="module")
def billing_api(start_api: Callable[..., ApiServer]) -> ApiServer:
    return start_api(
        TENANTRY_BILLING_FINALIZE_GRACE="0",
        TENANTRY_BILLING_SELLER_NAME="Example SaaS Ltd",
        TENANTRY_BILLING_SELLER_COUNTRY="DE",
    )


def subscription(world: World) -> dict[str, Any]:
    found = world.kube.get("subscription", world.tenant, world.control)
    assert found is not None
    return found


def state(world: World) -> str | None:
    return dig(subscription(world), "status", "state")  # type: ignore[no-any-return]


async def pay(api: ApiServer, invoice: dict[str, Any], reference: str) -> dict[str, Any]:
    async with api.admin() as admin:
        paid = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments",
            json={
                "amount": invoice["amountDue"],
                "method": "bank_transfer",
                "reference": reference,
            },
        )
    assert paid.status_code == 200, paid.text
    return paid.json()  # type: ignore[no-any-return]


async def test_an_unpaid_invoice_suspends_and_a_payment_resumes(
    kube: Kube, make_world: Callable[..., World], billing_api: ApiServer, clock: Clock
) -> None:
    world = make_world(meteredPrices=METERED, limits={})
    wait_for(lambda: state(world) == "active", "the subscription to be active")
    # The first period's base fee is invoiced at once; it is paid.
    invoices: list[dict[str, Any]] = []
    for _ in range(40):  # until the operator has stored the subscription's terms
        invoices = await bill(billing_api, world)
        if invoices:
            break
        await asyncio.sleep(0.5)
    assert [i["total"] for i in invoices] == [4900]
    first = await pay(billing_api, invoices[0], "first")
    assert first["status"] == "paid"

    key = world.issued_key(scopes=["usage:write"])
    stamp = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    events = [
        {"transaction_id": f"e{i}", "metric": "api_calls", "value": 2, "timestamp": stamp}
        for i in range(5)
    ]
    async with billing_api.client(key) as client:
        accepted = await client.post("/v1/usage", json={"events": events})
    assert accepted.status_code == 200, accepted.text

    # The period ends: its usage and the next period's base fee are invoiced.
    period_end = dt.datetime.fromisoformat(subscription(world)["status"]["currentPeriod"]["end"])
    clock.set(period_end - dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    invoices = await bill(billing_api, world)
    second = invoices[0]
    assert second["status"] == "open"
    # api_calls counts events: 5 events at 0.5 is 2.5, rounded half up once: 3.
    assert [(line["kind"], line.get("quantity"), line["amount"]) for line in second["lines"]] == [
        ("base", "1", 4900), ("metered", "5", 3),
    ]  # fmt: skip
    async with billing_api.admin() as admin:
        pdf = await admin.get(f"/v1/admin/invoices/{second['id']}/pdf")
    text = subprocess.run(  # noqa: ASYNC221 (a test, waiting is fine)
        ["pdftotext", "-layout", "-", "-"], input=pdf.content, capture_output=True, check=True
    ).stdout.decode()
    assert second["number"] in text
    assert "49.03" in text
    wait_for(
        lambda: dig(subscription(world), "status", "latestInvoice", "number") == second["number"],
        "the Subscription's status to name the latest invoice",
    )
    license_before = dig(world.tenant_object(), "status", "license", "id")

    # Unpaid past its due date (7 days): past_due, and the license says so.
    due = dt.datetime.fromisoformat(second["dueAt"])
    clock.set(due - dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    wait_for(lambda: state(world) == "past_due", "the subscription to be past_due", 30)
    assert subscription(world)["status"]["amountDue"] == 4903
    payment = wait_for(
        lambda: (c := condition(world.tenant_object(), "PaymentCurrent")) and c["status"] == "False"
        and c,
        "PaymentCurrent=False on the Tenant",
        30,
    )  # fmt: skip
    assert payment["reason"] == "PaymentFailed"
    assert replicas(kube, world) == 1  # past_due keeps running while payment is chased

    # Past the plan's grace (7 days more): unpaid, and the instance is scaled to zero.
    clock.set(due - dt.datetime.now(dt.UTC) + dt.timedelta(days=7, hours=2))
    wait_for(lambda: state(world) == "unpaid", "the subscription to be unpaid", 30)
    wait_for(lambda: replicas(kube, world) == 0, "the instance to be scaled to zero", 60)
    # The status is written after helm has scaled the release: wait for it, too.
    wait_for(
        lambda: (condition(world.tenant_object(), "Ready") or {}).get("reason") == "Suspended",
        "the Tenant to say Suspended",
    )

    # A payment recorded brings it back, with a new license.
    await pay(billing_api, second, "second")
    wait_for(lambda: state(world) == "active", "the subscription to be active again", 30)
    wait_for(lambda: replicas(kube, world) == 1, "the instance to be resumed", 60)
    license_after = wait_for(
        lambda: (
            (lid := dig(world.tenant_object(), "status", "license", "id")) != license_before and lid
        ),
        "a new license",
        30,
    )
    assert license_after

    # Two invoices now, a page at a time, newest first.
    path = f"/v1/admin/tenants/{world.control}/{world.tenant}/invoices"
    async with billing_api.admin() as admin:
        page = (await admin.get(path, params={"limit": 1})).json()
        assert [i["number"] for i in page["invoices"]] == [second["number"]]
        rest = (await admin.get(path, params={"limit": 1, "cursor": page["nextCursor"]})).json()
        assert [i["id"] for i in rest["invoices"]] == [first["id"]]
        assert rest["nextCursor"] is None
        bad = await admin.get(path, params={"cursor": "yesterday"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_cursor"
        reused = await admin.post(
            f"/v1/admin/invoices/{second['id']}/payments",
            json={"amount": 1, "method": "transfer", "reference": "second"},
        )
        assert reused.status_code == 409
        assert reused.json()["error"]["code"] == "payment_reference_taken"
