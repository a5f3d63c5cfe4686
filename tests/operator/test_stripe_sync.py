"""Keeping Stripe in step: each kind's sync against stripe-mock (Stripe's own mock, which
checks every request against Stripe's API and keeps no state), the error mapping against
canned answers, and one operator with a Stripe key on a control plane of its own.

stripe-mock answers every read with the same fixture object, so what is asserted is
what the operator asked (each request is recorded, with its idempotency key), that
Stripe's API accepted it, and the ids that land in status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import typing
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import kopf
import psycopg
import pytest
import stripe
from stripe.params._customer_create_params import CustomerCreateParamsTaxIdDatum
from support import (
    API,
    DRIFT_INTERVAL,
    REPO,
    SUBSCRIPTION_INTERVAL,
    Kube,
    OperatorProcess,
    condition,
    dig,
    plan,
    provision,
    subscription,
    tenant,
    unique_names,
    wait_for,
)
from testbed import ControlPlane, StripeMock

from tenantry.core.conditions import merge_conditions
from tenantry.core.lifecycle import Terms
from tenantry.core.resources import (
    Condition,
    CouponSpec,
    PlanSpec,
    StripePlanStatus,
    TaxRateSpec,
    TenantSpec,
)
from tenantry.operator import main, pricebook
from tenantry.operator.context import Context
from tenantry.operator.errors import StripeRefused, StripeUnavailable
from tenantry.operator.reconcile import Reconcile
from tenantry.operator.settings import OperatorSettings
from tenantry.operator.stripe import customers, plans, subscriptions
from tenantry.operator.stripe import pricebook as stripe_pricebook
from tenantry.operator.stripe.client import BACKOFF_FIRST, Stripe, idempotency_key
from tenantry.operator.stripe.sync import STRIPE_SYNCED

NOW = dt.datetime(2031, 3, 10, 12, 0, tzinfo=dt.UTC)
LOG = logging.getLogger("tests.stripe")
KEY = "sk_test_tenantry"


# ------------------------------------------------------------------ harness


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]  # form or query, flattened as Stripe encodes them: items[0][price]
    idempotency_key: str | None


class Recorder(stripe.HTTPClient):
    """Stripe's own aiohttp client, each request recorded on its way out."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.inner = stripe.AIOHTTPClient()
        self.requests: list[Request] = []

    async def request_async(  # type: ignore[override]
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        parts = urlsplit(url)
        body = post_data.decode() if isinstance(post_data, bytes) else post_data or ""
        params = dict(parse_qsl(parts.query, keep_blank_values=True)) | dict(
            parse_qsl(body, keep_blank_values=True)
        )
        self.requests.append(
            Request(method.upper(), parts.path, params, headers.get("Idempotency-Key"))
        )
        return await self.inner.request_async(method, url, headers, post_data)  # type: ignore[no-any-return]

    def sleep_async(self, secs: float) -> Any:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        await self.inner.close_async()  # type: ignore[no-untyped-call]

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if method in (None, r.method)]

    def posted(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]


