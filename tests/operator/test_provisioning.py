"""The Tenant's desired state, computed without a cluster."""

from __future__ import annotations

import datetime as dt

import pytest

from tenantry.core import lifecycle
from tenantry.core.resources import PlanSpec, SubscriptionSpec, SubscriptionState, TenantSpec
from tenantry.operator.provisioning import (
    Chart,
    InvalidSpec,
    IssuedLicense,
    NotReady,
    SubscriptionView,
    desired_state,
    license_due,
    license_terms,
    select_subscription,
)
from tenantry.operator.settings import OperatorSettings

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
CHART = Chart.load(OperatorSettings().chart_path)
PLAN = PlanSpec.model_validate(
    {
        "displayName": "Professional",
        "price": {"amount": 9900, "currency": "USD"},
        "features": {"ota_updates": True},
        "limits": {"devices": 50, "users": -1},
    }
)


def subscription(
    plan: str = "pro", state: SubscriptionState | None = None, trial_days: int | None = None
) -> SubscriptionView:
    spec = SubscriptionSpec.model_validate(
        {"tenantRef": {"name": "acme"}, "planRef": {"name": plan}, "trialDays": trial_days}
    )
    return SubscriptionView(name="acme", spec=spec, state=state, created=NOW)


def tenant(**spec: object) -> TenantSpec:
    return TenantSpec.model_validate(
        {"displayName": "Acme", "billingEmail": "b@acme.example", **spec}
    )


def desired(spec: TenantSpec, sub: SubscriptionView, plans: dict[str, PlanSpec] | None = None):  # type: ignore[no-untyped-def]
    return desired_state(
        tenant_id="uid-1",
        tenant_name="acme",
        tenant_namespace_prefix="tenant-",
        spec=spec,
        subscription=sub,
        plans={"pro": PLAN} if plans is None else plans,
        chart=CHART,
        license_secret="tenantry-license",
    )


def test_desired_state_names_namespace_values_and_terms() -> None:
    result = desired(tenant(values={"replicaCount": 3}), subscription())
    assert result.namespace == "tenant-acme"
    assert result.values["replicaCount"] == 3
    contract = result.values["tenantry"]
    assert contract["tenant"] == {
        "id": "uid-1", "name": "acme", "displayName": "Acme", "namespace": "tenant-acme"
    }  # fmt: skip
    assert contract["license"]["secretName"] == "tenantry-license"
    assert contract["suspended"] is False
    assert result.terms.limits == {"devices": 50, "users": -1}
    assert result.terms.subscription_status == "active"


def test_explicit_namespace_wins() -> None:
    assert desired(tenant(namespace="acme-prod"), subscription()).namespace == "acme-prod"


def test_missing_subscription_and_plan_say_what_to_apply() -> None:
    with pytest.raises(NotReady) as no_sub:
        select_subscription("acme", "customers", [])
    assert no_sub.value.reason == "SubscriptionNotFound"
    assert "spec.tenantRef.name: acme" in no_sub.value.message
    with pytest.raises(NotReady) as no_plan:
        desired(tenant(), subscription(plan="gold"))
    assert no_plan.value.reason == "PlanNotFound"
    assert "Plan gold" in no_plan.value.message


def test_two_subscriptions_for_one_tenant_is_a_spec_error() -> None:
    with pytest.raises(InvalidSpec, match="a Tenant has one Subscription"):
        select_subscription("acme", "customers", [subscription(), subscription()])


def test_chart_values_are_checked_against_the_chart_schema() -> None:
    with pytest.raises(InvalidSpec) as wrong_type:
        desired(tenant(values={"replicaCount": "lots"}), subscription())
    assert wrong_type.value.message.startswith("spec.values.replicaCount:")
    assert wrong_type.value.reason == "InvalidValues"
    with pytest.raises(InvalidSpec, match=r"spec.values: Additional properties.*replicas"):
        desired(tenant(values={"replicas": 2}), subscription())
    with pytest.raises(InvalidSpec, match=r"spec.values.image.repository: '' should be non-empty"):
        desired(tenant(values={"image": {"repository": ""}}), subscription())
    # Like helm, defaults fill what the Tenant leaves out.
    assert desired(tenant(values={"image": {"tag": "2"}}), subscription()).values["image"] == {
        "tag": "2"
    }


def test_values_tenantry_sets_are_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.values\.tenantry is set by Tenantry"):
        desired(tenant(values={"tenantry": {}}), subscription())


@pytest.mark.parametrize(
    ("state", "suspended"),
    [
        (SubscriptionState.ACTIVE, False),
        (SubscriptionState.TRIALING, False),
        (SubscriptionState.PAST_DUE, False),
        (SubscriptionState.UNPAID, True),
        (SubscriptionState.CANCELED, True),
    ],
)
def test_billing_state_drives_suspension(state: SubscriptionState, suspended: bool) -> None:
    result = desired(tenant(), subscription(state=state))
    assert result.suspended is suspended
    assert result.values["tenantry"]["suspended"] is suspended


def test_tenant_override_suspends_whatever_the_billing_state() -> None:
    assert desired(tenant(suspended=True), subscription()).suspended is True


def test_trial_from_the_plan_or_the_subscription() -> None:
    trial_plan = PLAN.model_copy(update={"trial_days": 14})
    terms = license_terms("uid", "acme", "pro", trial_plan, subscription())
    assert terms.is_trial
    assert terms.trial_end == lifecycle.trial_end(NOW, 14)  # at 00:00 UTC, at least 14 days on
    no_trial = license_terms("uid", "acme", "pro", trial_plan, subscription(trial_days=0))
    assert not no_trial.is_trial
    assert no_trial.trial_end is None


def test_license_is_issued_renewed_and_reissued_only_when_due() -> None:
    terms = license_terms("uid", "acme", "pro", PLAN, subscription())
    renew_before = dt.timedelta(days=7)
    current = IssuedLicense(
        license_id="j1",
        fingerprint=terms.fingerprint(),
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(days=30),
        plan="pro",
    )
    assert license_due(None, terms, NOW, renew_before) == "Issued"
    assert license_due(current, terms, NOW, renew_before) is None
    later = NOW + dt.timedelta(days=23)
    assert license_due(current, terms, later - dt.timedelta(seconds=1), renew_before) is None
    assert license_due(current, terms, later, renew_before) == "Renewed"
    upgraded = license_terms(
        "uid", "acme", "pro", PLAN.model_copy(update={"limits": {"devices": 500}}), subscription()
    )
    assert license_due(current, upgraded, NOW, renew_before) == "Reissued"
    past_due = license_terms(
        "uid", "acme", "pro", PLAN, subscription(state=SubscriptionState.PAST_DUE)
    )
    assert license_due(current, past_due, NOW, renew_before) == "Reissued"


def test_fingerprint_ignores_mapping_order() -> None:
    a = license_terms("uid", "acme", "pro", PLAN, subscription())
    reordered = PLAN.model_copy(update={"limits": {"users": -1, "devices": 50}})
    assert license_terms("uid", "acme", "pro", reordered, subscription()).fingerprint() == (
        a.fingerprint()
    )
