"""Plans and Subscriptions say whether they are Ready, as `kubectl` and Argo CD read it.

The Plan pass is run here against stripe-mock and an unreachable Stripe; the rest
on the real control plane with the suite's operator (Stripe off), with the shipped
Argo CD health checks run over the objects it wrote."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import kopf
import pytest
from argocd_lua import health
from support import (
    SUBSCRIPTION_INTERVAL,
    Kube,
    OperatorProcess,
    condition,
    plan,
    subscription,
    tenant,
    unique_names,
    wait_for,
)
from testbed import StripeMock

from tenantry.operator import plan as plan_handler
from tenantry.operator.context import Context
from tenantry.operator.settings import OperatorSettings
from tenantry.operator.stripe.client import Stripe
from tenantry.operator.stripe.sync import STRIPE_SYNCED

NOW = dt.datetime(2031, 3, 10, 12, 0, tzinfo=dt.UTC)
LOG = logging.getLogger("tests.ready")
PLAN = {"displayName": "Pro", "price": {"amount": 9900, "currency": "USD", "interval": "month"}}
Object = dict[str, Any]


# ------------------------------------------------------------ a Plan's pass


@pytest.fixture(autouse=True)
def quiet_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf posts Events only inside an operator; the passes run here record none."""
    monkeypatch.setattr(kopf, "info", lambda *_, **__: None)
    monkeypatch.setattr(kopf, "warn", lambda *_, **__: None)


def plan_body(spec: Object, status: Object | None = None, generation: int = 1) -> kopf.Body:
    metadata = {"name": "pro", "uid": "uid-1", "generation": generation}
    return kopf.Body(
        {"apiVersion": "tenantry.io/v1alpha1", "kind": "Plan", "metadata": metadata,
         "spec": spec, "status": status or {}}
    )  # fmt: skip


def context(api: Stripe | None, now: dt.datetime = NOW) -> Context:
    return cast(Context, SimpleNamespace(stripe=api, clock=lambda: now))


def stripe_at(base: str) -> Stripe:
    api = Stripe.from_settings(
        OperatorSettings(stripe_api_key="sk_test_ready", stripe_api_base=base)
    )
    assert api is not None
    return api


def ready_of(status: Object) -> Object:
    found = condition({"status": status}, "Ready")
    assert found is not None, status
    return found


async def test_a_valid_plan_is_ready_and_an_invalid_one_says_which_field() -> None:
    status, retry = await plan_handler.reconcile(context(None), plan_body(PLAN), LOG)
    assert retry is None
    ready = ready_of(status)
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Valid", 1)
    assert status["observedGeneration"] == 1

    unknown_metric = {**PLAN, "meteredPrices": [{"metric": "messages", "unitAmount": "0.01"}]}
    an_hour_later, two_hours_later = NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)
    status, _ = await plan_handler.reconcile(
        context(None, an_hour_later), plan_body(unknown_metric, status, generation=2), LOG
    )
    refused = ready_of(status)
    assert (refused["status"], refused["reason"]) == ("False", "InvalidSpec")
    assert "'messages', which is not in spec.metrics" in refused["message"]
    assert refused["observedGeneration"] == 2
    assert refused["lastTransitionTime"] == "2031-03-10T13:00:00Z"

    # The same problem seen again: its transition time stays.
    status, _ = await plan_handler.reconcile(
        context(None, two_hours_later), plan_body(unknown_metric, status, generation=2), LOG
    )
    assert ready_of(status) == refused


async def test_with_stripe_on_a_plan_is_ready_once_its_price_is_in_stripe(
    stripe_mock: StripeMock,
) -> None:
    down = stripe_at("http://127.0.0.1:9")  # nothing listens there
    try:
        status, retry = await plan_handler.reconcile(context(down), plan_body(PLAN), LOG)
    finally:
        await down.close()
    assert retry is not None, "an unreachable Stripe is retried"
    ready = ready_of(status)
    assert (ready["status"], ready["reason"]) == ("False", "StripeUnavailable")
    assert ready["message"].startswith("Its prices are not in Stripe: ")
    assert health("Plan", {**plan_body(PLAN), "status": status})[0] == "Degraded"

    api = stripe_at(stripe_mock.url)
    try:
        status, retry = await plan_handler.reconcile(context(api), plan_body(PLAN, status), LOG)
        assert retry is None
        ready = ready_of(status)
        assert (ready["status"], ready["reason"]) == ("True", "Synced")
        assert status["stripe"]["priceId"] in ready["message"]
        assert condition({"status": status}, STRIPE_SYNCED)["status"] == "True"  # type: ignore[index]

        # A pass that finds Stripe in step calls nothing and keeps Ready as it was.
        again, _ = await plan_handler.reconcile(context(api), plan_body(PLAN, status), LOG)
        assert ready_of(again) == ready
    finally:
        await api.close()


