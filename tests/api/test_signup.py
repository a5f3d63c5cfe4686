"""Self-serve signup on the real control plane: resources made, provisioned, rate-limited.

Each test has a signup namespace and Plan of its own, and an API process with
signup on there; the suite's operator provisions what signup makes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from api_harness import ApiServer
from stripe_support import stripe_env
from support import Clock, Kube, dig, is_ready, plan, secret, wait_for
from testbed import StripeMock

from tenantry.api.links import Links

# The suite's operator provisions what signup makes.
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]


def signup_place(kube: Kube, trial_days: int = 14) -> tuple[str, str]:
    """A namespace for signups and a Plan they may choose."""
    suffix = uuid.uuid4().hex[:6]
    namespace, plan_name = f"signups-{suffix}", f"starter-{suffix}"
    kube.kubectl("create", "namespace", namespace)
    kube.apply(plan(plan_name, trialDays=trial_days))
    return namespace, plan_name


def form(name: str | None = None, **changes: Any) -> dict[str, Any]:
    name = name or f"acme-{uuid.uuid4().hex[:6]}"
    return {"name": name, "displayName": "Acme Robotics", "email": "billing@acme.example",
            **changes}  # fmt: skip


async def post(api: ApiServer, body: dict[str, Any] | bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        if isinstance(body, bytes):
            return await client.post(
                "/v1/signup", content=body, headers={"Content-Type": "application/json"}
            )
        return await client.post("/v1/signup", json=body)


async def test_without_a_namespace_signup_is_off(api_server: ApiServer) -> None:
    answer = await post(api_server, form())
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "signup_disabled"
    assert "TENANTRY_SIGNUP_NAMESPACE" in answer.json()["error"]["message"]


async def test_a_signup_makes_a_tenant_that_the_operator_provisions(
    kube: Kube, start_api: Callable[..., ApiServer]
) -> None:
    namespace, plan_name = signup_place(kube)
    api = start_api(TENANTRY_SIGNUP_NAMESPACE=namespace, TENANTRY_SIGNUP_PLANS=plan_name)
    body = form(billing={"legalName": "Acme Robotics GmbH", "taxId": "DE123456789",
                         "address": {"city": "Berlin", "country": "DE"}})  # fmt: skip
    answer = await post(api, body)
    assert answer.status_code == 201, answer.text
    key = f"{namespace}/{body['name']}"
    assert answer.json() == {"tenant": key, "subscription": key, "plan": plan_name,
                             "trialDays": 14, "checkoutUrl": None}  # fmt: skip

    tenant = kube.get("tenant", body["name"], namespace)
    assert tenant is not None
    assert tenant["metadata"]["labels"]["tenantry.io/signup"] == "true"
    assert tenant["spec"]["billingEmail"] == "billing@acme.example"
    assert tenant["spec"]["billing"]["legalName"] == "Acme Robotics GmbH"
    sub = wait_for(
        lambda: (
            (s := kube.get("subscription", body["name"], namespace))
            and dig(s, "status", "state")
            and s
        ),
        "the signup's Subscription has a state",
    )
    assert sub["spec"]["planRef"] == {"name": plan_name}
    assert sub["status"]["state"] == "trialing"
    assert sub["metadata"]["ownerReferences"][0]["uid"] == tenant["metadata"]["uid"]
    ready = wait_for(
        lambda: (t := kube.get("tenant", body["name"], namespace)) and is_ready(t) and t,
        "the signup's Tenant Ready",
        90,
    )
    assert ready["status"]["plan"] == plan_name
    assert ready["status"]["release"]["status"] == "deployed"

    # The name is now taken: nothing else is made, the first stays as it was.
    again = await post(api, form(body["name"], displayName="Someone Else"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "name_taken"
    assert kube.get("tenant", body["name"], namespace)["spec"]["displayName"] == "Acme Robotics"


async def test_what_signup_refuses_it_explains_and_makes_nothing(
    kube: Kube, start_api: Callable[..., ApiServer]
) -> None:
    namespace, plan_name = signup_place(kube)
    api = start_api(TENANTRY_SIGNUP_NAMESPACE=namespace, TENANTRY_SIGNUP_PLANS=plan_name)
    cases: list[tuple[dict[str, Any] | bytes, int, str]] = [
        (form(plan="enterprise"), 422, "plan_not_offered"),
        (form(name="Not A Name"), 422, "invalid_request"),
        (form(email="nobody"), 422, "invalid_request"),
        (form(admin=True), 422, "invalid_request"),
        ({"name": "acme"}, 422, "invalid_request"),
        (b"{not json", 422, "invalid_request"),
        (b'{"name": "' + b"a" * 9000 + b'"}', 413, "payload_too_large"),
    ]
    for body, status, code in cases:
        answer = await post(api, body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
        assert answer.json()["error"]["message"]
    offered = (await post(api, form(plan="enterprise"))).json()["error"]
    assert plan_name in offered["message"]
    assert offered["details"]["offered"] == [plan_name]
    made = kube.kubectl("get", "tenants,subscriptions", "-n", namespace, "-o", "name")
    assert made.strip() == ""


async def test_each_address_may_sign_up_a_few_times_per_window(
    kube: Kube, start_api: Callable[..., ApiServer], clock: Clock
) -> None:
    namespace, plan_name = signup_place(kube)
    api = start_api(TENANTRY_SIGNUP_NAMESPACE=namespace, TENANTRY_SIGNUP_PLANS=plan_name,
                    TENANTRY_SIGNUP_RATE_LIMIT="2", TENANTRY_SIGNUP_RATE_WINDOW="3600")  # fmt: skip
    # Far from a window's edge, so the three attempts share one.
    now = clock.now()
    clock.move_past(now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1))
    names = [f"rate-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    answers = [await post(api, form(name)) for name in names]
    assert [a.status_code for a in answers] == [201, 201, 429]
    refused = answers[2]
    assert refused.json()["error"]["code"] == "signup_rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert kube.get("tenant", names[2], namespace) is None
    # The next window admits again.
    clock.advance(seconds=3600)
    assert (await post(api, form())).status_code == 201


async def test_with_stripe_the_answer_leads_to_checkout_once_the_customer_exists(
    kube: Kube, start_api: Callable[..., ApiServer], stripe_mock: StripeMock, database: str,
    clock: Clock,
) -> None:  # fmt: skip
    namespace, plan_name = signup_place(kube)
    api = start_api(
        **stripe_env(stripe_mock, database, "signup"),
        TENANTRY_SIGNUP_NAMESPACE=namespace, TENANTRY_SIGNUP_PLANS=plan_name,
        TENANTRY_STRIPE_CHECKOUT_SUCCESS_URL="https://app.example/welcome",
    )  # fmt: skip
    try:
        await signup_to_checkout(api, kube, clock, namespace)
    finally:
        api.stop()  # its Stripe worker must take no other module's events


async def signup_to_checkout(api: ApiServer, kube: Kube, clock: Clock, namespace: str) -> None:
    body = form()
    answer = await post(api, body)
    assert answer.status_code == 201, answer.text
    link = answer.json()["checkoutUrl"]
    assert link.startswith(f"{api.url}/v1/signup/checkout?token=")
    async with httpx.AsyncClient(timeout=30) as client:
        # The suite's operator has no Stripe key: the Customer is not made yet.
        waiting = await client.get(link)
        assert waiting.status_code == 503
        assert waiting.json()["error"]["code"] == "checkout_preparing"
        assert waiting.headers["Retry-After"]
        assert waiting.headers["Refresh"]
        # What the operator writes once it has made the Customer.
        kube.kubectl(
            "patch", "tenant", body["name"], "-n", namespace, "--subresource=status",
            "--type=merge", "-p", '{"status": {"stripeCustomerId": "cus_123"}}',
        )  # fmt: skip
        opened = await client.get(link)
        assert opened.status_code == 303, opened.text
        assert opened.headers["location"].startswith("https://")

        token = secret(parse_qs(urlsplit(link).query)["token"][0])
        forged = Links("another-admin-token").sign(
            "signup-checkout", f"{namespace}/someone-else", clock.now() + dt.timedelta(hours=1)
        )
        for bad, code in ((token[:-2] + "xx", "invalid_link"), (forged, "invalid_link")):
            refused = await client.get(f"{api.url}/v1/signup/checkout", params={"token": bad})
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, code)
        clock.advance(days=1, seconds=60)
        expired = await client.get(link)
        assert (expired.status_code, expired.json()["error"]["code"]) == (403, "link_expired")
