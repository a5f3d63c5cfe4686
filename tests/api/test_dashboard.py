"""The dashboard in a real browser: Debian's chromium driven by Playwright.

Two test beds. The fleet at scale is a control plane of its own holding 1,000
Tenants and their Subscriptions, with the status an operator would have
written (no operator runs there: provisioning a thousand Helm releases would
test Helm, not the dashboard). Everything else runs on the session's plane
with the real operator: keys it issued, invoices the API billed, PDFs from
the PDF service. Each page is saved as a screenshot under artifacts/dashboard/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import pytest_asyncio
import yaml
from api_harness import API, PLAN_METRICS, ApiServer, World, now_iso, ready_condition
from playwright.async_api import Browser, Page, async_playwright, expect
from support import REPO, Kube, wait_for
from testbed import ControlPlane, free_port

from tenantry.api.billing import repository as billing
from tenantry.api.dashboard.repository import TenantRecords, tenant_records
from tenantry.api.dashboard.service import CUSTOMER_LINK
from tenantry.api.links import Links
from tenantry.api.tenants.catalog import Tenant
from tenantry.api.usage import repository as usage
from tenantry.core import keyformat
from tenantry.core.invoices import Invoice
from tenantry.core.usage import period_values
from tenantry.db import apikeys, licenses
from tenantry.db.engine import create_engine

pytestmark = pytest.mark.cluster

ARTIFACTS = REPO / "artifacts" / "dashboard"
FLEET_SIZE = 1000
PLANS = ("scale-starter", "scale-pro", "scale-enterprise")
PHONE = {"width": 390, "height": 844}


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "Debian's chromium is missing: `make deps` installs it"
    return found


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=chromium(),
            # As root (the test bed, CI) chromium's sandbox cannot start.
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(browser: Browser, api: ApiServer, **context: Any) -> Page:
    page = await (await browser.new_context(base_url=api.url, **context)).new_page()
    await page.goto("/dashboard/")
    await expect(page).to_have_url(f"{api.url}/dashboard/login?next=%2Fdashboard%2F")
    await page.get_by_label("Admin token").fill(api.admin_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    return page


# ------------------------------------------------------------------ 1,000 tenants


def fleet_tenant(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    name, plan = f"customer-{i:04d}", PLANS[i % 3]
    failing = i % 10 == 7
    at = "2026-11-01T00:00:00Z"
    ready = (
        {"type": "Ready", "status": "False", "reason": "ReleaseFailed",
         "message": "helm upgrade failed: timed out waiting for the condition",
         "lastTransitionTime": at}
        if failing
        else {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
              "lastTransitionTime": at}
    )  # fmt: skip
    tenant = {
        "apiVersion": API, "kind": "Tenant",
        "metadata": {"name": name, "namespace": "fleet"},
        "spec": {"displayName": f"Customer {i:04d} GmbH", "billingEmail": f"ap@c{i:04d}.example"},
    }  # fmt: skip
    status = {
        "conditions": [
            {"type": "LicenseIssued", "status": "True", "reason": "Issued",
             "message": "License issued.", "lastTransitionTime": at},
            {"type": "ReleaseDeployed", "status": "False" if failing else "True",
             "reason": "UpgradeFailed" if failing else "Deployed", "message": "",
             "lastTransitionTime": at},
            ready,
        ],
        "plan": plan,
        "namespace": f"tenant-{name}",
        "license": {"id": f"lic-{i:04d}", "plan": plan, "issuedAt": at,
                    "expiresAt": "2026-12-31T00:00:00Z", "secretName": "tenantry-license"},
        "release": {"name": "instance", "revision": 1 + i % 4, "chartVersion": f"1.4.{i % 3}",
                    "status": "failed" if failing else "deployed"},
    }  # fmt: skip
    return tenant, status


def fleet_state(i: int) -> str:
    return "past_due" if i % 5 == 4 else ("trialing" if i % 7 == 0 else "active")


@pytest_asyncio.fixture(scope="module")
async def fleet_api(
    kube: Kube, start_api: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ApiServer]:
    """An API on a control plane of its own with 1,000 Tenants and Subscriptions."""
    plane = ControlPlane(tmp_path_factory.mktemp("fleet-plane")).start()
    try:
        cluster = Kube(kubeconfig=plane.kubeconfig, helm_binary=kube.helm_binary)
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for", "condition=Established", "crd", "--all",
                        "--timeout=60s")  # fmt: skip
        cluster.kubectl("create", "namespace", "fleet")
        cluster.apply(*[
            {"apiVersion": API, "kind": "Plan", "metadata": {"name": plan},
             "spec": {"displayName": plan.replace("-", " ").title(),
                      "price": {"amount": 4900 * (n + 1), "currency": "USD", "interval": "month"},
                      "limits": {"api_calls": 1000 * (n + 1)}, "metrics": PLAN_METRICS}}
            for n, plan in enumerate(PLANS)
        ])  # fmt: skip
        started = time.monotonic()
        await create_fleet(plane)
        print(
            f"created {FLEET_SIZE} Tenants and Subscriptions in {time.monotonic() - started:.1f} s"
        )
        yield start_api(KUBECONFIG=str(plane.kubeconfig))
    finally:
        plane.stop()


async def create_fleet(plane: ControlPlane) -> None:
    base = f"{plane.url}/apis/{API}/namespaces/fleet"
    gate = asyncio.Semaphore(24)
    merge = {"Content-Type": "application/merge-patch+json"}
    async with httpx.AsyncClient(
        # The test bed's own self-signed API server on loopback.
        verify=False,  # noqa: S501
        headers={"Authorization": f"Bearer {plane.token}"},
        timeout=60,
    ) as client:

        async def one(i: int) -> None:
            tenant, status = fleet_tenant(i)
            name = tenant["metadata"]["name"]
            subscription = {
                "apiVersion": API, "kind": "Subscription",
                "metadata": {"name": name, "namespace": "fleet"},
                "spec": {"tenantRef": {"name": name}, "planRef": {"name": PLANS[i % 3]}},
            }  # fmt: skip
            async with gate:
                for url, body in ((f"{base}/tenants", tenant),
                                  (f"{base}/subscriptions", subscription)):  # fmt: skip
                    (await client.post(url, json=body)).raise_for_status()
                for url, patch in (
                    (f"{base}/tenants/{name}/status", {"status": status}),
                    (f"{base}/subscriptions/{name}/status", {"status": {"state": fleet_state(i)}}),
                ):
                    (await client.patch(url, json=patch, headers=merge)).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(FLEET_SIZE)))


async def test_the_team_finds_a_tenant_among_a_thousand(
    browser: Browser, fleet_api: ApiServer
) -> None:
    page = await sign_in(browser, fleet_api)
    await expect(page.get_by_role("status")).to_contain_text("1,000 of 1,000 tenants, page 1 of 20")
    # The session cookie is the only credential the browser keeps.
    (cookie,) = [c for c in await page.context.cookies() if c["name"] == "tenantry_session"]
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert fleet_api.admin_token not in cookie["value"]
    await shot(page, "fleet")
    await page.screenshot(path=str(ARTIFACTS / "fleet-top.png"))  # the README's

    await page.get_by_role("link", name="Next →").click()
    await expect(page.get_by_role("status")).to_contain_text("page 2 of 20")
    await expect(page.get_by_role("link", name="Customer 0050 GmbH")).to_be_visible()

    failing_pro = sum(1 for i in range(FLEET_SIZE) if i % 3 == 1 and i % 10 == 7)
    await page.get_by_label("Plan").select_option("scale-pro")
    await page.get_by_label("Health").select_option("failing")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("status")).to_contain_text(f"{failing_pro} of 1,000 tenants")

    await page.get_by_label("Plan").select_option("")
    await page.get_by_label("Health").select_option("")
    await page.get_by_label("Subscription").select_option("past_due")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("status")).to_contain_text("200 of 1,000 tenants")

    await page.get_by_label("Subscription").select_option("")
    await page.get_by_label("Search").fill("ap@c0737")
    await page.get_by_label("Search").press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("1 of 1,000 tenants")
    await page.get_by_role("link", name="Customer 0737 GmbH").click()

    await expect(page.get_by_role("heading", name="Customer 0737 GmbH")).to_be_visible()
    conditions = page.locator(".conditions")
    await expect(conditions).to_contain_text("Ready overall: no (release failed).")
    await expect(conditions).to_contain_text("helm upgrade failed: timed out")
    await expect(conditions).to_contain_text("Instance deployed: no (upgrade failed).")
    await expect(page.locator(".facts")).to_contain_text("1.4.2 (revision 2)")
    await expect(page.locator(".facts")).to_contain_text("scale-enterprise (Scale Enterprise)")
    await expect(page.get_by_text("License lic-0737")).to_be_visible()
    await shot(page, "tenant-failing")

    # Keyboard alone reaches the page: the skip link comes first.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    # Sign out: the page says so, and the old cookie no longer opens anything.
    stolen = cookie["value"]
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    async with httpx.AsyncClient(base_url=fleet_api.url, cookies={"tenantry_session": stolen}) as c:
        # Pages look the sign-out up while they read: still nothing but the sign-in page,
        # neither a tenant's page nor the refusal a missing tenant would get.
        for path in ("/dashboard/", "/dashboard/tenants/fleet/customer-0737",
                     "/dashboard/tenants/fleet/no-such-tenant"):  # fmt: skip
            again = await c.get(path)
            assert again.status_code == 303, (path, again.status_code)
            assert again.headers["location"].startswith("/dashboard/login"), path


# ------------------------------------------------------------------ the flows


@pytest.fixture(scope="module")
def flows_api(start_api: Callable[..., ApiServer]) -> ApiServer:
    return start_api(
        TENANTRY_BILLING_FINALIZE_GRACE="0",
        TENANTRY_BILLING_SELLER_NAME="Example SaaS Ltd",
        TENANTRY_BILLING_SELLER_COUNTRY="DE",
    )


@pytest.fixture(scope="module")
def worlds(make_world: Callable[..., World]) -> tuple[World, World]:
    return make_world(), make_world()


async def first_invoice(api: ApiServer, world: World) -> dict[str, Any]:
    """Bill the tenant until the operator has stored its terms and an invoice is out."""
    async with api.admin() as client:
        for _ in range(60):
            run = await client.post(
                "/v1/admin/billing-runs",
                json={"tenant": {"namespace": world.control, "name": world.tenant}},
            )
            assert run.status_code == 200, run.text
            path = f"/v1/admin/tenants/{world.control}/{world.tenant}/invoices"
            listed = (await client.get(path)).json()["invoices"]
            if listed:
                return listed[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.5)
    raise AssertionError(f"no invoice for {world.key}")


async def read(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


def pdf_text(document: bytes) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", "-", "-"], input=document, capture_output=True, check=True
    ).stdout.decode()


async def refused(api: ApiServer, key: str) -> None:
    """The API refuses `key` within 3 seconds (its key cache lives a second)."""
    async with api.client(key) as instance:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            answer = await instance.get("/v1/quota")
            if answer.status_code == 401:
                assert answer.json()["error"]["code"] == "invalid_api_key"
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the API still honours the revoked key")


async def revocations(api: ApiServer, world: World) -> list[tuple[str, str]]:
    """The audit trail's key revocations of the tenant: (actor, key prefix)."""
    async with api.admin() as admin:
        trail = (await admin.get("/v1/admin/audit", params={"target": world.key})).json()
    return [
        (r["actor"], r["details"]["prefix"])
        for r in trail["records"]
        if r["action"] == "api_key.revoked"
    ]


