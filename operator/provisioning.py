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
from tenantry.core.names import APIKEY_ENTRY, JWKS_ENTRY, LICENSE_ENTRY
from tenantry.core.periods import CALENDAR_MONTHS, BillingCycle
from tenantry.core.resources import PlanSpec, SubscriptionSpec, SubscriptionState, TenantSpec
from tenantry.operator.errors import InvalidSpec, NotReady

# Subscription states in which the instance is scaled to zero. `past_due`
# keeps running while Stripe retries the payment; it ends in `unpaid`.
SUSPENDING_STATES = frozenset({SubscriptionState.UNPAID, SubscriptionState.CANCELED})

CONTRACT_KEY = "tenantry"
"""The one top-level chart value Tenantry sets (the values contract); a Plan or a Tenant
setting it is a spec error, and a chart's own values never collide with it."""

INSTANCE_KEY_SECRET = "tenantry-api-key"  # noqa: S105 - a Secret's name, not a secret
"""Default name of the Secret an instance reads its API key from."""

INVALID_VALUES = "InvalidValues"
"""The Ready reason of values the chart's values.schema.json refuses."""


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
    """A chart on disk (the bundled one, or one pulled into the cache): its metadata,
    defaults and schema, read once."""

    path: Path
    name: str = ""
    version: str = ""
    source: str = ""
    digest: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Any] | None = None

    @classmethod
    def load(cls, path: Path, source: str | None = None, digest: str | None = None) -> Chart:
        metadata = yaml.safe_load((path / "Chart.yaml").read_text()) or {}
        values_file, schema_file = path / "values.yaml", path / "values.schema.json"
        defaults = yaml.safe_load(values_file.read_text()) if values_file.is_file() else None
        return cls(
            path=path,
            name=str(metadata.get("name", "")),
            version=str(metadata.get("version", "")),
            source=source or str(path),
            digest=digest,
            defaults=defaults or {},
            schema=json.loads(schema_file.read_text()) if schema_file.is_file() else None,
        )

    @cached_property
    def _validator(self) -> jsonschema.protocols.Validator | None:
        if self.schema is None:
            return None
        validator_class = jsonschema.validators.validator_for(self.schema)
        return validator_class(self.schema)

    def validate(self, values: Mapping[str, Any]) -> None:
        """Raise InvalidSpec (`InvalidValues`) naming the first offending value, as the
        chart's own values.schema.json sees the values merged over its defaults."""
        if self._validator is None:
            return
        errors = sorted(
            self._validator.iter_errors(deep_merge(self.defaults, values)),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            error = errors[0]
            where = ".".join(str(p) for p in ("spec", "values", *error.absolute_path))
            raise InvalidSpec(
                f"{where}: {error.message} (values.schema.json of chart {self.name} "
                f"{self.version})",
                reason=INVALID_VALUES,
            )


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def contract_values(
    *,
    tenant_id: str,
    tenant_name: str,
    spec: TenantSpec,
    namespace: str,
    plan_name: str,
    plan: PlanSpec,
    license_secret: str,
    api_url: str,
    key_secret: str,
    suspended: bool,
) -> dict[str, Any]:
    """The values contract: what every instance is told, under the one key `tenantry`
    (README, "The values contract")."""
    return {
        "tenant": {
            "id": tenant_id,
            "name": tenant_name,
            "displayName": spec.display_name,
            "namespace": namespace,
        },
        "plan": {
            "name": plan_name,
            "displayName": plan.display_name,
            "features": dict(sorted(plan.features.items())),
            "limits": dict(sorted(plan.limits.items())),
        },
        "license": {"secretName": license_secret, "key": LICENSE_ENTRY, "jwksKey": JWKS_ENTRY},
        "api": {"url": api_url, "keySecretName": key_secret, "keySecretKey": APIKEY_ENTRY},
        "suspended": suspended,
    }


def helm_values(
    chart: Chart,
    plan_name: str,
    plan: PlanSpec,
    spec: TenantSpec,
    contract: Mapping[str, Any],
) -> dict[str, Any]:
    """The release's values: the Plan's defaults, the Tenant's over them, and the contract;
    checked against the chart's schema."""
    if CONTRACT_KEY in plan.chart.values:
        raise InvalidSpec(
            f"Plan {plan_name} sets spec.chart.values.{CONTRACT_KEY}, which Tenantry sets: "
            "remove it from the Plan.",
            reason="InvalidPlan",
        )
    if CONTRACT_KEY in spec.values:
        raise InvalidSpec(
            f"spec.values.{CONTRACT_KEY} is set by Tenantry; remove it from the Tenant."
        )
    values = {**deep_merge(plan.chart.values, spec.values), CONTRACT_KEY: dict(contract)}
    chart.validate(values)
    return values


def plan_of(subscription: SubscriptionView, plans: Mapping[str, PlanSpec]) -> tuple[str, PlanSpec]:
    """The Plan the Subscription names, by name."""
    plan_name = subscription.spec.plan_ref.name
    plan = plans.get(plan_name)
    if plan is None:
        raise NotReady(
            "PlanNotFound",
            f"Subscription {subscription.name} names Plan {plan_name}, which does not exist: "
            f"apply it, or point spec.planRef.name at an existing Plan.",
        )
    return plan_name, plan


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
    api_url: str = "",
    key_secret: str = INSTANCE_KEY_SECRET,
    now: dt.datetime | None = None,
) -> Desired:
    plan_name, plan = plan_of(subscription, plans)
    state = effective_state(subscription, plan)
    suspended = should_suspend(spec, state)
    namespace = tenant_namespace(tenant_name, spec, tenant_namespace_prefix)
    contract = contract_values(
        tenant_id=tenant_id,
        tenant_name=tenant_name,
        spec=spec,
        namespace=namespace,
        plan_name=plan_name,
        plan=plan,
        license_secret=license_secret,
        api_url=api_url,
        key_secret=key_secret,
        suspended=suspended,
    )
    return Desired(
        namespace=namespace,
        plan_name=plan_name,
        state=state,
        terms=license_terms(tenant_id, tenant_name, plan_name, plan, subscription, now),
        values=helm_values(chart, plan_name, plan, spec, contract),
        suspended=suspended,
        cycle=billing_cycle(subscription, plan),
    )
