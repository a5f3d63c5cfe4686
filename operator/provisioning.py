"""What should exist for a Tenant, computed from plain data without I/O.

The Tenant handler reads the objects, calls these functions, applies the
result through the adapters and writes one status patch. Everything here is
tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tenantry.core import lifecycle
from tenantry.core.periods import CALENDAR_MONTHS, BillingCycle
from tenantry.core.resources import PlanSpec, SubscriptionSpec, SubscriptionState, TenantSpec
from tenantry.operator.errors import InvalidSpec, NotReady

# Subscription states in which the instance is scaled to zero. `past_due`
# keeps running while Stripe retries the payment; it ends in `unpaid`.
SUSPENDING_STATES = frozenset({SubscriptionState.UNPAID, SubscriptionState.CANCELED})

# Chart values Tenantry sets itself; a Tenant setting them is a spec error.
RESERVED_VALUES = ("tenant", "license", "suspended")


@dataclass(frozen=True)
class SubscriptionView:
    """What the Tenant reconcile needs of a Subscription."""

    name: str
    spec: SubscriptionSpec
    state: SubscriptionState | None = None
    trial_end: dt.datetime | None = None
    period_end: dt.datetime | None = None
    created: dt.datetime | None = None
    cycle: BillingCycle | None = None  # as the Subscription's status says


@dataclass(frozen=True)
class LicenseTerms:
    """Everything a license grants, without its times: a change here re-issues it."""

    tenant_id: str
    tenant_name: str
    plan: str
    plan_display_name: str
    features: Mapping[str, bool]
    limits: Mapping[str, int]
    subscription_status: str
    trial_end: dt.datetime | None
    period_end: dt.datetime | None

    @property
    def is_trial(self) -> bool:
        return self.subscription_status == SubscriptionState.TRIALING

    def fingerprint(self) -> str:
        canonical = json.dumps(
            {
                "tenant": [self.tenant_id, self.tenant_name],
                "plan": [self.plan, self.plan_display_name],
                "features": dict(sorted(self.features.items())),
                "limits": dict(sorted(self.limits.items())),
                "subscription": [
                    self.subscription_status,
                    _iso(self.trial_end),
                    _iso(self.period_end),
                ],
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedLicense:
    """What the license Secret's annotations say about the license it holds."""

    license_id: str
    fingerprint: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    plan: str
    token_sha256: str | None = None


@dataclass(frozen=True)
class Desired:
    namespace: str
    plan_name: str
    state: SubscriptionState
    terms: LicenseTerms
    values: dict[str, Any]
    suspended: bool
    cycle: BillingCycle


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def tenant_namespace(tenant_name: str, spec: TenantSpec, prefix: str) -> str:
    return spec.namespace or f"{prefix}{tenant_name}"[:63].rstrip("-")


def select_subscription(
    tenant_name: str, namespace: str, subscriptions: Sequence[SubscriptionView]
) -> SubscriptionView:
    if not subscriptions:
        raise NotReady(
            "SubscriptionNotFound",
            f"No Subscription in namespace {namespace} names this Tenant: apply one with "
            f"spec.tenantRef.name: {tenant_name}.",
        )
    if len(subscriptions) > 1:
        names = ", ".join(sorted(s.name for s in subscriptions))
        raise InvalidSpec(
            f"Subscriptions {names} all name Tenant {tenant_name}; a Tenant has one "
            "Subscription: delete the others.",
            reason="ConflictingSubscriptions",
        )
    return subscriptions[0]


def effective_state(subscription: SubscriptionView, plan: PlanSpec) -> SubscriptionState:
    """The state billing reported, or before it reports one, what the plan implies."""
    if subscription.state is not None:
        return subscription.state
    trial_days = (
        subscription.spec.trial_days
        if subscription.spec.trial_days is not None
        else plan.trial_days
    )
    return SubscriptionState.TRIALING if trial_days > 0 else SubscriptionState.ACTIVE


def trial_end(subscription: SubscriptionView, plan: PlanSpec) -> dt.datetime | None:
    if subscription.trial_end or subscription.created is None:
        return subscription.trial_end
    days = (
        subscription.spec.trial_days
        if subscription.spec.trial_days is not None
        else plan.trial_days
    )
    return lifecycle.trial_end(subscription.created, days)


