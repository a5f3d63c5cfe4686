"""Benchmark of the dashboard's two heaviest pages, beside rendering their templates alone.

Run: ``.venv/bin/python bench/dashboard.py [--tenants N] [--requests R]``

It starts its own control plane, PostgreSQL and Redis (hack/testbed.py) and
the API (`tenantry api serve`), creates N Tenants (default 1,000) with their
Subscriptions and the status an operator writes, and bills one of them
through 12 months (its invoices are real: `BillingService.run` month by
month). Signed in as the team, it asks R times (default 200, after a warm-up)
for:

* the fleet page, first page of N tenants;
* that tenant's page (conditions, license, keys, usage, 12 invoices), opened
  from the fleet page (its Tenant object comes from the fleet list);
* that tenant's page again once the fleet list has expired (its Tenant object
  from a GET, reused for at most the list's TTL as the list is: fleet.py).

Every view of a tenant's page reads PostgreSQL (keys, license history, usage,
invoices: one statement) and Redis (quota figures); nothing it shows is cached.

Server time is the page's own `Server-Timing` (the handler, from the request
to the rendered body). The baseline renders the same template with the same
data already in memory (fetched once through the same services), so the ratio
is what reading costs on top of drawing. Goals (PASS/MISS printed, exits 0):
p95 within 3x the baseline's and under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402
from testbed import ControlPlane, Postgres, Redis, free_port  # noqa: E402

from tenantry.api.billing.service import BillingService  # noqa: E402
from tenantry.api.billing.settings import BillingSettings  # noqa: E402
from tenantry.api.dashboard import views  # noqa: E402
from tenantry.api.dashboard.fleet import Query, select  # noqa: E402
from tenantry.api.dashboard.session import Session  # noqa: E402
from tenantry.api.runtime import Runtime  # noqa: E402
from tenantry.api.settings import ApiSettings  # noqa: E402
from tenantry.core.resources import PlanSpec  # noqa: E402
from tenantry.db import migrations  # noqa: E402
from tenantry.db.engine import create_engine  # noqa: E402

GOAL_RATIO = 3.0
LABELS = ("fleet", "tenant", "tenant, list expired")
FLEET_TTL = 5.0  # TENANTRY_DASHBOARD_FLEET_TTL's default
GOAL_P95_MS = 200.0
API = "tenantry.io/v1alpha1"
NAMESPACE = "fleet"
PLANS = ("starter", "pro", "enterprise")
ADMIN_TOKEN = "bench-admin-token-" + "x" * 24
METRICS = [
    {"name": "api_calls", "aggregation": "count"},
    {"name": "messages", "aggregation": "sum"},
]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def plan_spec(n: int) -> dict[str, Any]:
    return {
        "displayName": PLANS[n].title(),
        "price": {"amount": 4900 * (n + 1), "currency": "USD", "interval": "month"},
        "limits": {"api_calls": 10_000 * (n + 1)},
        "metrics": METRICS,
    }


def tenant_documents(i: int, at: str) -> tuple[dict[str, Any], ...]:
    name, plan = f"customer-{i:04d}", PLANS[i % 3]
    ready = "False" if i % 10 == 7 else "True"
    tenant = {
        "apiVersion": API, "kind": "Tenant", "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"displayName": f"Customer {i:04d} GmbH", "billingEmail": f"ap@c{i:04d}.example"},
    }  # fmt: skip
    status = {
        "conditions": [{"type": "Ready", "status": ready, "reason": "Provisioned",
                        "message": "", "lastTransitionTime": at}],
        "plan": plan,
        "license": {"id": f"lic-{i:04d}", "plan": plan, "issuedAt": at,
                    "expiresAt": "2030-01-01T00:00:00Z", "secretName": "tenantry-license"},
        "release": {"name": "instance", "revision": 1, "chartVersion": "1.4.0",
                    "status": "deployed"},
    }  # fmt: skip
    subscription = {
        "apiVersion": API, "kind": "Subscription",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"tenantRef": {"name": name}, "planRef": {"name": plan}},
    }  # fmt: skip
    return tenant, status, subscription


def prepare_cluster(plane: ControlPlane) -> None:
    """The CRDs and the namespace the tenants live in."""
    kubectl = ["kubectl", "--kubeconfig", str(plane.kubeconfig)]
    for argv in (
        ["apply", "-f", str(REPO / "crds")],
        ["wait", "--for", "condition=Established", "crd", "--all", "--timeout=60s"],
        ["create", "namespace", NAMESPACE],
    ):
        subprocess.run([*kubectl, *argv], check=True, capture_output=True)


async def seed_cluster(plane: ControlPlane, tenants: int) -> str:
    """Tenants, Subscriptions, Plans; the uid of customer-0001."""
    base = f"{plane.url}/apis/{API}"
    at = "2026-01-01T00:00:00Z"
    merge = {"Content-Type": "application/merge-patch+json"}
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(
        verify=False,  # noqa: S501 (the test bed's self-signed API server on loopback)
        headers={"Authorization": f"Bearer {plane.token}"},
        timeout=60,
    ) as client:
        for n, plan in enumerate(PLANS):
            body = {"apiVersion": API, "kind": "Plan", "metadata": {"name": plan},
                    "spec": plan_spec(n)}  # fmt: skip
            (await client.post(f"{base}/plans", json=body)).raise_for_status()

        async def one(i: int) -> None:
            tenant, status, subscription = tenant_documents(i, at)
            name = tenant["metadata"]["name"]
            ns = f"{base}/namespaces/{NAMESPACE}"
            async with gate:
                (await client.post(f"{ns}/tenants", json=tenant)).raise_for_status()
                (await client.post(f"{ns}/subscriptions", json=subscription)).raise_for_status()
                (
                    await client.patch(
                        f"{ns}/tenants/{name}/status", json={"status": status}, headers=merge
                    )
                ).raise_for_status()
                (
                    await client.patch(
                        f"{ns}/subscriptions/{name}/status",
                        json={"status": {"state": "active"}},
                        headers=merge,
                    )
                ).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(tenants)))
        found = await client.get(f"{base}/namespaces/{NAMESPACE}/tenants/customer-0001")
        return str(found.json()["metadata"]["uid"])


async def seed_invoices(url: str, tenant_uid: str, now: dt.datetime) -> int:
    """The tenant's subscription, stored as the operator stores it, billed month by month
    for the last 12 months; how many invoices it has."""
    engine = create_engine(url, pool_size=2)
    started = dt.datetime(now.year - 1, now.month, 1, tzinfo=dt.UTC)
    try:
        await migrations.migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO subscriptions (uid, namespace, name, tenant_uid, tenant_name,"
                    " plan_name, plan, currency, started_at, anchor_day, buyer) VALUES"
                    " ('sub-bench', :ns, 'customer-0001', :uid, 'customer-0001', 'pro',"
                    " CAST(:plan AS jsonb), 'USD', :start, 1,"
                    " jsonb_build_object('name', 'Customer 0001 GmbH', 'address', '[]'::jsonb))"
                ),
                {
                    "ns": NAMESPACE,
                    "uid": tenant_uid,
                    "plan": json.dumps(PlanSpec.model_validate(plan_spec(1)).to_wire()),
                    "start": started,
                },
            )
        settings = BillingSettings(seller_name="Bench Ltd", seller_country="DE", run_interval=0,
                                   finalize_grace=0)  # fmt: skip
        for month in range(13):
            index = started.year * 12 + started.month - 1 + month
            moment = dt.datetime(index // 12, index % 12 + 1, 1, 2, tzinfo=dt.UTC)
            await BillingService(engine, settings, lambda m=moment: m).run()
        async with engine.connect() as conn:
            return int(await conn.scalar(text("SELECT count(*) FROM invoices")) or 0)
    finally:
        await engine.dispose()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def server_ms(response: httpx.Response) -> float:
    match = re.search(r"app;dur=([0-9.]+)", response.headers.get("server-timing", ""))
    assert match, f"no Server-Timing on {response.url} ({response.status_code})"
    return float(match.group(1))


async def sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    done = await client.post(
        "/dashboard/login",
        data={"csrf": csrf.group(1), "token": ADMIN_TOKEN, "next": "/dashboard/"},
        headers={"Cookie": f"tenantry_login={form.cookies['tenantry_login']}"},
    )
    assert done.status_code == 303, done.text
    # The cookie is Secure: a client on plain http keeps it only when told to.
    client.headers["Cookie"] = f"tenantry_session={done.cookies['tenantry_session']}"


async def time_pages(url: str, requests: int) -> dict[str, list[float]]:
    """The fleet page; the tenant's page opened from the fleet page (as people do: its
    Tenant object from the fleet list); the tenant's page once that list has expired
    (its Tenant object from a GET at most a TTL old). Each after a warm-up of 20."""
    fleet, tenant = "/dashboard/", f"/dashboard/tenants/{NAMESPACE}/customer-0001"
    times: dict[str, list[float]] = {label: [] for label in LABELS}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def page(path: str) -> float:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            return server_ms(response)

        await sign_in(client)
        for n in range(requests + 20):
            took = await page(fleet)
            times["fleet"] += [took] if n >= 20 else []
        for n in range(requests + 20):
            await page(fleet)
            took = await page(tenant)
            times["tenant"] += [took] if n >= 20 else []
        await asyncio.sleep(FLEET_TTL + 0.5)
        for n in range(requests + 20):
            took = await page(tenant)
            times["tenant, list expired"] += [took] if n >= 20 else []
    return times


async def given(value: Any) -> Any:
    return value


async def baselines(requests: int, tenants: int) -> dict[str, list[float]]:
    """The same templates and data, in memory: only the rendering is timed."""
    rt = await Runtime.start(ApiSettings())
    try:
        board = rt.dashboard
        assert board is not None
        now = rt.billing.clock()
        session = Session("bench", now, "csrf")
        listing = await board.fleet.listing()
        rows = listing.rows
        assert len(rows) == tenants, len(rows)
        found = select(rows, Query(), board.settings.page_size, listing.choices)
        body = await rt.kube.tenant(NAMESPACE, "customer-0001")
        tenant = await rt.catalog.tenant(NAMESPACE, "customer-0001")
        assert body is not None
        assert tenant is not None
        row = next(r for r in rows if r.name == "customer-0001")
        page = await views.tenant_page(rt, tenant, now, body_of=given(body), row=row)
        fleet = board.templates.get_template("fleet.html")
        detail = board.templates.get_template("tenant.html")

        def link(number: int) -> str:
            return f"/dashboard/?page={number}"

        renders = {
            "fleet": lambda: fleet.render(path="/dashboard/", session=session, query=Query(),
                                          found=found, healths=(), link=link, now=now),
            "tenant": lambda: detail.render(path="/dashboard/tenants", session=session, t=page,
                                            now=now, revoked="", link=None),
        }  # fmt: skip
        times: dict[str, list[float]] = {label: [] for label in renders}
        for label, render in renders.items():
            for n in range(requests + 20):
                began = time.perf_counter()
                render()
                if n >= 20:
                    times[label].append((time.perf_counter() - began) * 1000)
        return times
    finally:
        await rt.close()


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    tenantry = str(REPO / ".venv" / "bin" / "tenantry")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [tenantry, "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the API did not start:\n{log.read_text()[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if shutil.which("kubectl") is None:
        print("bench/dashboard.py needs kubectl on PATH", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-dashboard-") as root:
        plane = ControlPlane(Path(root) / "plane").start()
        postgres = Postgres(Path(root) / "postgres").start()
        redis = Redis(Path(root) / "redis").start()
        process = None
        try:
            began = time.perf_counter()
            prepare_cluster(plane)
            uid = asyncio.run(seed_cluster(plane, args.tenants))
            invoices = asyncio.run(seed_invoices(postgres.url, uid, dt.datetime.now(dt.UTC)))
            print(f"seeded {args.tenants:,} Tenants and Subscriptions and {invoices} invoices "
                  f"in {time.perf_counter() - began:.1f} s")  # fmt: skip
            env = {
                "KUBECONFIG": str(plane.kubeconfig),
                "TENANTRY_DATABASE_URL": postgres.url,
                "TENANTRY_REDIS_URL": redis.url,
                "TENANTRY_ADMIN_TOKEN": ADMIN_TOKEN,
                "TENANTRY_INTROSPECTION_TOKEN": ADMIN_TOKEN + "-introspection",
                "TENANTRY_BILLING_RUN_INTERVAL": "0",
            }
            process, url = serve(env, Path(root) / "api.log")
            served = asyncio.run(time_pages(url, args.requests))
            os.environ.update(env)
            alone = asyncio.run(baselines(args.requests, args.tenants))
        finally:
            if process is not None:
                process.terminate()
                process.wait(15)
            redis.stop()
            postgres.stop()
            plane.stop()
    print(f"{'page':22}{'server p50':>12}{'server p95':>12}{'render p50':>12}"
          f"{'render p95':>12}{'ratio p95':>11}")  # fmt: skip
    ok = True
    for label in LABELS:
        s50, s95 = percentile(served[label], 0.5), percentile(served[label], 0.95)
        template = label.split(",")[0]
        r50, r95 = percentile(alone[template], 0.5), percentile(alone[template], 0.95)
        ratio = s95 / r95
        print(f"{label:22}{s50:10.2f}ms{s95:10.2f}ms{r50:10.2f}ms{r95:10.2f}ms{ratio:10.2f}x")
        fast, close = s95 < GOAL_P95_MS, ratio <= GOAL_RATIO
        print(f"  {label}: p95 under {GOAL_P95_MS:g} ms {verdict(fast)}; "
              f"within {GOAL_RATIO:g}x of rendering alone {verdict(close)}")  # fmt: skip
        ok = ok and fast and close
    print(verdict(ok))
    return 0


if __name__ == "__main__":
    sys.exit(main())
