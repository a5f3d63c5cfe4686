"""The API service does its job with the permissions manifests/deploy grants it."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import Kube, plan, service_account_kubeconfig, wait_for

pytestmark = pytest.mark.cluster


async def test_api_serves_instances_and_reports_usage_under_its_own_role(
    kube: Kube, make_world: Any, start_api: Any, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(kube, "tenantry-api", tmp_path / "kubeconfig")
    world = make_world()
    key = world.issued_key()
    server = start_api(KUBECONFIG=str(kubeconfig))

    now = dt.datetime.now(dt.UTC).isoformat()
    async with server.client(key) as instance:
        license_response = await instance.get("/v1/license")
        usage = await instance.post(
            "/v1/usage",
            json={"events": [
                {"transaction_id": "rbac-1", "metric": "messages", "value": 7, "timestamp": now}
            ]},
        )  # fmt: skip
        jwks = await instance.get("/v1/license/jwks.json")
        revocations = await instance.get("/v1/license/revocations")
    assert license_response.status_code == 200, license_response.text
    assert usage.status_code == 200, usage.text
    assert jwks.status_code == 200, jwks.text
    assert revocations.status_code == 200, revocations.text
    wait_for(
        lambda: (
            ((world.tenant_object() or {}).get("status", {}).get("usage") or {})
            .get("metrics", {})
            .get("messages")
            == 7
        ),
        "the usage summary in the Tenant's status",
    )
    log = server.log.read_text()
    assert "forbidden" not in log.lower(), server.tail()
    # The role reads licenses, and no private key material.
    api = Kube(kubeconfig, kube.helm_binary)

    def can_get(what: str, namespace: str) -> str:
        return api.kubectl("auth", "can-i", "get", what, "-n", namespace, check=False).strip()

    assert can_get("secret/tenantry-license", world.target) == "yes"
    assert can_get("secret/tenantry-signing-keys", "tenantry-system") == "no"
    assert can_get("secret/api-key-secret", world.target) == "no"


async def test_signup_works_under_the_apis_own_role(
    kube: Kube, start_api: Any, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(kube, "tenantry-api", tmp_path / "kubeconfig")
    suffix = uuid.uuid4().hex[:6]
    namespace, plan_name = f"signups-rbac-{suffix}", f"rbac-{suffix}"
    kube.kubectl("create", "namespace", namespace)
    kube.apply(plan(plan_name))
    server = start_api(KUBECONFIG=str(kubeconfig), TENANTRY_SIGNUP_NAMESPACE=namespace,
                       TENANTRY_SIGNUP_PLANS=plan_name)  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answer = await client.post(
            "/v1/signup",
            json={"name": f"acme-{suffix}", "displayName": "Acme", "email": "b@acme.example"},
        )
    assert answer.status_code == 201, answer.text
    assert kube.get("subscription", f"acme-{suffix}", namespace) is not None
    # What a plan change made in Stripe's portal writes, what undoes a failed signup, and
    # what a key revoked on the dashboard writes (spec.revoked).
    account = "system:serviceaccount:tenantry-system:tenantry-api"
    for verb, resource in (("patch", "subscriptions"), ("delete", "tenants"), ("patch", "apikeys")):
        allowed = kube.kubectl("auth", "can-i", verb, f"{resource}.tenantry.io", "-A",
                               "--as", account, check=False)  # fmt: skip
        assert allowed.strip() == "yes", (verb, resource)