def license_terms(
    tenant_id: str,
    tenant_name: str,
    plan_name: str,
    plan: PlanSpec,
    subscription: SubscriptionView,
    now: dt.datetime | None = None,
) -> LicenseTerms:
    """What the license grants. Before the Subscription's status names its period, the
    period is computed here as the operator will write it (given `now`), so the license
    is not signed twice: once without, once with the period."""
    state = effective_state(subscription, plan)
    period_end = subscription.period_end
    if period_end is None and now is not None:
        period_end = billing_cycle(subscription, plan).period_at(now).end
    return LicenseTerms(
        tenant_id=tenant_id,
        tenant_name=tenant_name,
        plan=plan_name,
        plan_display_name=plan.display_name,
        features=dict(plan.features),
        limits=dict(plan.limits),
        subscription_status=state.value,
        trial_end=trial_end(subscription, plan) if state == SubscriptionState.TRIALING else None,
        period_end=period_end,
    )


def billing_cycle(subscription: SubscriptionView, plan: PlanSpec) -> BillingCycle:
    """The subscription's periods as its status says, or before it says: after the trial
    (or from its creation), on its anchor day, every interval of its plan."""
    if subscription.cycle is not None:
        return subscription.cycle
    trial = trial_end(subscription, plan)
    created = subscription.created or CALENDAR_MONTHS.start
    start = trial or created
    anchor_day = subscription.spec.billing_cycle_anchor_day or start.astimezone(dt.UTC).day
    return BillingCycle(
        start=start,
        interval=plan.price.interval,
        anchor_day=anchor_day,
        trial_start=created if trial else None,
    )


def should_suspend(spec: TenantSpec, state: SubscriptionState) -> bool:
    return spec.suspended or state in SUSPENDING_STATES


def license_due(
    existing: IssuedLicense | None,
    terms: LicenseTerms,
    now: dt.datetime,
    renew_before: dt.timedelta,
) -> str | None:
    """Why a new license must be issued now, or None when the current one stands."""
    if existing is None:
        return "Issued"
    if existing.fingerprint != terms.fingerprint():
        return "Reissued"
    if existing.expires_at - now <= renew_before:
        return "Renewed"
    return None


@dataclass(frozen=True)
class Chart:
    """The customer-instance chart's defaults and schema, read once."""

    path: Path
    defaults: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Chart:
        defaults = yaml.safe_load((path / "values.yaml").read_text()) or {}
        schema = json.loads((path / "values.schema.json").read_text())
        return cls(path=path, defaults=defaults, schema=schema)

    @cached_property
    def _validator(self) -> jsonschema.protocols.Validator:
        validator_class = jsonschema.validators.validator_for(self.schema)
        return validator_class(self.schema)

    def validate(self, values: Mapping[str, Any]) -> None:
        """Raise InvalidSpec naming the first offending field of `spec.values`."""
        errors = sorted(
            self._validator.iter_errors(deep_merge(self.defaults, values)),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            error = errors[0]
            where = ".".join(str(p) for p in ("spec", "values", *error.absolute_path))
            raise InvalidSpec(f"{where}: {error.message}")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def helm_values(
    chart: Chart,
    tenant_name: str,
    spec: TenantSpec,
    license_secret: str,
    suspended: bool,
) -> dict[str, Any]:
    """The release's values: the Tenant's own, plus what Tenantry sets."""
    for key in RESERVED_VALUES:
        if key in spec.values:
            raise InvalidSpec(f"spec.values.{key} is set by Tenantry; remove it from the Tenant.")
    values = {
        **spec.values,
        "tenant": {"name": tenant_name, "displayName": spec.display_name},
        "license": {
            "secretName": license_secret,
            "mountPath": chart.defaults.get("license", {}).get(
                "mountPath", "/etc/tenantry/license"
            ),
        },
        "suspended": suspended,
    }
    chart.validate(values)
    return values


def desired_state(
    *,
    tenant_id: str,
    tenant_name: str,
    tenant_namespace_prefix: str,
    spec: TenantSpec,
    subscription: SubscriptionView,
    plans: Mapping[str, PlanSpec],
    chart: Chart,
    license_secret: str,
    now: dt.datetime | None = None,
) -> Desired:
    plan_name = subscription.spec.plan_ref.name
    plan = plans.get(plan_name)
    if plan is None:
        raise NotReady(
            "PlanNotFound",
            f"Subscription {subscription.name} names Plan {plan_name}, which does not exist: "
            f"apply it, or point spec.planRef.name at an existing Plan.",
        )
    state = effective_state(subscription, plan)
    suspended = should_suspend(spec, state)
    return Desired(
        namespace=tenant_namespace(tenant_name, spec, tenant_namespace_prefix),
        plan_name=plan_name,
        state=state,
        terms=license_terms(tenant_id, tenant_name, plan_name, plan, subscription, now),
        values=helm_values(chart, tenant_name, spec, license_secret, suspended),
        suspended=suspended,
        cycle=billing_cycle(subscription, plan),
    )