async def test_the_team_revokes_a_key_and_reads_an_invoice(
    browser: Browser, flows_api: ApiServer, worlds: tuple[World, World]
) -> None:
    world, _ = worlds
    key = world.issued_key("dash-revoked", scopes=["usage:write", "quota:consume", "license:read"])
    invoice = await first_invoice(flows_api, world)
    async with flows_api.client(key) as instance:
        for _ in range(3):
            consumed = await instance.post("/v1/quota/consume", json={"metric": "api_calls"})
            assert consumed.status_code == 200, consumed.text
        events = [
            {"transaction_id": f"dash-{n}", "metric": "messages", "value": value,
             "timestamp": now_iso(-60 * n)}
            for n, value in enumerate((120, 80))
        ]  # fmt: skip
        reported = await instance.post("/v1/usage", json={"events": events})
        assert reported.status_code == 200, reported.text
        assert (await instance.get("/v1/quota")).status_code == 200

    page = await sign_in(browser, flows_api)
    await page.get_by_label("Search").fill(world.tenant)
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("status")).to_contain_text("1 of ")
    await page.get_by_role("link", name="Acme").click()
    await expect(page.get_by_role("heading", name="Acme")).to_be_visible()
    await expect(page.locator(".conditions")).to_contain_text("Ready overall: yes")
    # Usage against the plan's limit, drawn and in figures.
    usage = page.locator(".metric", has=page.get_by_role("heading", name="api_calls"))
    await expect(usage.locator(".figure")).to_contain_text("3 used of 1,000, 997 left")
    await expect(usage.locator("svg .limit")).to_have_count(1)
    messages = page.locator(".metric", has=page.get_by_role("heading", name="messages"))
    await expect(messages.locator(".figure")).to_contain_text("200 used, no limit")
    await shot(page, "tenant")

    prefix = keyformat.display_prefix(key)
    await page.get_by_role("button", name=f"Revoke key {prefix}").click()
    await expect(page.get_by_text(f"Key {prefix}… is revoked")).to_be_visible()
    # Its row, read again (not the page's last read of it), says so too.
    row = page.locator("#keys tr", has=page.get_by_text(f"{prefix}…", exact=True))
    await expect(row.locator(".badge")).to_have_text("revoked")
    await expect(page.get_by_role("button", name=f"Revoke key {prefix}")).to_have_count(0)
    await refused(flows_api, key)
    # The cluster says so too, as if `kubectl patch` had revoked it, and the operator,
    # finding the key revoked already, adds nothing to the audit trail.
    apikey = world.kube.get("apikey", "dash-revoked", world.control)
    assert apikey is not None
    assert apikey["spec"]["revoked"] is True
    managers = world.kube.kubectl("get", "apikey", "dash-revoked", "-n", world.control,
                                  "--show-managed-fields", "-o",
                                  "jsonpath={.metadata.managedFields[*].manager}")  # fmt: skip
    assert "tenantry-dashboard" in managers.split()
    wait_for(
        lambda: (
            ready_condition(world.kube.get("apikey", "dash-revoked", world.control))
            == ("False", "Revoked")
        ),
        "the operator to mark the ApiKey revoked",
    )
    assert await revocations(flows_api, world) == [("dashboard", prefix)]

    # A form without its CSRF token is refused, even with the session cookie.
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with httpx.AsyncClient(base_url=flows_api.url, cookies=cookies) as forger:
        forged = await forger.post(
            f"/dashboard/tenants/{world.control}/{world.tenant}/customer-link", data={"days": "7"}
        )
    assert forged.status_code == 403
    assert "invalid_csrf_token" in forged.text

    await page.get_by_role("link", name=invoice["number"], exact=True).click()
    await expect(page.get_by_role("heading", name=f"Invoice {invoice['number']}")).to_be_visible()
    frame = page.frame_locator("iframe.document")
    await expect(frame.locator("body")).to_contain_text(invoice["number"])
    await shot(page, "invoice")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download the PDF").click()
    download = await download_info.value
    assert download.suggested_filename == f"{invoice['number']}.pdf"
    assert invoice["number"] in pdf_text(await read(await download.path()))

    await page.goto("/dashboard/revenue")
    await expect(page.get_by_role("heading", name="USD")).to_be_visible()
    # One chart per currency: other tests of the session may bill in other currencies.
    usd = page.get_by_role("region", name="USD")
    await expect(usd.locator("figure.chart svg")).to_have_count(1)
    await shot(page, "revenue")
    await page.goto("/dashboard/billing")
    await expect(page.get_by_role("heading", name="Billing runs", exact=True)).to_be_visible()
    await expect(page.locator("table").first).to_contain_text("succeeded")
    await shot(page, "billing")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    await page.goto("/dashboard/revenue")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_a_tenant_page_reads_what_the_api_reads(
    flows_api: ApiServer, worlds: tuple[World, World], database: str
) -> None:
    """The page's one statement gives what the owners' own reads give (the invoices the
    invoice routes list, the keys, license history and usage of the period), and a part
    reused from its last read is never older than the database."""
    world, _ = worlds
    invoice = await first_invoice(flows_api, world)
    key = world.issued_key(scopes=["usage:write"])
    async with flows_api.client(key) as instance:
        events = [
            {"transaction_id": f"page-{metric}-{n}", "metric": metric, "value": value,
             "timestamp": now_iso(-60 * n)}
            for metric, values in (("messages", (5, 7)), ("devices", (3, 9)),
                                   ("storage_bytes", (100, 50)))
            for n, value in enumerate(values)
        ]  # fmt: skip
        reported = await instance.post("/v1/usage", json={"events": events})
        assert reported.status_code == 200, reported.text

    async def pay(reference: str) -> None:
        async with flows_api.admin() as admin:
            paid = await admin.post(
                f"/v1/admin/invoices/{invoice['id']}/payments",
                json={"amount": 1, "method": "bank_transfer", "reference": reference},
            )
        assert paid.status_code == 200, paid.text

    await pay("page-1")
    tenant = Tenant(world.control, world.tenant, world.uid, None, None)
    period = world.period()
    engine = create_engine(database, pool_size=1)
    try:

        async def page_reads(last: TenantRecords | None = None) -> TenantRecords:
            async with engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert isinstance(driver, psycopg.AsyncConnection)
                return await tenant_records(
                    driver, tenant, period, invoices=24, drafts=True, keys=True, last=last
                )

        async def owners_reads() -> dict[str, Any]:
            async with engine.connect() as conn:
                history = await licenses.history(conn, tenant.namespace, tenant.name)
                return {
                    "invoices": await billing.tenant_invoices(conn, tenant.uid, limit=24),
                    "keys": await apikeys.list_for_tenant(
                        conn, tenant.namespace, tenant.name, tenant.uid
                    ),
                    "licenses": [h for h in history if h.tenant_uid == tenant.uid],
                    "totals": await usage.period_totals(conn, tenant.uid, period),
                    "hours": await usage.hourly(conn, tenant.uid, period),
                }

        def billed(records: TenantRecords) -> Invoice:
            return next(i for i in records.invoices if i.id == invoice["id"])

        first, theirs = await page_reads(), await owners_reads()
        assert list(first.invoices) == theirs["invoices"]
        assert [p.reference for p in billed(first).payments] == ["page-1"]
        assert list(first.keys) == theirs["keys"]
        assert any(k.key_prefix == keyformat.display_prefix(key) for k in first.keys)
        assert list(first.licenses) == theirs["licenses"]
        assert first.licenses
        assert sorted(first.totals, key=str) == sorted(theirs["totals"], key=str)
        assert period_values(first.totals)["devices"] == 9  # a max
        assert period_values(first.totals)["storage_bytes"] == 100  # the latest
        assert list(first.hours) == theirs["hours"]

        again = await page_reads(last=first)
        assert again.invoices is first.invoices  # the same text: not parsed again
        await pay("page-2")
        paid = await page_reads(last=again)
        assert list(paid.invoices) == (await owners_reads())["invoices"]
        assert billed(paid).amount_paid == billed(first).amount_paid + 1
    finally:
        await engine.dispose()


