"""The service as a whole: probes, the OpenAPI document, the error shape, start-up refusals."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import httpx
import pytest
from api_harness import TENANTRY, ApiServer, World

pytestmark = pytest.mark.cluster


async def test_probes(api_server: ApiServer) -> None:
    async with api_server.client() as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        public = await client.get("/metrics")
    metrics = await api_server.metrics()
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
    assert ready.json()["redis"] == "ok"
    assert ready.json()["redis_failure_mode"] == "fail_open"
    assert "tenantry_api_redis_up 1.0" in metrics
    assert public.status_code == 404  # metrics have a port of their own


async def test_openapi_matches_what_is_served(api_server: ApiServer) -> None:
    async with api_server.client() as client:
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    served = {
        ("post", "/v1/usage"), ("post", "/v1/usage/snapshot"), ("post", "/v1/quota/consume"),
        ("get", "/v1/quota"), ("get", "/v1/license"), ("get", "/v1/license/jwks.json"),
        ("get", "/v1/license/public-key"), ("get", "/v1/license/revocations"),
        ("post", "/internal/api-keys/introspect"),
        ("get", "/admin/tenants/{namespace}/{name}/api-keys"),
        ("get", "/admin/tenants/{namespace}/{name}/usage"),
        ("get", "/admin/tenants/{namespace}/{name}/licenses"),
        ("post", "/v1/instance/heartbeat"), ("get", "/admin/tenants/{namespace}/{name}/instance"),
        ("get", "/healthz"), ("get", "/readyz"),
        ("get", "/v1/admin/tenants/{namespace}/{name}/invoices"),
        ("get", "/v1/admin/tenants/{namespace}/{name}/invoices/preview"),
        ("get", "/v1/admin/invoices/{invoice_id}"), ("get", "/v1/admin/invoices/{invoice_id}/pdf"),
        ("post", "/v1/admin/invoices/{invoice_id}/payments"),
        ("post", "/v1/admin/invoices/{invoice_id}/void"),
        ("post", "/v1/admin/invoices/{invoice_id}/mark-uncollectible"),
        ("post", "/v1/admin/invoices/{invoice_id}/credit-notes"),
        ("post", "/v1/admin/billing-runs"), ("get", "/v1/admin/revenue"),
        ("get", "/v1/invoices"), ("get", "/v1/invoices/{invoice_id}/pdf"),
        ("post", "/webhooks/stripe"), ("get", "/v1/admin/webhook-deliveries"),
        ("post", "/v1/admin/webhook-deliveries/{delivery_id}/retry"),
        ("post", "/v1/admin/tenants/{namespace}/{name}/checkout-session"),
        ("post", "/v1/admin/tenants/{namespace}/{name}/portal-session"),
        ("post", "/v1/signup"), ("get", "/v1/signup/checkout"), ("get", "/v1/admin/audit"),
        ("post", "/v1/dashboard-link"),
        ("post", "/v1/admin/tenants/{namespace}/{name}/dashboard-link"),
    }  # fmt: skip
    assert {(m, p) for p, ops in paths.items() for m in ops} == served
    # The dashboard's pages are HTML for browsers, served but left out of the document.
    async with api_server.client() as client:
        login = await client.get("/dashboard/login")
        fleet = await client.get("/dashboard/")
    assert login.status_code == 200
    assert login.headers["content-type"].startswith("text/html")
    assert fleet.status_code == 303
    assert fleet.headers["location"].startswith("/dashboard/login")
    schemas = document["components"]["schemas"]
    # The hand-read usage body is documented, down to the event's fields.
    body = paths["/v1/usage"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["events"]["maxItems"] == 1000
    event = schemas["UsageEvent"]
    assert set(event["required"]) == {"transaction_id", "metric", "value", "timestamp"}
    # Errors are documented with the one error shape.
    for path, method, status in [("/v1/usage", "post", "422"), ("/v1/quota/consume", "post",
                                 "429"), ("/v1/license", "get", "401")]:  # fmt: skip
        ref = paths[path][method]["responses"][status]["content"]["application/json"]["schema"]
        assert ref == {"$ref": "#/components/schemas/ErrorBody"}
    # Every $ref resolves.
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs <= set(schemas)


async def test_every_4xx_body_is_readable(make_world: Any, api_server: ApiServer) -> None:
    world: World = make_world(limits={"api_calls": 0})
    key = world.issued_key("reader", scopes=["usage:write", "quota:consume"])
    async with api_server.client(key) as client:
        answers = [
            await client.get("/nowhere"),
            await client.delete("/v1/usage"),
            await client.post("/v1/usage", content=b"[", headers={"content-type": "x"}),
            await client.post("/v1/usage", json={"events": [{"metric": 1}]}),
            await client.post("/v1/quota/consume", json={"metric": "api_calls"}),
            await client.post("/v1/quota/consume", json={"metric": "api_calls", "extra": 1}),
            await client.post("/v1/usage/snapshot", json={"snapshot_id": ""}),
            await client.get("/v1/license"),
            await client.get("/v1/license/public-key", params={"kid": "k" * 200}),
        ]
    async with api_server.client("tnty_" + "x" * 38) as client:
        answers.append(await client.get("/v1/quota"))
    async with api_server.client() as client:
        answers.append(await client.get("/v1/quota"))
        answers.append(await client.get(f"/admin/tenants/{world.control}/x/usage"))
    async with api_server.admin() as client:
        answers.append(await client.get(f"/admin/tenants/{world.control}/x/usage",
                                        params={"at": "2025-13-01"}))  # fmt: skip
    statuses = [a.status_code for a in answers]
    assert statuses == [404, 405, 400, 422, 429, 422, 422, 403, 422, 401, 401, 401, 422]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"code", "message", "details"}
        assert error["code"].replace("_", "").isalnum()
        # A sentence for a person: long enough to say what and how, no Python reprs.
        assert len(error["message"]) > 30, error
        assert "Traceback" not in error["message"]
        assert " object at 0x" not in error["message"], error
        assert "<class" not in error["message"], error


def test_placeholder_tokens_are_refused_outside_development(kube: Any, database: str) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "TENANTRY_DATABASE_URL": database,
        "TENANTRY_ENVIRONMENT": "production",
        "TENANTRY_ADMIN_TOKEN": "change-me",
        "TENANTRY_INTROSPECTION_TOKEN": "a" * 40,
    }
    result = subprocess.run([TENANTRY, "api", "serve", "--port", "1"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "TENANTRY_ADMIN_TOKEN" in result.stderr
    assert "openssl rand" in result.stderr
    # Migrations need no tokens, and running them twice changes nothing.
    again = subprocess.run([TENANTRY, "api", "migrate"], env=env, capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout


def test_development_accepts_placeholders(start_api: Any) -> None:
    server: ApiServer = start_api(
        TENANTRY_ENVIRONMENT="development",
        TENANTRY_ADMIN_TOKEN="change-me",
        TENANTRY_INTROSPECTION_TOKEN="change-me",
    )
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    assert "placeholder" in server.tail()


async def test_names_that_cannot_exist_are_refused_before_kubernetes_is_asked(
    api_server: ApiServer,
) -> None:
    routes = ["/admin/tenants/{}/{}/api-keys", "/admin/tenants/{}/{}/licenses",
              "/admin/tenants/{}/{}/usage", "/v1/admin/tenants/{}/{}/invoices",
              "/v1/admin/tenants/{}/{}/invoices/preview"]  # fmt: skip
    bad_names = [("ns", "a%01b"), ("Upper", "x"), ("ns", "x" * 64), ("-ns", "x")]
    async with api_server.admin() as client:
        for route in routes:
            for namespace, name in bad_names:
                answer = await client.get(route.format(namespace, name))
                assert answer.status_code == 422, (route, namespace, name, answer.text)
                assert answer.json()["error"]["code"] == "invalid_request"