class Canned(stripe.HTTPClient):
    """Answers each request with the next canned (status, body), or raises it."""

    name = "canned"

    def __init__(self, *answers: tuple[int, dict[str, Any]] | Exception) -> None:
        super().__init__()
        self.answers = list(answers)

    async def request_async(  # type: ignore[override]
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return json.dumps(body).encode(), status, {"request-id": "req_canned"}

    async def close_async(self) -> None:
        return None


def settings(base: str | None = None, **more: Any) -> OperatorSettings:
    return OperatorSettings(stripe_api_key=KEY, stripe_api_base=base, **more)


@pytest.fixture
async def recorded(stripe_mock: StripeMock) -> AsyncIterator[tuple[Stripe, Recorder]]:
    recorder = Recorder()
    api = Stripe.from_settings(
        settings(stripe_mock.url, stripe_customer_on_delete="delete"), recorder
    )
    assert api is not None
    yield api, recorder
    await api.close()


def canned(*answers: tuple[int, dict[str, Any]] | Exception) -> Stripe:
    api = Stripe.from_settings(settings("http://127.0.0.1:9"), Canned(*answers))
    assert api is not None
    return api


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """The Events the code under test records (kopf posts them only inside an operator)."""
    seen: list[tuple[str, str, str]] = []

    def recorder(kind: str) -> Any:
        return lambda _body, *, reason, message: seen.append((kind, reason, message))

    monkeypatch.setattr(kopf, "info", recorder("Normal"))
    monkeypatch.setattr(kopf, "warn", recorder("Warning"))
    return seen


def body(
    kind: str,
    spec: dict[str, Any],
    *,
    name: str = "acme",
    namespace: str | None = "customers",
    uid: str = "uid-1",
    generation: int = 1,
    status: dict[str, Any] | None = None,
) -> kopf.Body:
    metadata = {"name": name, "uid": uid, "generation": generation}
    if namespace:
        metadata["namespace"] = namespace
    raw = {"apiVersion": API, "kind": kind, "metadata": metadata, "spec": spec}
    return kopf.Body({**raw, "status": status or {}})


def after(r: Reconcile) -> list[Condition]:
    """The conditions the next pass starts from, as this pass's status patch writes them."""
    return merge_conditions(r.prior_conditions, r.observed, r.generation, r.now)


def synced_condition(r: Reconcile) -> Condition:
    found = next((c for c in after(r) if c.type == STRIPE_SYNCED), None)
    assert found is not None, "the pass observed no StripeSynced condition"
    return found


def again(r: Reconcile, new_body: kopf.Body | None = None) -> Reconcile:
    """The next pass over the same object, from the status this one wrote."""
    return Reconcile(new_body or r.body, after(r), r.now)


TENANT = {
    "displayName": "Acme Corp",
    "billingEmail": "billing@acme.example",
    "billing": {
        "legalName": "Acme Corp GmbH",
        "address": {
            "line1": "Hauptstr. 1",
            "postalCode": "10115",
            "city": "Berlin",
            "country": "DE",
        },
        "taxId": "DE123456789",
    },
}
PLAN = {
    "displayName": "Professional",
    "price": {"amount": 9900, "currency": "USD", "interval": "month"},
}


# ------------------------------------------------------------- client, keys


def test_without_a_key_stripe_is_off_and_no_handler_is_registered() -> None:
    off = OperatorSettings()
    assert Stripe.from_settings(off) is None
    assert Stripe.from_settings(OperatorSettings(stripe_api_key="")) is None

    def stripe_handlers(config: OperatorSettings) -> set[str]:
        registry = main.build_registry(config)
        names = [h.id for h in registry._indexing.get_all_handlers()]
        names += [h.id for h in registry._changing.get_all_handlers()]
        return {n for n in names if "stripe" in n}

    assert stripe_handlers(off) == set()
    # The Plan handler (operator/plan.py) runs either way; with a key it calls Stripe too.
    assert stripe_handlers(settings()) == {"stripe_customers_by_tenant", "stripe_plans_by_name"}


def test_idempotency_keys_name_the_object_generation_operation_and_parameters() -> None:
    key = idempotency_key("Tenant", "uid-1", 3, "create-customer", {"a": 1, "b": [1, 2]})
    assert key.startswith("tenantry:Tenant:uid-1:3:create-customer:")
    assert key == idempotency_key("Tenant", "uid-1", 3, "create-customer", {"b": [1, 2], "a": 1})
    others = {
        idempotency_key("Tenant", "uid-2", 3, "create-customer", {"a": 1, "b": [1, 2]}),
        idempotency_key("Tenant", "uid-1", 4, "create-customer", {"a": 1, "b": [1, 2]}),
        idempotency_key("Tenant", "uid-1", 3, "update-customer", {"a": 1, "b": [1, 2]}),
        idempotency_key("Tenant", "uid-1", 3, "create-customer", {"a": 2, "b": [1, 2]}),
    }
    assert key not in others
    assert len(others) == 4
    assert max(len(k) for k in (key, *others)) <= 255  # Stripe's limit


REFUSALS = [
    (400, "invalid_request_error", "Invalid EU VAT number.", "tax_id_data[0][value]"),
    (402, "card_error", "Your card was declined.", None),
    (401, "invalid_request_error", "Invalid API Key provided: sk_test_****", None),
    (403, "invalid_request_error", "The provided key does not have access.", None),
    (400, "idempotency_error", "Keys for idempotent requests can only be used once.", None),
]


@pytest.mark.parametrize(("status", "type_", "message", "param"), REFUSALS)
async def test_a_refusal_carries_stripes_message(
    status: int, type_: str, message: str, param: str | None
) -> None:
    error = {"type": type_, "message": message, **({"param": param} if param else {})}
    api = canned((status, {"error": error}))
    with pytest.raises(StripeRefused) as refused:
        async with api.calling("create the Customer of Tenant customers/acme"):
            await api.client.v1.customers.create_async({"email": "billing@acme.example"})
    assert refused.value.reason == "StripeRefused"
    expected = f"Stripe refused to create the Customer of Tenant customers/acme: {message}"
    assert refused.value.message == expected + (f" (parameter {param})" if param else "")


UNAVAILABLE = [
    (429, {"error": {"type": "invalid_request_error", "message": "Too many requests."}}),
    (500, {"error": {"type": "api_error", "message": "Something went wrong."}}),
    (503, {"error": {"type": "api_error", "message": "Service unavailable."}}),
    (409, {"error": {"type": "invalid_request_error", "message": "Concurrent request."}}),
    stripe.APIConnectionError("Network error: A ClientConnectorError was raised"),
]


@pytest.mark.parametrize("answer", UNAVAILABLE, ids=["429", "500", "503", "409", "connection"])
async def test_an_outage_or_a_rate_limit_is_retried_later(
    answer: tuple[int, dict[str, Any]] | Exception,
) -> None:
    api = canned(answer)
    with pytest.raises(StripeUnavailable) as unavailable:
        async with api.calling("create the Customer of Tenant customers/acme"):
            await api.client.v1.customers.create_async({"email": "billing@acme.example"})
    assert isinstance(unavailable.value, kopf.TemporaryError)
    assert str(unavailable.value).startswith(
        "Stripe is unavailable (create the Customer of Tenant customers/acme): "
    )
    assert unavailable.value.delay == BACKOFF_FIRST


async def test_the_delay_doubles_while_stripe_keeps_failing_and_resets_once_it_answers() -> None:
    busy = (429, {"error": {"type": "invalid_request_error", "message": "Too many requests."}})
    api = canned(busy, busy, busy, (200, {"id": "cus_1", "object": "customer"}), busy)
    delays = []
    for _ in range(5):
        try:
            async with api.calling("list Customers"):
                await api.client.v1.customers.create_async({})
        except StripeUnavailable as error:
            delays.append(error.delay)
    assert delays == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST, BACKOFF_FIRST]


