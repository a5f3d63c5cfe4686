"""Invoices over HTTP, as an admin and as a customer's instance: the real operator
stores the Subscription's terms, the real API bills them, the PDF reads back."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_harness import ApiServer, World, now_iso

pytestmark = pytest.mark.cluster

METERED = [{"metric": "api_calls", "model": "per_unit", "unitAmount": "0.5"}]


@pytest.fixture(scope="module")
def billing_api(start_api: Callable[..., ApiServer]) -> ApiServer:
    # No grace window: an invoice is final (and numbered) in the run that drafts it.
    return start_api(
        TENANTRY_BILLING_FINALIZE_GRACE="0",
        TENANTRY_BILLING_RUN_INTERVAL="0",
        TENANTRY_BILLING_SELLER_NAME="Example SaaS Ltd",
        TENANTRY_BILLING_SELLER_COUNTRY="DE",
    )


async def first_invoice(api: ApiServer, world: World) -> dict[str, Any]:
    """Run billing for the tenant until the operator has stored its terms and it is billed."""
    path = f"/v1/admin/tenants/{world.control}/{world.tenant}/invoices"
    async with api.admin() as client:
        for _ in range(60):
            run = await client.post(
                "/v1/admin/billing-runs",
                json={"tenant": {"namespace": world.control, "name": world.tenant}},
            )
            assert run.status_code == 200, run.text
            listed = (await client.get(path)).json()["invoices"]
            if listed:
                return listed[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.5)
    raise AssertionError(f"no invoice for {world.key}")


def pdf_text(document: bytes) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", "-", "-"], input=document, capture_output=True, check=True
    ).stdout.decode()


async def test_an_admin_reads_pays_and_credits_an_invoice(
    make_world: Callable[..., World], billing_api: ApiServer
) -> None:
    world = make_world(meteredPrices=METERED)
    invoice = await first_invoice(billing_api, world)
    assert invoice["status"] == "open"
    assert invoice["number"].startswith("INV-")
    assert (invoice["currency"], invoice["exponent"], invoice["total"]) == ("USD", 2, 4900)
    assert [line["kind"] for line in invoice["lines"]] == ["base"]
    assert invoice["seller"]["name"] == "Example SaaS Ltd"
    assert invoice["buyer"]["name"] == "Acme"

    async with billing_api.admin() as admin:
        one = await admin.get(f"/v1/admin/invoices/{invoice['id']}")
        assert one.json() == invoice
        pdf = await admin.get(f"/v1/admin/invoices/{invoice['id']}/pdf")
        assert pdf.headers["content-type"] == "application/pdf"
        text = pdf_text(pdf.content)
        for expected in (invoice["number"], "Example SaaS Ltd", "Acme", "49.00"):
            assert expected in text

        partly = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments",
            json={"amount": 1000, "method": "bank_transfer", "reference": "tx-1"},
        )
        assert partly.status_code == 200, partly.text
        assert (partly.json()["status"], partly.json()["amountDue"]) == ("open", 3900)
        replay = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments",
            json={"amount": 1000, "method": "bank_transfer", "reference": "tx-1"},
        )
        assert replay.json()["amountDue"] == 3900  # the same payment, recorded once
        too_much = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments",
            json={"amount": 5000, "method": "card", "reference": "tx-2"},
        )
        assert too_much.status_code == 422
        assert too_much.json()["error"]["code"] == "payment_exceeds_amount_due"
        bad = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments", json={"amount": "39.00"}
        )
        assert bad.status_code == 422
        assert "amount" in bad.text
        paid = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments",
            json={"amount": 3900, "method": "card", "reference": "tx-2"},
        )
        assert (paid.json()["status"], paid.json()["amountDue"]) == ("paid", 0)
        void = await admin.post(f"/v1/admin/invoices/{invoice['id']}/void")
        assert void.status_code == 409
        assert "credit note" in void.json()["error"]["message"]
        note = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/credit-notes",
            json={"amount": 900, "reason": "Goodwill"},
        )
        assert note.status_code == 200, note.text
        assert note.json()["number"].startswith("CN-")
        assert note.json()["invoice"]["amountCredited"] == 900

        missing = await admin.get(f"/v1/admin/invoices/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "invoice_not_found"
        not_an_id = await admin.get("/v1/admin/invoices/INV-000001")
        assert not_an_id.status_code == 404
        revenue = await admin.get("/v1/admin/revenue")
        assert revenue.status_code == 200
        assert revenue.json()["currencies"]["USD"]["mrr"] >= 4900
        assert (await admin.get("/v1/admin/revenue?month=2026-13")).status_code == 422
    async with httpx.AsyncClient(base_url=billing_api.url) as anonymous:
        assert (await anonymous.get(f"/v1/admin/invoices/{invoice['id']}")).status_code == 401


async def test_the_preview_prices_this_periods_usage_so_far(
    make_world: Callable[..., World], billing_api: ApiServer
) -> None:
    world = make_world(meteredPrices=METERED)
    await first_invoice(billing_api, world)
    key = world.issued_key(scopes=["usage:write"])
    events = [
        {"transaction_id": f"t{i}", "metric": "api_calls", "value": 1, "timestamp": now_iso()}
        for i in range(7)
    ]
    async with billing_api.client(key) as client:
        assert (await client.post("/v1/usage", json={"events": events})).status_code == 200
    async with billing_api.admin() as admin:
        preview = (
            await admin.get(f"/v1/admin/tenants/{world.control}/{world.tenant}/invoices/preview")
        ).json()
    metered = [line for line in preview["lines"] if line["kind"] == "metered"]
    assert preview["number"] is None
    assert (metered[0]["quantity"], metered[0]["unrounded"], metered[0]["amount"]) == (
        "7", "3.5", 4,
    )  # fmt: skip  # 7 × 0.5 = 3.5, rounded half up once
    assert preview["total"] == 4900 + 4


async def test_an_instance_reads_its_own_invoices_with_billing_read(
    make_world: Callable[..., World], billing_api: ApiServer
) -> None:
    world, other = make_world(), make_world()
    invoice = await first_invoice(billing_api, world)
    theirs = await first_invoice(billing_api, other)
    reader = world.issued_key(scopes=["billing:read"])
    writer = world.issued_key(scopes=["usage:write"])
    async with billing_api.client(reader) as client:
        listed = await client.get("/v1/invoices")
        assert [i["id"] for i in listed.json()["invoices"]] == [invoice["id"]]
        pdf = await client.get(f"/v1/invoices/{invoice['id']}/pdf")
        assert invoice["number"] in pdf_text(pdf.content)
        foreign = await client.get(f"/v1/invoices/{theirs['id']}/pdf")
        assert foreign.status_code == 404
    async with billing_api.client(writer) as client:
        refused = await client.get("/v1/invoices")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"


async def test_every_hand_made_change_leaves_an_audit_record(
    make_world: Callable[..., World], billing_api: ApiServer
) -> None:
    world = make_world()
    invoice = await first_invoice(billing_api, world)
    target = invoice["id"]
    async with billing_api.admin() as admin:
        admin.headers["Tenantry-Actor"] = "alice@example.com"
        paid = await admin.post(
            f"/v1/admin/invoices/{target}/payments",
            json={"amount": 4900, "method": "bank_transfer", "reference": "audit-1"},
        )
        assert paid.status_code == 200, paid.text
        refused = await admin.post(f"/v1/admin/invoices/{target}/void")  # paid: refused
        assert refused.status_code == 409
        del admin.headers["Tenantry-Actor"]
        credited = await admin.post(
            f"/v1/admin/invoices/{target}/credit-notes", json={"amount": 100, "reason": "Sorry"}
        )
        assert credited.status_code == 200, credited.text
        trail = await admin.get("/v1/admin/audit", params={"target": target})
        assert trail.status_code == 200, trail.text
        everything = await admin.get("/v1/admin/audit", params={"limit": 100})
        first_page = await admin.get("/v1/admin/audit", params={"limit": 1})
        second_page = await admin.get(
            "/v1/admin/audit", params={"limit": 1, "cursor": first_page.json()["nextCursor"]}
        )
        assert (await admin.get("/v1/admin/audit", params={"cursor": "x"})).status_code == 422
    records = trail.json()["records"]
    # Newest first; the refused void changed nothing and left nothing.
    assert [r["action"] for r in records] == ["invoice.credited", "invoice.payment_recorded"]
    credit, payment = records
    assert (payment["actor"], payment["address"]) == ("admin:alice@example.com", "127.0.0.1")
    assert payment["details"] == {"number": invoice["number"], "amount": 4900,
                                  "currency": "USD", "method": "bank_transfer",
                                  "reference": "audit-1"}  # fmt: skip
    assert credit["actor"] == "admin"
    assert credit["details"]["reason"] == "Sorry"
    assert credit["details"]["credit_note"].startswith("CN-")
    runs = [r for r in everything.json()["records"] if r["action"] == "billing.run_started"]
    assert runs
    assert runs[0]["target"] == world.uid
    assert second_page.json()["records"][0]["id"] < first_page.json()["records"][0]["id"]
    # A name, never a credential.
    assert billing_api.admin_token not in everything.text