# --------------------------------------------------------- on the test bed


@pytest.fixture
def names(kube: Kube) -> Iterator[dict[str, str]]:
    made = unique_names(kube)
    yield made
    kube.kubectl("delete", "tenants,subscriptions", "--all", "-n", made["control"], "--wait=false")
    kube.delete("namespace", made["control"])
    kube.delete("plan", made["plan"])
    kube.delete("plan", f"{made['plan']}-bad")


def ready_in(kube: Kube, kind: str, name: str, namespace: str | None, status: str) -> Object:
    """The object once its Ready is `status` for its current generation."""

    def check() -> Object | None:
        obj = kube.get(kind, name, namespace)
        ready = condition(obj, "Ready")
        if obj is None or ready is None or ready["status"] != status:
            return None
        current = ready.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current else None

    return wait_for(check, f"{kind} {name} to be Ready={status}", timeout=60)


@pytest.mark.cluster
def test_a_plan_and_a_subscription_become_ready(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    kube.apply(
        plan(names["plan"]),
        tenant(names["tenant"], names["control"]),
        subscription(names["tenant"], names["control"], names["tenant"], names["plan"]),
    )
    pro = ready_in(kube, "plan", names["plan"], None, "True")
    assert condition(pro, "Ready")["reason"] == "Valid"  # type: ignore[index]
    assert pro["status"]["observedGeneration"] == pro["metadata"]["generation"]
    sub = ready_in(kube, "subscription", names["tenant"], names["control"], "True")
    assert condition(sub, "Ready")["reason"] == "Active"  # type: ignore[index]
    assert sub["status"]["state"] == "active"
    assert health("Plan", pro) == ("Healthy", "Valid: Subscriptions may name it.")
    assert health("Subscription", sub) == ("Healthy", "Active: Subscription is active.")
    # The instance's namespace does not read as a second NAMESPACE; no date column for
    # times still to come.
    header = kube.kubectl("get", "tenants", "-A").splitlines()[0].split()
    assert header == [
        "NAMESPACE", "NAME", "PLAN", "INSTANCE-NAMESPACE", "REVISION", "VERSION",
        "LICENSE-EXPIRES", "READY", "REASON", "AGE",
    ]  # fmt: skip


@pytest.mark.cluster
def test_a_subscription_without_its_tenant_is_not_ready_until_it_appears(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    kube.apply(
        plan(names["plan"]),
        subscription(names["tenant"], names["control"], names["tenant"], names["plan"]),
    )
    orphan = ready_in(kube, "subscription", names["tenant"], names["control"], "False")
    ready = condition(orphan, "Ready")
    assert ready is not None
    assert ready["reason"] == "TenantNotFound"
    missing = f"Tenant {names['tenant']} does not exist in namespace {names['control']}"
    assert missing in ready["message"]
    status, message = health("Subscription", orphan)
    assert (status, message.split(":")[0]) == ("Degraded", "TenantNotFound")

    # Timer passes that find the same problem leave its transition time as it was.
    time.sleep(3 * SUBSCRIPTION_INTERVAL)
    later = kube.get("subscription", names["tenant"], names["control"])
    assert condition(later, "Ready") == ready

    kube.apply(tenant(names["tenant"], names["control"]))
    fixed = ready_in(kube, "subscription", names["tenant"], names["control"], "True")
    now_ready = condition(fixed, "Ready")
    assert now_ready is not None
    assert now_ready["reason"] == "Active"
    assert now_ready["lastTransitionTime"] > ready["lastTransitionTime"]


@pytest.mark.cluster
def test_a_plan_the_models_refuse_is_not_ready_and_says_why(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    # The API server accepts it (its schema cannot see across fields); the operator not.
    bad = plan(f"{names['plan']}-bad", meteredPrices=[{"metric": "messages", "unitAmount": "0.01"}])
    kube.apply(bad)
    refused = ready_in(kube, "plan", f"{names['plan']}-bad", None, "False")
    ready = condition(refused, "Ready")
    assert ready is not None
    assert ready["reason"] == "InvalidSpec"
    assert "declare it there" in ready["message"]
    assert health("Plan", refused)[0] == "Degraded"