# -------------------------------------------------------------------- Plan


async def test_a_plan_gets_a_product_and_its_base_price(
    recorded: tuple[Stripe, Recorder], events: list[tuple[str, str, str]]
) -> None:
    api, recorder = recorded
    r = Reconcile(body("Plan", PLAN, name="pro", namespace=None), [], NOW)

    assert await plans.keep_in_step(api, r, PlanSpec.model_validate(PLAN), None, LOG) is None

    assert recorder.calls() == [("POST", "/v1/products"), ("POST", "/v1/prices")]
    product, price = recorder.requests
    assert product.params == {
        "name": "Professional",
        "metadata[tenantry_plan]": "pro",
        "metadata[tenantry_plan_uid]": "uid-1",
    }
    ids = StripePlanStatus.model_validate(r.fields["stripe"])
    assert price.params["product"] == ids.product_id
    assert (price.params["unit_amount"], price.params["currency"]) == ("9900", "usd")
    assert price.params["recurring[interval]"] == "month"
    assert not any(k.startswith("recurring[usage_type]") for k in price.params), "base only"
    assert ids.price_id.startswith("price_")
    assert ids.price_fingerprint == "9900 USD per month"
    assert product.idempotency_key is not None
    assert product.idempotency_key.startswith("tenantry:Plan:uid-1:1:create-product:")
    assert price.idempotency_key is not None
    assert price.idempotency_key.startswith("tenantry:Plan:uid-1:1:create-price:")
    synced = synced_condition(r)
    assert (synced.status, synced.reason) == ("True", "Synced")
    assert ids.price_id in synced.message
    assert ("Normal", "StripePriceCreated") in [(k, reason) for k, reason, _ in events]

    # The next pass over the unchanged Plan asks Stripe nothing.
    recorder.requests.clear()
    await plans.keep_in_step(api, again(r), PlanSpec.model_validate(PLAN), ids, LOG)
    assert recorder.requests == []