async def test_a_customer_link_shows_one_tenant_only(
    browser: Browser, flows_api: ApiServer, worlds: tuple[World, World]
) -> None:
    world, other = worlds
    mine, theirs = await first_invoice(flows_api, world), await first_invoice(flows_api, other)
    reader = world.issued_key(scopes=["billing:read"])
    async with flows_api.client(reader) as instance:
        made = await instance.post("/v1/dashboard-link")
    assert made.status_code == 200, made.text
    link = made.json()["url"]
    assert made.json()["expiresAt"]

    context = await browser.new_context(viewport=PHONE, accept_downloads=True)
    page = await context.new_page()
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Acme")).to_be_visible()
    await expect(page.get_by_role("link", name=mine["number"], exact=True)).to_be_visible()
    await expect(page.get_by_text(theirs["number"])).to_have_count(0)
    await expect(page.get_by_role("button", name="Revoke")).to_have_count(0)  # no team actions
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    await shot(page, "customer")

    await page.get_by_role("link", name=mine["number"], exact=True).click()
    await expect(page.get_by_role("heading", name=f"Invoice {mine['number']}")).to_be_visible()
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download the PDF").click()
    assert mine["number"] in pdf_text(await read(await (await download_info.value).path()))

    # Another tenant's invoice through this link is as unknown as a missing one.
    for suffix in ("", "/document", "/pdf"):
        response = await page.goto(f"{link}/invoices/{theirs['id']}{suffix}")
        assert response is not None
        assert response.status == 404, suffix
    await expect(
        page.get_by_text(f"There is no invoice {theirs['id']} for this tenant.")
    ).to_be_visible()
    await shot(page, "customer-foreign-invoice")

    # An expired link, and one changed by hand, open nothing.
    signer = Links(flows_api.admin_token)
    subject = f"{world.control}/{world.tenant}/{world.uid}"
    expired = signer.sign(CUSTOMER_LINK, subject, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    response = await page.goto(f"{flows_api.url}/dashboard/c/{expired}")
    assert response is not None
    assert response.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("This link expired")
    await shot(page, "customer-expired")
    token = link.rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = await page.goto(f"{flows_api.url}/dashboard/c/{forged}")
    assert response is not None
    assert response.status == 403
    # A team session's page is not reachable from the customer's link.
    response = await page.goto(f"{flows_api.url}/dashboard/tenants/{other.control}/{other.tenant}")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await context.close()


# ------------------------------------------------------------------ Kubernetes away


class Relay:
    """A TCP relay to kube-apiserver that a test cuts and mends: Kubernetes away for one
    API process, while the operator and the rest of the session keep theirs. It runs on
    a thread of its own, so the test's blocking calls (kubectl) never stall it."""

    def __init__(self, target: str) -> None:
        split = urlsplit(target)
        self.target = (split.hostname or "127.0.0.1", split.port or 443)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def mend(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._close())

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._open |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open -= {writer, up_writer}


async def test_a_revoke_kubernetes_does_not_take_changes_nothing_and_says_so(
    browser: Browser,
    flows_api: ApiServer,
    start_api: Callable[..., ApiServer],
    worlds: tuple[World, World],
    tmp_path: Path,
) -> None:
    _, world = worlds
    key = world.issued_key("dash-away", scopes=["usage:write", "quota:consume"])
    prefix = keyformat.display_prefix(key)
    config = yaml.safe_load(world.kube.kubeconfig.read_text())
    (cluster,) = config["clusters"]
    relay = Relay(cluster["cluster"]["server"])
    relay.mend()
    cluster["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    # Its tenant stays in the catalog while the API server is away: only the patch fails.
    api = start_api(KUBECONFIG=str(tmp_path / "kubeconfig"), TENANTRY_CATALOG_TTL="300")
    page = await sign_in(browser, api)
    await page.goto(f"/dashboard/tenants/{world.control}/{world.tenant}")
    await expect(page.get_by_role("heading", name="Acme")).to_be_visible()

    relay.cut()
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name=f"Revoke key {prefix}").click()
    assert (await answer.value).status == 503
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text(f"Key {prefix}… was NOT revoked")
    await expect(alert).to_contain_text("The key still works")
    await expect(page.get_by_text("is revoked")).to_have_count(0)
    await shot(page, "revoke-kubernetes-away")
    # Nothing changed: not in the cluster, not in the database, not in the audit trail.
    apikey = world.kube.get("apikey", "dash-away", world.control)
    assert apikey is not None
    assert not apikey["spec"].get("revoked")
    async with flows_api.client(key) as instance:
        assert (await instance.get("/v1/quota")).status_code == 200
    assert await revocations(flows_api, world) == []

    relay.mend()
    await page.goto(f"/dashboard/tenants/{world.control}/{world.tenant}")
    await page.get_by_role("button", name=f"Revoke key {prefix}").click()
    await expect(page.get_by_text(f"Key {prefix}… is revoked")).to_be_visible()
    await refused(flows_api, key)
    apikey = world.kube.get("apikey", "dash-away", world.control)
    assert apikey is not None
    assert apikey["spec"]["revoked"] is True
    relay.cut()