async def test_a_new_price_replaces_the_old_one_which_sells_no_more(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    before = StripePlanStatus(
        product_id="prod_1", price_id="price_old", price_fingerprint="9900 USD per month"
    )
    dearer = {**PLAN, "price": {"amount": 19900, "currency": "USD", "interval": "year"}}
    prior = [
        Condition(
            type=STRIPE_SYNCED,
            status="True",
            reason="Synced",
            observed_generation=1,
            message=plans.in_step_message(before),
        )
    ]
    r = Reconcile(body("Plan", dearer, name="pro", namespace=None, generation=2), prior, NOW)

    await plans.keep_in_step(api, r, PlanSpec.model_validate(dearer), before, LOG)

    assert recorder.calls() == [
        ("POST", "/v1/products/prod_1"),
        ("POST", "/v1/prices"),
        ("POST", "/v1/prices/price_old"),
    ]
    assert recorder.requests[1].params["unit_amount"] == "19900"
    assert recorder.requests[1].params["recurring[interval]"] == "year"
    assert recorder.requests[2].params == {"active": "false"}
    ids = StripePlanStatus.model_validate(r.fields["stripe"])
    assert (ids.product_id, ids.price_fingerprint) == ("prod_1", "19900 USD per year")
    assert ids.price_id != "price_old"


# ------------------------------------------------------------------ Tenant


async def test_a_tenant_gets_a_customer_with_its_billing_details(
    recorded: tuple[Stripe, Recorder], events: list[tuple[str, str, str]]
) -> None:
    api, recorder = recorded
    r = Reconcile(body("Tenant", TENANT), [], NOW)

    await customers.keep_in_step(api, r, TenantSpec.model_validate(TENANT), None, LOG)

    assert recorder.calls() == [("GET", "/v1/customers"), ("POST", "/v1/customers")]
    assert recorder.requests[0].params == {"email": "billing@acme.example", "limit": "100"}
    created = recorder.requests[1]
    assert created.params == {
        "name": "Acme Corp GmbH",
        "email": "billing@acme.example",
        "description": "Acme Corp",
        "address[line1]": "Hauptstr. 1",
        "address[postal_code]": "10115",
        "address[city]": "Berlin",
        "address[country]": "DE",
        "tax_id_data[0][type]": "eu_vat",
        "tax_id_data[0][value]": "DE123456789",
        "metadata[tenantry_tenant_uid]": "uid-1",
        "metadata[tenantry_tenant]": "customers/acme",
    }
    customer_id = r.fields["stripeCustomerId"]
    assert customer_id.startswith("cus_")
    assert synced_condition(r).message == f"Stripe Customer {customer_id}."
    assert events == [
        (
            "Normal",
            "StripeCustomerCreated",
            f"Created Stripe Customer {customer_id} for Tenant customers/acme",
        )
    ]

    recorder.requests.clear()
    await customers.keep_in_step(api, again(r), TenantSpec.model_validate(TENANT), customer_id, LOG)
    assert recorder.requests == [], "a Tenant in step asks Stripe nothing"


async def test_a_retried_create_sends_the_same_idempotency_key(
    recorded: tuple[Stripe, Recorder],
) -> None:
    """A pass whose status never got written (the release failed after the Customer was
    made) repeats the create under the same key: Stripe answers with the same Customer."""
    api, recorder = recorded
    spec = TenantSpec.model_validate(TENANT)
    for _ in range(2):
        await customers.keep_in_step(
            api, Reconcile(body("Tenant", TENANT), [], NOW), spec, None, LOG
        )
    edited = {**TENANT, "displayName": "Acme Corporation"}
    await customers.keep_in_step(
        api,
        Reconcile(body("Tenant", edited, generation=2), [], NOW),
        TenantSpec.model_validate(edited),
        None,
        LOG,
    )

    first, retried, next_generation = recorder.posted("/v1/customers")
    assert first.idempotency_key is not None
    assert first.idempotency_key == retried.idempotency_key
    assert first.params == retried.params
    assert next_generation.idempotency_key not in (None, first.idempotency_key)


async def test_changed_billing_details_update_the_customer_and_its_tax_id(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    moved = {
        **TENANT,
        "billing": {
            "legalName": "Acme SARL",
            "taxId": "FR12345678901",
            "address": {"line1": "1 rue de Rivoli", "city": "Paris", "country": "FR"},
        },
    }
    prior = [
        Condition(
            type=STRIPE_SYNCED,
            status="True",
            reason="Synced",
            observed_generation=1,
            message="Stripe Customer cus_acme.",
        )
    ]
    r = Reconcile(body("Tenant", moved, generation=2), prior, NOW)

    await customers.keep_in_step(api, r, TenantSpec.model_validate(moved), "cus_acme", LOG)

    calls = recorder.calls()
    assert calls[:2] == [
        ("POST", "/v1/customers/cus_acme"),
        ("GET", "/v1/customers/cus_acme/tax_ids"),
    ]
    update = recorder.requests[0].params
    assert update["name"] == "Acme SARL"
    assert update["address[line1]"] == "1 rue de Rivoli"
    assert update["address[postal_code]"] == "", "a field now empty is cleared in Stripe"
    # stripe-mock's Customer holds its fixture tax id: replaced by the Tenant's.
    assert calls[2][0] == "DELETE"
    assert calls[2][1].startswith("/v1/customers/cus_acme/tax_ids/txi_")
    added = recorder.requests[3]
    assert (added.method, added.path) == ("POST", "/v1/customers/cus_acme/tax_ids")
    assert added.params == {"type": "eu_vat", "value": "FR12345678901"}
    assert "stripeCustomerId" in r.fields
    assert synced_condition(r).observed_generation == 2


async def test_a_tax_id_stripe_has_no_type_for_stays_in_tenantry(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    elsewhere = {**TENANT, "billing": {"taxId": "123-456", "address": {"country": "PE"}}}
    r = Reconcile(body("Tenant", elsewhere), [], NOW)

    await customers.keep_in_step(api, r, TenantSpec.model_validate(elsewhere), None, LOG)

    assert not any(k.startswith("tax_id_data") for k in recorder.posted("/v1/customers")[0].params)
    synced = synced_condition(r)
    assert synced.status == "True"
    assert "not sent to Stripe" in synced.message
    assert "country PE" in synced.message


def test_every_tax_id_type_is_one_stripe_knows() -> None:
    def literals(annotation: Any) -> set[str]:
        if typing.get_origin(annotation) is typing.Literal:
            return set(typing.get_args(annotation))
        return set().union(*(literals(a) for a in typing.get_args(annotation)))

    known = literals(typing.get_type_hints(CustomerCreateParamsTaxIdDatum)["type"])
    assert set(customers.TAX_ID_TYPES.values()) <= known


async def test_a_refused_customer_shows_stripes_message_once_and_the_pass_goes_on(
    events: list[tuple[str, str, str]],
) -> None:
    invalid = {
        "error": {
            "type": "invalid_request_error",
            "message": "Invalid EU VAT number.",
            "param": "tax_id_data[0][value]",
        }
    }
    listed = (200, {"object": "list", "data": [], "has_more": False, "url": "/v1/customers"})
    api = canned(listed, (400, invalid), listed, (400, invalid))
    spec = TenantSpec.model_validate(TENANT)
    r = Reconcile(body("Tenant", TENANT), [], NOW)

    retry = await customers.keep_in_step(api, r, spec, None, LOG)  # returns; does not raise

    assert retry is None
    synced = synced_condition(r)
    assert (synced.status, synced.reason) == ("False", "StripeRefused")
    assert synced.message == (
        "Stripe refused to create the Customer of Tenant customers/acme: Invalid EU VAT number. "
        "(parameter tax_id_data[0][value])"
    )
    assert "stripeCustomerId" not in r.fields
    assert events == [("Warning", "StripeRefused", synced.message)]

    # The next pass tries again (the Tenant's timer), and says nothing new.
    second = again(r)
    await customers.keep_in_step(api, second, spec, None, LOG)
    assert synced_condition(second).reason == "StripeRefused"
    assert len(events) == 1


async def test_an_unavailable_stripe_is_a_condition_and_a_retry() -> None:
    api = canned((503, {"error": {"type": "api_error", "message": "Service unavailable."}}))
    r = Reconcile(body("Tenant", TENANT), [], NOW)

    retry = await customers.keep_in_step(api, r, TenantSpec.model_validate(TENANT), None, LOG)

    assert isinstance(retry, StripeUnavailable)
    assert retry.delay == BACKOFF_FIRST
    synced = synced_condition(r)
    assert (synced.status, synced.reason) == ("False", "StripeUnavailable")
    assert synced.message.startswith("Stripe is unavailable (look up the Customer of Tenant")


async def test_a_deleted_tenants_customer_is_deleted_when_the_settings_say_so(
    recorded: tuple[Stripe, Recorder], events: list[tuple[str, str, str]]
) -> None:
    api, recorder = recorded
    gone = body("Tenant", TENANT, status={"stripeCustomerId": "cus_acme"})

    await customers.finalize(api, gone, LOG)
    assert recorder.calls() == [("DELETE", "/v1/customers/cus_acme")]
    assert events[-1][1] == "StripeCustomerDeleted"

    recorder.requests.clear()
    api.customer_on_delete = "keep"
    await customers.finalize(api, gone, LOG)
    assert recorder.requests == []


# ------------------------------------------------------------ Subscription


def terms(**changes: Any) -> Terms:
    fields: dict[str, Any] = {
        "uid": "sub-uid-1",
        "namespace": "customers",
        "name": "acme",
        "tenant_uid": "uid-1",
        "tenant_name": "acme",
        "plan_name": "pro",
        "plan": PlanSpec.model_validate(PLAN),
        "started_at": dt.datetime(2031, 3, 10, 12, 0, tzinfo=dt.UTC),
        "anchor_day": 10,
    }
    return Terms(**(fields | changes))


def at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)


def test_stripes_periods_are_anchored_on_tenantrys_boundaries() -> None:
    # A trial to March 25 (anchor day 25): Stripe's trial ends there, and its first paid
    # period is Tenantry's, March 25 to April 25.
    trial = terms(trial_end=at("2031-03-25"), anchor_day=25)
    want = subscriptions.desired(trial, "cus_1", "price_1", NOW)
    assert (want.trial_end, want.billing_cycle_anchor) == (at("2031-03-25"), at("2031-04-25"))
    params = subscriptions.create_params(want, trial, NOW)
    assert params["trial_end"] == int(at("2031-03-25").timestamp())
    assert params["billing_cycle_anchor"] == int(at("2031-04-25").timestamp())
    assert params["proration_behavior"] == "none"

    # No trial, anchor day 1, created on the 10th: the short first period ends April 1.
    short = terms(anchor_day=1)
    assert subscriptions.desired(short, "cus_1", "price_1", NOW).billing_cycle_anchor == at(
        "2031-04-01"
    )

    # Made in Stripe only in May (Stripe turned on later): the next boundary, no trial.
    later = dt.datetime(2031, 5, 15, tzinfo=dt.UTC)
    want = subscriptions.desired(trial, "cus_1", "price_1", later)
    assert want.billing_cycle_anchor == at("2031-05-25")
    assert "trial_end" not in subscriptions.create_params(want, trial, later)

    ending = terms(cancel_at=at("2031-04-10"))
    assert subscriptions.create_params(
        subscriptions.desired(ending, "cus_1", "price_1", NOW), ending, NOW
    )["cancel_at_period_end"]


def stripe_refs(customer: str | None = "cus_acme", price: str = "price_pro") -> subscriptions.Refs:
    ids = {"productId": "prod_pro", "priceId": price, "priceFingerprint": "9900 USD per month"}
    return subscriptions.Refs(customer_id=customer, plans={"pro": [ids]})


async def test_a_subscription_is_made_on_the_plans_price_and_nothing_else(
    recorded: tuple[Stripe, Recorder], events: list[tuple[str, str, str]]
) -> None:
    api, recorder = recorded
    trial = terms(trial_end=at("2031-03-25"), anchor_day=25)
    r = Reconcile(body("Subscription", {}, uid="sub-uid-1"), [], NOW)

    synced = await subscriptions.keep_in_step(api, r, trial, stripe_refs(), None, LOG)

    assert recorder.calls() == [("GET", "/v1/subscriptions"), ("POST", "/v1/subscriptions")]
    assert recorder.requests[0].params == {"customer": "cus_acme", "status": "all", "limit": "100"}
    create = recorder.requests[1]
    assert create.params == {
        "customer": "cus_acme",
        "items[0][price]": "price_pro",
        "billing_cycle_anchor": str(int(at("2031-04-25").timestamp())),
        "trial_end": str(int(at("2031-03-25").timestamp())),
        "proration_behavior": "none",
        "cancel_at_period_end": "false",
        "metadata[tenantry_subscription_uid]": "sub-uid-1",
        "metadata[tenantry_subscription]": "customers/acme",
        "metadata[tenantry_tenant]": "customers/acme",
    }, "no coupon, discount or tax rate: Tenantry computes those once, itself"
    assert create.idempotency_key is not None
    assert create.idempotency_key.startswith(
        "tenantry:Subscription:sub-uid-1:1:create-subscription:"
    )
    assert synced is not None
    made = synced.subscription_id
    assert (made[:4], synced.customer_id) == ("sub_", "cus_acme")
    assert r.fields["stripeSubscriptionId"] == made
    synced = synced_condition(r)
    assert synced.message == (
        f"Stripe Subscription {made}: Customer cus_acme, Price price_pro, "
        "trial until 2031-03-25T00:00Z."
    )
    assert events[-1][1] == "StripeSubscriptionCreated"

    recorder.requests.clear()
    assert await subscriptions.keep_in_step(api, again(r), trial, stripe_refs(), made, LOG) is None
    assert recorder.requests == [], "a Subscription in step asks Stripe nothing"


async def test_a_plan_change_moves_the_item_to_the_new_price_without_proration(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    old = subscriptions.desired(terms(), "cus_acme", "price_pro", NOW)
    prior = [
        Condition(
            type=STRIPE_SYNCED,
            status="True",
            reason="Synced",
            observed_generation=1,
            message=subscriptions.in_step_message("sub_acme", old),
        )
    ]
    r = Reconcile(body("Subscription", {}, uid="sub-uid-1", generation=2), prior, NOW)

    await subscriptions.keep_in_step(
        api, r, terms(), stripe_refs(price="price_team"), "sub_acme", LOG
    )

    assert recorder.calls() == [
        ("GET", "/v1/subscriptions/sub_acme"),
        ("POST", "/v1/subscriptions/sub_acme"),
    ]
    update = recorder.requests[1].params
    assert update["items[0][price]"] == "price_team"
    assert update["items[0][id]"].startswith("si_")
    assert update["proration_behavior"] == "none"
    # stripe-mock's fixture is set to cancel at period end; the spec is not.
    assert update["cancel_at_period_end"] == "false"
    assert synced_condition(r).message.endswith("Price price_team.")


async def test_a_subscription_waits_for_its_customer_and_its_price(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    r = Reconcile(body("Subscription", {}, uid="sub-uid-1"), [], NOW)
    await subscriptions.keep_in_step(api, r, terms(), stripe_refs(customer=None), None, LOG)
    assert synced_condition(r).reason == "CustomerPending"

    r = Reconcile(body("Subscription", {}, uid="sub-uid-1"), [], NOW)
    dearer = terms(
        plan=PlanSpec.model_validate({**PLAN, "price": {"amount": 1, "currency": "USD"}})
    )
    await subscriptions.keep_in_step(api, r, dearer, stripe_refs(), None, LOG)
    synced = synced_condition(r)
    assert synced.reason == "PricePending"
    assert "1 USD per month" in synced.message
    assert recorder.requests == []


async def test_a_deleted_subscription_is_canceled_in_stripe_now(
    recorded: tuple[Stripe, Recorder], events: list[tuple[str, str, str]]
) -> None:
    api, recorder = recorded
    gone = body("Subscription", {}, status={"stripeSubscriptionId": "sub_acme"})

    await subscriptions.cancel_now(api, gone, LOG)

    assert recorder.calls() == [("DELETE", "/v1/subscriptions/sub_acme")]
    assert recorder.requests[0].params == {"invoice_now": "false", "prorate": "false"}
    assert events[-1][1] == "StripeSubscriptionCanceled"


# --------------------------------------------------------- Coupon, TaxRate


COUPON = {
    "displayName": "Launch",
    "percentOff": "12.5",
    "duration": "repeating",
    "durationPeriods": 3,
    "maxRedemptions": 100,
    "redeemBy": "2032-01-01T00:00:00Z",
}
TAX_RATE = {"displayName": "VAT", "percentage": "19", "country": "DE", "inclusive": False}


def context(api: Stripe | None) -> Context:
    """What the Coupon and TaxRate handlers read of the Context."""
    return cast(Context, SimpleNamespace(stripe=api, database=None, clock=lambda: NOW))


async def test_a_coupon_and_a_tax_rate_exist_in_stripe_and_say_so_in_status(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    coupon = body("Coupon", COUPON, name="launch", namespace=None)
    status, retry = await pricebook.reconcile_coupon(context(api), coupon, LOG)

    assert retry is None
    create = recorder.posted("/v1/coupons")[0]
    assert create.params == {
        "name": "Launch",
        "percent_off": "12.5",
        "duration": "repeating",
        "duration_in_months": "3",
        "max_redemptions": "100",
        "redeem_by": str(int(at("2032-01-01").timestamp())),
        "metadata[tenantry_coupon_uid]": "uid-1",
        "metadata[tenantry_coupon]": "launch",
    }
    assert status["stripeId"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        STRIPE_SYNCED: "True",
    }

    rate = body("TaxRate", TAX_RATE, name="vat-de", namespace=None)
    status, retry = await pricebook.reconcile_tax_rate(context(api), rate, LOG)
    assert retry is None
    assert recorder.posted("/v1/tax_rates")[0].params == {
        "display_name": "VAT",
        "percentage": "19.0",
        "inclusive": "false",
        "country": "DE",
        "metadata[tenantry_taxrate_uid]": "uid-1",
        "metadata[tenantry_taxrate]": "vat-de",
    }
    assert status["stripeId"].startswith("txr_")


async def test_a_changed_coupon_is_made_anew_and_the_old_one_deleted(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    r = Reconcile(body("Coupon", COUPON, name="launch", namespace=None, generation=2), [], NOW)

    await stripe_pricebook.keep_coupon_in_step(
        api, r, CouponSpec.model_validate(COUPON), "launch_old", LOG
    )

    # stripe-mock's coupon is 25.5% off forever: not this one.
    assert recorder.calls() == [
        ("GET", "/v1/coupons/launch_old"),
        ("POST", "/v1/coupons"),
        ("DELETE", "/v1/coupons/launch_old"),
    ]
    assert r.fields["stripeId"] != "launch_old"


async def test_a_changed_rate_is_made_anew_and_the_old_one_archived(
    recorded: tuple[Stripe, Recorder],
) -> None:
    api, recorder = recorded
    higher = {**TAX_RATE, "percentage": "21"}
    r = Reconcile(body("TaxRate", higher, name="vat-de", namespace=None, generation=2), [], NOW)

    await stripe_pricebook.keep_tax_rate_in_step(
        api, r, TaxRateSpec.model_validate(higher), "txr_old", LOG
    )

    calls = recorder.calls()
    assert calls[0] == ("GET", "/v1/tax_rates/txr_old")
    assert calls[1] == ("POST", "/v1/tax_rates")
    assert recorder.requests[1].params["percentage"] == "21.0"
    archived = recorder.requests[2]
    assert (archived.method, archived.path, archived.params) == (
        "POST",
        "/v1/tax_rates/txr_old",
        {"active": "false"},
    )


async def test_with_stripe_off_the_pricebook_never_calls_it() -> None:
    coupon = body("Coupon", COUPON, name="launch", namespace=None)
    status, retry = await pricebook.reconcile_coupon(context(None), coupon, LOG)
    assert retry is None
    assert "stripeId" not in status
    assert [c["type"] for c in status["conditions"]] == ["Ready"]
    status, retry = await pricebook.reconcile_tax_rate(
        context(None), body("TaxRate", TAX_RATE, name="vat-de", namespace=None), LOG
    )
    assert "stripeId" not in status
    assert [c["type"] for c in status["conditions"]] == ["Ready"]


# ------------------------------------------------------------ end to end


@pytest.mark.cluster
def test_the_suites_operator_without_a_key_leaves_stripe_alone(
    kube: Kube, operator: OperatorProcess
) -> None:
    names = unique_names(kube)
    ready = provision(kube, names)
    assert "stripeCustomerId" not in ready["status"]
    assert condition(ready, STRIPE_SYNCED) is None
    sub = kube.get("subscription", names["tenant"], names["control"])
    assert condition(sub, STRIPE_SYNCED) is None
    assert "stripeSubscriptionId" not in (sub or {}).get("status", {})
    assert "stripe" not in ((kube.get("plan", names["plan"]) or {}).get("status") or {})
    log = operator.log_text()
    assert "Keeping Stripe in step" not in log
    assert "Created Stripe" not in log
    kube.kubectl("delete", "tenants,subscriptions", "--all", "-n", names["control"], "--wait=false")
    kube.delete("plan", names["plan"])


@pytest.fixture(scope="module")
def stripe_kube(tmp_path_factory: pytest.TempPathFactory, tools: dict[str, Path]) -> Iterator[Kube]:
    """A control plane of its own: the suite's operator (no Stripe key) reconciles every
    object of the suite's cluster, so an operator with a key needs another cluster."""
    plane = ControlPlane(tmp_path_factory.mktemp("stripe-control-plane")).start()
    cluster = Kube(kubeconfig=plane.kubeconfig, helm_binary=tools["helm"])
    try:
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for", "condition=Established", "crd", "--all", "--timeout=60s")
        yield cluster
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def stripe_operator(
    stripe_kube: Kube,
    database: str,
    clock_file: Path,
    stripe_mock: StripeMock,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        stripe_kube,
        tmp_path_factory.mktemp("stripe-operator") / "operator.log",
        {
            "TENANTRY_OPERATOR_HELM": str(stripe_kube.helm_binary),
            "TENANTRY_OPERATOR_DRIFT_INTERVAL": str(DRIFT_INTERVAL),
            "TENANTRY_OPERATOR_SUBSCRIPTION_INTERVAL": str(SUBSCRIPTION_INTERVAL),
            "TENANTRY_OPERATOR_DATABASE_URL": database,
            "TENANTRY_CLOCK_OFFSET_FILE": str(clock_file),
            "TENANTRY_OPERATOR_STRIPE_API_KEY": KEY,
            "TENANTRY_OPERATOR_STRIPE_API_BASE": stripe_mock.url,
            "TENANTRY_OPERATOR_STRIPE_CUSTOMER_ON_DELETE": "delete",
        },
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


def synced_in(obj: dict[str, Any] | None) -> bool:
    found = condition(obj, STRIPE_SYNCED)
    return bool(found and found["status"] == "True")


@pytest.mark.cluster
def test_an_operator_with_a_key_keeps_every_kind_in_step_with_stripe(
    stripe_kube: Kube, stripe_operator: OperatorProcess, database: str
) -> None:
    kube = stripe_kube
    names = unique_names(kube)
    suffix = uuid.uuid4().hex[:6]
    coupon, rate = f"launch-{suffix}", f"vat-{suffix}"
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Coupon",
            "metadata": {"name": coupon},
            "spec": {"percentOff": "20", "duration": "once"},
        },
        {"apiVersion": API, "kind": "TaxRate", "metadata": {"name": rate}, "spec": TAX_RATE},
        plan(names["plan"], trialDays=14),
        tenant(names["tenant"], names["control"], billing=TENANT["billing"]),
        subscription(
            names["tenant"],
            names["control"],
            names["tenant"],
            names["plan"],
            coupon=coupon,
            taxRates=[rate],
        ),
    )

    def stripe_ids() -> dict[str, str] | None:
        plan_ = kube.get("plan", names["plan"])
        tenant_ = kube.get("tenant", names["tenant"], names["control"])
        sub = kube.get("subscription", names["tenant"], names["control"])
        if not all(synced_in(o) for o in (plan_, tenant_, sub)):
            return None
        return {
            "price": dig(plan_, "status", "stripe", "priceId"),
            "customer": dig(tenant_, "status", "stripeCustomerId"),
            "subscription": dig(sub, "status", "stripeSubscriptionId"),
            "coupon": dig(kube.get("coupon", coupon), "status", "stripeId"),
            "rate": dig(kube.get("taxrate", rate), "status", "stripeId"),
        }

    ids = wait_for(stripe_ids, "every kind to be in step with Stripe", timeout=90)
    assert ids["price"].startswith("price_")
    assert ids["customer"].startswith("cus_")
    assert ids["subscription"].startswith("sub_")
    assert ids["coupon"]
    assert ids["rate"].startswith("txr_")

    def consistent() -> dict[str, Any] | None:
        """Status, condition and row agree. (stripe-mock replays no idempotent request: a
        pass repeated before the first one's status landed gets a new id there, where
        Stripe would answer with the first; the ids settle on the last one.)"""
        tenant_ = kube.get("tenant", names["tenant"], names["control"])
        sub = kube.get("subscription", names["tenant"], names["control"])
        customer = dig(tenant_, "status", "stripeCustomerId")
        made = dig(sub, "status", "stripeSubscriptionId")
        message = (condition(sub, STRIPE_SYNCED) or {}).get("message", "")
        if f"Stripe Subscription {made}: Customer {customer}, Price {ids['price']}" not in message:
            return None
        with psycopg.connect(database.replace("+psycopg", "")) as conn:
            row = conn.execute(
                "SELECT stripe_customer_id, stripe_subscription_id FROM subscriptions"
                " WHERE uid = %s",
                (sub["metadata"]["uid"],),  # type: ignore[index]
            ).fetchone()
        return sub if row == (customer, made) else None

    sub = wait_for(consistent, "the Subscription's row to hold the Stripe ids in its status")
    assert ", trial until " in condition(sub, STRIPE_SYNCED)["message"]  # type: ignore[index]
    assert sub["status"]["state"] == "trialing"
    customer = kube.get("tenant", names["tenant"], names["control"])["status"]["stripeCustomerId"]  # type: ignore[index]

    kube.delete("subscription", names["tenant"], names["control"], wait=True)
    made = sub["status"]["stripeSubscriptionId"]
    wait_for(
        lambda: f"Canceled Stripe Subscription {made}" in stripe_operator.log_text(),
        "the deleted Subscription to be canceled in Stripe",
    )
    kube.delete("tenant", names["tenant"], names["control"], wait=True)
    wait_for(
        lambda: f"Deleted Stripe Customer {customer}" in stripe_operator.log_text(),
        "the deleted Tenant's Customer to be deleted in Stripe",
        timeout=60,
    )
