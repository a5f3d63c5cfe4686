"""Typed models of Tenantry's custom resources (group tenantry.io, v1alpha1).

These models are the single source of the CRD schemas (`make crds` renders
`crds/*.yaml` from them) and the shape handlers validate a body into before
they work on it. Money is integer minor units; limits are integers where
-1 means unlimited; nothing is a float.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tenantry import license as lic
from tenantry.core.periods import Interval

GROUP = "tenantry.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

UNLIMITED = -1
"""A limit of -1 means the plan sets no limit on that metric."""

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS label (RFC 1123): what namespaces and Tenantry's objects are named."""
_NAME = NAME_PATTERN
METRIC_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
"""A metric or feature name: snake_case, as instances report and check them."""
_METRIC = METRIC_PATTERN

DnsLabel = Annotated[str, Field(pattern=_NAME, max_length=63)]
MetricName = Annotated[
    str,
    Field(
        pattern=_METRIC,
        description="Metric code: lower case letters, digits and underscores, e.g. `devices`.",
    ),
]


class Model(BaseModel):
    """Base of every spec and status model: camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------- conditions


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One observed aspect of a resource, after the Kubernetes API conventions."""

    type: str = Field(description="What the condition is about, e.g. `Ready`.")
    status: ConditionStatus = Field(description="`True`, `False` or `Unknown`.")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9]*)$",
        description="One CamelCase word for machines, e.g. `PlanNotFound`.",
    )
    message: str = Field(default="", description="What happened, for people.")
    observed_generation: int | None = Field(
        default=None, description="The `metadata.generation` this condition was computed from."
    )
    last_transition_time: dt.datetime | None = Field(
        default=None, description="When `status` last changed."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Observed conditions, one per type.",
    ),
]


class ResourceRef(Model):
    name: DnsLabel = Field(description="Name of the referenced object.")


# ---------------------------------------------------------------------- Plan


class Aggregation(StrEnum):
    """How a metric's events add up over a period (Lago's aggregation types)."""

    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"


class ChargeModel(StrEnum):
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"


_CURRENCY = r"^[A-Z]{3}$"
_DECIMAL = r"^[0-9]+(\.[0-9]{1,12})?$"
_PERCENT = r"^(100(\.0{1,6})?|[0-9]{1,2}(\.[0-9]{1,6})?)$"
_COUNTRY = r"^[A-Z]{2}$"
Currency = Annotated[str, Field(pattern=_CURRENCY, description="ISO 4217 code, e.g. `USD`.")]
Country = Annotated[str, Field(pattern=_COUNTRY, description="ISO 3166-1 alpha-2 code, e.g. `DE`.")]
Percentage = Annotated[
    str,
    Field(
        pattern=_PERCENT,
        description="A percentage from 0 to 100 as a decimal string, e.g. `19` or `7.5`.",
    ),
]


class TrialUsage(StrEnum):
    """Whether metered usage during a trial is charged on the first invoice."""

    WAIVED = "waived"
    CHARGED = "charged"


class Price(Model):
    amount: int = Field(ge=0, description="Recurring price in minor units (cents for USD).")
    currency: Currency
    interval: Interval = Field(default=Interval.MONTH, description="Billing interval.")


class Tier(Model):
    up_to: int | None = Field(
        default=None, ge=1, description="Upper bound of this tier (inclusive); none for the last."
    )
    unit_amount: str = Field(
        default="0",
        pattern=_DECIMAL,
        description="Price per unit in minor units, a decimal string (e.g. `0.05`).",
    )
    flat_amount: int = Field(default=0, ge=0, description="Flat fee for entering this tier.")


class Metric(Model):
    """A billable metric: what instances report and how it adds up."""

    name: MetricName
    aggregation: Aggregation = Field(
        default=Aggregation.SUM, description="How events add up within a period."
    )
    field: str | None = Field(
        default=None,
        description="For `unique_count`: the event property whose distinct values are counted.",
    )
    description: str = Field(default="", description="What the metric counts, for people.")


class MeteredPrice(Model):
    metric: MetricName = Field(description="Metric this price applies to.")
    model: ChargeModel = Field(default=ChargeModel.PER_UNIT, description="Charge model.")
    allowance: int = Field(default=0, ge=0, description="Units included before charging.")
    unit_amount: str = Field(
        default="0",
        pattern=_DECIMAL,
        description="`per_unit`: price per unit in minor units, a decimal string.",
    )
    package_size: int | None = Field(default=None, ge=1, description="`package`: units a package.")
    package_amount: int | None = Field(
        default=None, ge=0, description="`package`: price of one package in minor units."
    )
    tiers: list[Tier] = Field(
        default_factory=list,
        description="`graduated` and `volume`: tiers by ascending `upTo`; the last has none.",
    )

    @model_validator(mode="after")
    def _complete_for_its_model(self) -> MeteredPrice:
        where = f"meteredPrices[{self.metric}]"
        if self.model == ChargeModel.PACKAGE and (
            self.package_size is None or self.package_amount is None
        ):
            raise ValueError(f"{where}: the package model needs packageSize and packageAmount")
        if self.model in (ChargeModel.GRADUATED, ChargeModel.VOLUME):
            if not self.tiers:
                raise ValueError(f"{where}: the {self.model.value} model needs at least one tier")
            bounds = [tier.up_to for tier in self.tiers]
            if bounds[-1] is not None or None in bounds[:-1]:
                raise ValueError(
                    f"{where}: every tier but the last needs upTo, and the last must have none "
                    "(it covers everything above)"
                )
            finite = [b for b in bounds if b is not None]
            if any(a >= b for a, b in itertools.pairwise(finite)):
                raise ValueError(f"{where}: tiers must have strictly ascending upTo values")
        elif self.tiers:
            raise ValueError(f"{where}: tiers apply only to the graduated and volume models")
        return self


class StripePlanStatus(Model):
    """The Plan's objects in Stripe, created by the operator (never copied by hand)."""

    product_id: str = Field(description="Stripe Product.")
    price_id: str = Field(description="Stripe Price of the base price now in force.")
    price_fingerprint: str = Field(
        description="Amount, currency and interval the Price was made for: a change makes a "
        "new Price (Stripe Prices are immutable)."
    )


SEMVER_PATTERN = (
    r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
"""An exact chart version (SemVer 2, an optional leading `v`); ranges are refused: a
Tenant runs one known version, and a rollout moves it to another."""


def _exact_version(value: str | None, where: str) -> str | None:
    if value is not None and not re.match(SEMVER_PATTERN, value):
        raise ValueError(
            f"{where} {value!r} is not an exact chart version: write MAJOR.MINOR.PATCH, "
            "e.g. 1.4.2 or 2.0.0-rc.1 (ranges and tags such as `latest` are not accepted)"
        )
    return value


class ChartSpec(Model):
    """The chart a Plan's tenants run: from an OCI registry, a chart repository, or a path
    inside the operator's image. None of the three: the bundled customer-instance chart."""

    oci: str | None = Field(
        default=None,
        description="An OCI reference without a tag, e.g. "
        "`oci://registry.example.com/charts/product`; needs `version`.",
    )
    repository: str | None = Field(
        default=None,
        description="The URL of a chart repository (one serving `index.yaml`), e.g. "
        "`https://charts.example.com`; needs `name` and `version`.",
    )
    name: str | None = Field(
        default=None, description="The chart's name in `repository` (only with `repository`)."
    )
    path: str | None = Field(
        default=None,
        description="An absolute path to a chart directory or packaged chart (.tgz) inside "
        "the operator's image.",
    )
    version: str | None = Field(
        default=None,
        description="The exact chart version, e.g. `1.4.2`; required for `oci` and "
        "`repository`. With `path`, the chart there must have it. A Tenant may pin another "
        "(`spec.chartVersion`).",
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Default Helm values of the Plan's tenants; each Tenant's `spec.values` "
        "are merged over them. The key `tenantry` is Tenantry's own (the values contract).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @field_validator("version")
    @classmethod
    def _exact(cls, value: str | None) -> str | None:
        return _exact_version(value, "version")

    @model_validator(mode="after")
    def _one_source(self) -> ChartSpec:
        sources = [k for k in ("oci", "repository", "path") if getattr(self, k) is not None]
        if len(sources) > 1:
            raise ValueError(
                f"chart has {' and '.join(sources)}: name one source (oci, repository or path)"
            )
        if self.oci is not None and not re.match(r"^oci://[^\s:/]+(:[0-9]+)?/\S+$", self.oci):
            raise ValueError(
                f"chart.oci {self.oci!r} is no OCI reference: write "
                "oci://registry.example.com/charts/product (the version goes in chart.version)"
            )
        if self.repository is not None and not re.match(r"^https?://\S+$", self.repository):
            raise ValueError(
                f"chart.repository {self.repository!r} is no http(s) URL of a chart repository"
            )
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"chart.path {self.path!r} must be absolute (a path in the image)")
        if (self.name is not None) != (self.repository is not None):
            raise ValueError("chart.name goes with chart.repository, and only with it")
        if (self.oci or self.repository) and self.version is None:
            raise ValueError(f"chart.{sources[0]} needs chart.version (an exact version)")
        if not sources and self.version is not None:
            raise ValueError(
                "chart.version needs a source (oci, repository or path); the bundled chart "
                "has one version"
            )
        return self


class PlanRollout(Model):
    """How a new `chart.version` reaches the Plan's tenants: in waves, each gated on health
    (see core/rollout.py)."""

    canary: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Tenants in the first (canary) wave when none is labelled "
        '`tenantry.io/canary: "true"` (labelled ones are the canary wave, however many); '
        "taken in order of namespace and name. 0: no canary wave unless some are labelled.",
    )
    batch_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="Tenants moved to the new version in each wave after the canary wave.",
    )
    pause_seconds: int = Field(
        default=120,
        ge=0,
        le=604_800,
        description="Seconds to wait after a wave passed its gate before the next one starts.",
    )
    gate_timeout_seconds: int = Field(
        default=600,
        ge=30,
        le=86_400,
        description="Seconds a moved tenant has to pass its gate: its release deployed at the "
        "new version and a healthy heartbeat from its instance sent after the move. Longer "
        "than the instance's start plus its heartbeat interval and "
        "TENANTRY_HEARTBEAT_STATUS_INTERVAL.",
    )
    require_heartbeat: bool = Field(
        default=True,
        description="Whether a moved tenant must also send a healthy heartbeat (POST "
        "/v1/instance/heartbeat, e.g. through tenantry.sdk) to pass its gate. false: its "
        "release deployed at the new version is enough, for instances that send none.",
    )


class PlanSpec(Model):
    display_name: str = Field(min_length=1, description="Name shown to customers.")
    price: Price = Field(description="Recurring base price.")
    trial_days: int = Field(default=0, ge=0, le=730, description="Free trial length.")
    trial_usage: TrialUsage = Field(
        default=TrialUsage.WAIVED,
        description="`waived`: usage during a trial is free; `charged`: it is priced like any "
        "period's and billed on the first invoice.",
    )
    past_due_grace_days: int = Field(
        default=7,
        ge=0,
        le=365,
        description="Days a subscription stays `past_due` before it becomes `unpaid` and its "
        "instance is suspended.",
    )
    features: dict[MetricName, bool] = Field(
        default_factory=dict,
        description="Feature flags granted, e.g. `ota_updates: true` (snake_case, as instances "
        "check them).",
    )
    limits: dict[MetricName, Annotated[int, Field(ge=UNLIMITED)]] = Field(
        default_factory=dict, description="Limits per metric; -1 is unlimited."
    )
    metrics: list[Metric] = Field(
        default_factory=list, description="Metrics instances report for this plan."
    )
    metered_prices: list[MeteredPrice] = Field(
        default_factory=list, description="Usage-based prices, per metric."
    )
    usage_max_age_days: int = Field(
        default=35, ge=1, le=400, description="Oldest event timestamp accepted, in days."
    )
    chart: ChartSpec = Field(
        default_factory=ChartSpec,
        description="The chart and version the Plan's tenants run, with default values; "
        "none given: the bundled customer-instance chart.",
    )
    rollout: PlanRollout = Field(
        default_factory=PlanRollout,
        description="How a change of `chart.version` is rolled out to the Plan's tenants: a "
        "canary wave, then batches with a pause between them, each gated on health.",
    )

    @model_validator(mode="after")
    def _one_price_per_known_metric(self) -> PlanSpec:
        names = {m.name for m in self.metrics}
        seen: set[str] = set()
        for price in self.metered_prices:
            if price.metric not in names:
                raise ValueError(
                    f"meteredPrices names metric {price.metric!r}, which is not in spec.metrics: "
                    "declare it there"
                )
            if price.metric in seen:
                raise ValueError(f"meteredPrices has two entries for metric {price.metric!r}")
            seen.add(price.metric)
        return self

    @field_validator("limits", "features")
    @classmethod
    def _snake_case_names(cls, entries: dict[str, Any]) -> dict[str, Any]:
        for name in entries:
            if not re.match(_METRIC, name):
                raise ValueError(
                    f"{name!r} is not a valid name: use lower case letters, digits and "
                    "underscores, starting with a letter (e.g. ota_updates)"
                )
        return entries


class RolloutPhase(StrEnum):
    PROGRESSING = "Progressing"
    WAITING = "Waiting"
    PAUSED = "Paused"
    FAILED = "Failed"
    COMPLETE = "Complete"


class RolloutStatus(Model):
    """Where the rollout of the Plan's chart version stands (computed by core/rollout.py)."""

    target_version: str = Field(description="The version being rolled out: `chart.version`.")
    previous_version: str | None = Field(
        default=None,
        description="The last good version: tenants failing their gate are rolled back to it.",
    )
    phase: RolloutPhase = Field(
        description="`Progressing` (a wave is gated), `Waiting` (between waves), `Paused` "
        "(annotation `tenantry.io/rollout-paused`), `Failed` (a tenant failed its gate: "
        "nobody else is moved until `chart.version` changes) or `Complete`."
    )
    started_at: dt.datetime = Field(description="When this rollout began.")
    current_wave: int | None = Field(
        default=None,
        ge=0,
        description="The wave now gated or last passed: 0 is the canary wave, 1 and on the "
        "batches; none before the first wave.",
    )
    wave: list[str] = Field(
        default_factory=list,
        description="The current wave's tenants, as `namespace/name`.",
    )
    wave_started_at: dt.datetime | None = Field(
        default=None, description="When the current wave's tenants were moved."
    )
    wave_passed_at: dt.datetime | None = Field(
        default=None,
        description="When every tenant of the current wave had passed its gate; the next wave "
        "starts `rollout.pauseSeconds` later.",
    )
    updated: int = Field(
        default=0, description="Unpinned tenants whose release is deployed at the target."
    )
    failed: int = Field(default=0, description="Tenants that failed their gate.")
    pending: int = Field(
        default=0, description="Unpinned tenants not yet moved to the target (nor failed)."
    )
    failed_tenants: list[str] = Field(
        default_factory=list,
        description="The tenants that failed their gate (`namespace/name`), rolled back to "
        "`previousVersion`.",
    )
    message: str = Field(default="", description="Where the rollout stands, for people.")


class PlanStatus(Model):
    conditions: Conditions
    observed_generation: int | None = Field(
        default=None,
        description="The `metadata.generation` the operator last reconciled; behind it, the "
        "status is not yet about the current spec.",
    )
    stripe: StripePlanStatus | None = Field(default=None, description="When Stripe is on.")
    rollout: RolloutStatus | None = Field(
        default=None, description="The rollout of `chart.version` to the Plan's tenants."
    )


# -------------------------------------------------------------------- Tenant


class Address(Model):
    line1: str = Field(default="", description="Street and number.")
    line2: str = Field(default="", description="Second address line.")
    postal_code: str = Field(default="", description="Postal code.")
    city: str = Field(default="", description="City.")
    state: str = Field(default="", description="State, province or region.")
    country: Country | None = Field(default=None, description="Country (ISO 3166-1 alpha-2).")


class BillingDetails(Model):
    """Who invoices are addressed to."""

    legal_name: str = Field(default="", description="Legal name; the display name if empty.")
    address: Address = Field(default_factory=Address, description="Billing address.")
    tax_id: str = Field(
        default="",
        max_length=64,
        description="VAT or tax id, e.g. `DE123456789`. A tax id in another country than the "
        "seller's makes invoices reverse-charged.",
    )


class TenantSpec(Model):
    display_name: str = Field(min_length=1, description="Customer's name, for people.")
    billing_email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="Where invoices go."
    )
    billing: BillingDetails = Field(
        default_factory=BillingDetails, description="Details printed on invoices."
    )
    namespace: DnsLabel | None = Field(
        default=None, description="Namespace of the instance; defaults to `tenant-<name>`."
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Helm values of this instance, merged over the Plan's `chart.values` "
        "(checked against the chart's values.schema.json when it has one). The key "
        "`tenantry` is Tenantry's own (the values contract).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    chart_version: str | None = Field(
        default=None,
        description="Pin this instance to a version of its Plan's chart (from an OCI registry "
        "or a chart repository) instead of the Plan's `chart.version`.",
    )
    paused: bool = Field(default=False, description="Stop reconciling; leave everything as is.")
    suspended: bool = Field(
        default=False, description="Scale the instance to zero whatever the billing state."
    )

    @field_validator("chart_version")
    @classmethod
    def _exact(cls, value: str | None) -> str | None:
        return _exact_version(value, "chartVersion")


class LicenseSummary(Model):
    """The license the instance holds now (the token itself is only in its Secret)."""

    id: str = Field(description="The license's `jti`.")
    plan: str = Field(description="Plan the license grants.")
    issued_at: dt.datetime = Field(description="When it was signed (UTC).")
    expires_at: dt.datetime = Field(
        description="When it stops being valid (UTC); the operator renews it well before."
    )
    secret_name: str = Field(description="Secret in the tenant namespace holding it.")


class ReleaseSummary(Model):
    """The Helm release of the customer's instance, as helm last reported it."""

    name: str = Field(description="Release name, in the instance namespace.")
    revision: int = Field(description="Helm revision; a new one only when something changed.")
    chart_version: str = Field(description="Version of the chart deployed.")
    status: str = Field(description="Helm's status of the revision, e.g. `deployed`, `failed`.")
    chart: str | None = Field(default=None, description="Name of the chart deployed.")
    source: str | None = Field(
        default=None,
        description="Where the chart came from: an `oci://` reference, a repository URL and "
        "chart name, or a path in the operator's image.",
    )
    digest: str | None = Field(
        default=None,
        description="`sha256:` digest of the packaged chart pulled (none for a chart "
        "directory in the image).",
    )


class Period(Model):
    start: dt.datetime = Field(description="First moment of the period (UTC).")
    end: dt.datetime = Field(description="First moment after the period (UTC).")


class BillingCycleSummary(Model):
    """How the tenant's billing periods fall (see `core/periods.py`)."""

    start: dt.datetime = Field(description="When the subscription began; its day is a boundary.")
    interval: Interval = Field(description="`month` or `year`, from the Plan.")
    anchor_day: int = Field(ge=1, le=31, description="Day of the month periods start on.")
    trial_start: dt.datetime | None = Field(
        default=None, description="When a trial began; it is one period, up to `start`."
    )


class UsageSummary(Model):
    period: Period = Field(description="The current billing period, `[start, end)`.")
    metrics: dict[str, int] = Field(default_factory=dict, description="Usage so far, per metric.")
    updated_at: dt.datetime | None = Field(default=None, description="When this was computed.")


INSTANCE_HEALTHY = "InstanceHealthy"
"""The Tenant condition the API service keeps from the instance's heartbeats."""


class InstanceHealth(StrEnum):
    """What an instance says of itself in a heartbeat."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class InstanceSummary(Model):
    """The instance as its heartbeats describe it, written by the API service."""

    version: str = Field(description="The version the instance said it runs.")
    health: InstanceHealth = Field(description="`healthy`, `degraded` or `unhealthy`.")
    message: str | None = Field(default=None, description="What the instance said about it.")
    last_heartbeat: dt.datetime = Field(
        description="When a heartbeat last arrived, as of this write. Written at once when "
        "the version or health changes, else at most once per "
        "TENANTRY_HEARTBEAT_STATUS_INTERVAL: it may lag the newest heartbeat by that much."
    )


class TenantStatus(Model):
    conditions: Conditions
    observed_generation: int | None = Field(
        default=None,
        description="The `metadata.generation` the operator last reconciled; behind it, the "
        "status is not yet about the current spec.",
    )
    namespace: str | None = Field(default=None, description="Namespace of the instance.")
    plan: str | None = Field(default=None, description="Plan in force.")
    license: LicenseSummary | None = Field(
        default=None, description="The license the instance holds now."
    )
    release: ReleaseSummary | None = Field(default=None, description="The instance's Helm release.")
    stripe_customer_id: str | None = Field(default=None, description="Stripe Customer.")
    billing_cycle: BillingCycleSummary | None = Field(
        default=None,
        description="The subscription's billing cycle, which usage and quotas are counted by; "
        "calendar months while there is none.",
    )
    usage: UsageSummary | None = Field(
        default=None,
        description="Usage in the current billing period, written by the API service.",
    )
    instance: InstanceSummary | None = Field(
        default=None,
        description="The instance's last heartbeat (version, health), written by the API service.",
    )


# -------------------------------------------------------------- Subscription


# The states a license carries are the states a Subscription can be in.
SubscriptionState = lic.SubscriptionStatus


class SubscriptionSpec(Model):
    tenant_ref: ResourceRef = Field(description="Tenant in this namespace.")
    plan_ref: ResourceRef = Field(description="Plan (cluster-scoped).")
    billing_cycle_anchor_day: int | None = Field(
        default=None,
        ge=1,
        le=31,
        description="Day of the month (UTC) periods start on; a shorter month uses its last "
        "day. Default: the day the subscription was created.",
    )
    trial_days: int | None = Field(
        default=None, ge=0, le=730, description="Overrides the plan's trial length."
    )
    cancel_at_period_end: bool = Field(
        default=False,
        description="End the subscription when the current period ends, with a final invoice.",
    )
    coupon: DnsLabel | None = Field(
        default=None, description="Name of a Coupon whose discount applies."
    )
    tax_rates: list[DnsLabel] = Field(
        default_factory=list, description="Names of the TaxRates that apply to its invoices."
    )


class InvoiceSummary(Model):
    id: str = Field(description="Invoice id (`GET /v1/admin/invoices/{id}`).")
    number: str | None = Field(default=None, description="Invoice number, once finalized.")
    status: str = Field(description="`draft`, `open`, `paid`, `void` or `uncollectible`.")
    currency: Currency
    total: int = Field(description="Total in minor units.")
    amount_due: int = Field(description="What is still to be paid, in minor units.")
    due_at: dt.datetime | None = Field(default=None, description="When payment is due.")


class SubscriptionStatus(Model):
    conditions: Conditions
    observed_generation: int | None = Field(
        default=None,
        description="The `metadata.generation` the operator last reconciled; behind it, the "
        "status is not yet about the current spec.",
    )
    state: SubscriptionState | None = Field(
        default=None,
        description="`trialing`, `active`, `past_due`, `unpaid` (instance suspended) or "
        "`canceled` (final).",
    )
    plan: str | None = Field(default=None, description="Plan in force.")
    started_at: dt.datetime | None = Field(default=None, description="When it began.")
    current_period: Period | None = Field(
        default=None, description="The billing period now running, `[start, end)`; none once ended."
    )
    trial_end: dt.datetime | None = Field(
        default=None, description="When the trial ends (00:00 UTC); none without a trial."
    )
    cancel_at: dt.datetime | None = Field(
        default=None, description="When it will end (cancelAtPeriodEnd)."
    )
    ended_at: dt.datetime | None = Field(default=None, description="When it ended.")
    billing_cycle: BillingCycleSummary | None = Field(
        default=None, description="How its billing periods fall (the Tenant follows it)."
    )
    latest_invoice: InvoiceSummary | None = Field(
        default=None, description="The most recent invoice of this subscription."
    )
    amount_due: int | None = Field(
        default=None, description="Unpaid amount over all open invoices, minor units."
    )
    stripe_subscription_id: str | None = Field(default=None, description="Stripe Subscription.")
    stripe_status: str | None = Field(
        default=None, description="The Stripe Subscription's own status, as last heard."
    )


# ------------------------------------------------------------------- ApiKey


Scope = Literal["usage:write", "license:read", "quota:consume", "billing:read"]
ALL_SCOPES: tuple[Scope, ...] = ("usage:write", "license:read", "quota:consume", "billing:read")
DEFAULT_SCOPES: tuple[Scope, ...] = ("usage:write", "license:read", "quota:consume")
"""What a key may do when its spec names no scopes: `billing:read` is asked for explicitly."""


class ApiKeySpec(Model):
    tenant_ref: ResourceRef = Field(description="Tenant in this namespace the key acts for.")
    scopes: list[Scope] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES),
        description="What the key may do: `usage:write`, `license:read`, `quota:consume` "
        "(the default) and `billing:read` (its tenant's invoices).",
    )
    expires_at: dt.datetime | None = Field(default=None, description="Stops working after this.")
    revoked: bool = Field(default=False, description="Set to stop the key at once.")
    secret_name: DnsLabel | None = Field(
        default=None,
        description="Secret in the tenant namespace for the plaintext; defaults to the key name.",
    )


class ApiKeyStatus(Model):
    conditions: Conditions
    observed_generation: int | None = Field(
        default=None,
        description="The `metadata.generation` the operator last reconciled; behind it, the "
        "status is not yet about the current spec.",
    )
    prefix: str | None = Field(default=None, description="The key's public prefix.")
    secret_ref: str | None = Field(default=None, description="`namespace/name` of the Secret.")
    expires_at: dt.datetime | None = Field(
        default=None, description="When the key stops working (from spec.expiresAt)."
    )
    last_used_at: dt.datetime | None = Field(
        default=None, description="When the key was last used, as of the operator's last pass."
    )


# -------------------------------------------------------------- Coupon, TaxRate


class CouponDuration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


class CouponSpec(Model):
    display_name: str = Field(default="", description="Shown on invoices; the name if empty.")
    percent_off: Percentage | None = Field(
        default=None, description="Percent off the subtotal, e.g. `20` or `12.5`."
    )
    amount_off: int | None = Field(
        default=None, ge=1, description="Amount off the subtotal in minor units (with currency)."
    )
    currency: Currency | None = Field(default=None, description="Currency of amountOff.")
    duration: CouponDuration = Field(
        default=CouponDuration.ONCE,
        description="`once`: the first invoice; `repeating`: the first durationPeriods "
        "invoices; `forever`.",
    )
    duration_periods: int | None = Field(
        default=None, ge=1, description="`repeating`: for how many invoices."
    )
    max_redemptions: int | None = Field(
        default=None, ge=1, description="How many Subscriptions may use it."
    )
    redeem_by: dt.datetime | None = Field(
        default=None, description="Subscriptions naming it after this get no discount."
    )

    @model_validator(mode="after")
    def _one_discount(self) -> CouponSpec:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("a Coupon has either percentOff or amountOff (with currency)")
        if self.amount_off is not None and self.currency is None:
            raise ValueError("amountOff needs a currency")
        if (self.duration == CouponDuration.REPEATING) != (self.duration_periods is not None):
            raise ValueError("durationPeriods is set exactly when duration is repeating")
        return self


class CouponStatus(Model):
    conditions: Conditions
    observed_generation: int | None = Field(
        default=None,
        description="The `metadata.generation` the operator last reconciled; behind it, the "
        "status is not yet about the current spec.",
    )
    redemptions: int = Field(default=0, description="Subscriptions that redeemed it.")
    stripe_id: str | None = Field(default=None, description="Stripe Coupon, when Stripe is on.")


class TaxRateSpec(Model):
    display_name: str = Field(min_length=1, description="Name on invoices, e.g. `VAT`.")
    percentage: Percentage
    country: Country | None = Field(default=None, description="Where the rate applies.")
    inclusive: bool = Field(
        default=False,
        description="True: prices already include this tax; false: it is added on top.",
    )
    description: str = Field(default="", description="For people.")


class TaxRateStatus(Model):
    conditions: Conditions
    observed_generation: int | None = Field(
        default=None,
        description="The `metadata.generation` the operator last reconciled; behind it, the "
        "status is not yet about the current spec.",
    )
    stripe_id: str | None = Field(default=None, description="Stripe Tax Rate, when Stripe is on.")


# ------------------------------------------------------------------ the kinds


class Kind:
    """What the CRD generator needs to know about one kind."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    scope: ClassVar[Literal["Namespaced", "Cluster"]]
    spec: ClassVar[type[Model]]
    status: ClassVar[type[Model]]
    printer_columns: ClassVar[tuple[dict[str, str], ...]]


def _ready_columns() -> tuple[dict[str, str], ...]:
    return (
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )


class PlanKind(Kind):
    kind = "Plan"
    plural = "plans"
    short_names = ("pl",)
    scope = "Cluster"
    spec = PlanSpec
    status = PlanStatus
    printer_columns = (
        {"name": "Display", "type": "string", "jsonPath": ".spec.displayName"},
        {"name": "Amount", "type": "integer", "jsonPath": ".spec.price.amount"},
        {"name": "Currency", "type": "string", "jsonPath": ".spec.price.currency"},
        {"name": "Interval", "type": "string", "jsonPath": ".spec.price.interval"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.chart.version"},
        {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"},
        {"name": "Updated", "type": "integer", "jsonPath": ".status.rollout.updated"},
        {"name": "Pending", "type": "integer", "jsonPath": ".status.rollout.pending"},
        {"name": "Failed", "type": "integer", "jsonPath": ".status.rollout.failed"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )


class TenantKind(Kind):
    kind = "Tenant"
    plural = "tenants"
    short_names = ("tn",)
    scope = "Namespaced"
    spec = TenantSpec
    status = TenantStatus
    printer_columns = (
        {"name": "Plan", "type": "string", "jsonPath": ".status.plan"},
        # Not "Namespace": `kubectl get -A` already prints the Tenant's own NAMESPACE.
        {"name": "Instance-Namespace", "type": "string", "jsonPath": ".status.namespace"},
        {"name": "Revision", "type": "integer", "jsonPath": ".status.release.revision"},
        {"name": "Version", "type": "string", "jsonPath": ".status.release.chartVersion"},
        # A `date` column shows a future time as <invalid>: print the timestamp.
        {"name": "License-Expires", "type": "string", "jsonPath": ".status.license.expiresAt"},
        *_ready_columns(),
    )


class SubscriptionKind(Kind):
    kind = "Subscription"
    plural = "subscriptions"
    short_names = ("sub",)
    scope = "Namespaced"
    spec = SubscriptionSpec
    status = SubscriptionStatus
    printer_columns = (
        {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenantRef.name"},
        {"name": "Plan", "type": "string", "jsonPath": ".spec.planRef.name"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        # A `date` column shows a future time as <invalid>: print the timestamp.
        {"name": "Period-End", "type": "string", "jsonPath": ".status.currentPeriod.end"},
        {"name": "Amount-Due", "type": "integer", "jsonPath": ".status.amountDue"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )


class ApiKeyKind(Kind):
    kind = "ApiKey"
    plural = "apikeys"
    short_names = ("ak",)
    scope = "Namespaced"
    spec = ApiKeySpec
    status = ApiKeyStatus
    printer_columns = (
        {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenantRef.name"},
        {"name": "Prefix", "type": "string", "jsonPath": ".status.prefix"},
        {"name": "Revoked", "type": "boolean", "jsonPath": ".spec.revoked"},
        *_ready_columns(),
    )


class CouponKind(Kind):
    kind = "Coupon"
    plural = "coupons"
    short_names = ("cpn",)
    scope = "Cluster"
    spec = CouponSpec
    status = CouponStatus
    printer_columns = (
        {"name": "Percent-Off", "type": "string", "jsonPath": ".spec.percentOff"},
        {"name": "Amount-Off", "type": "integer", "jsonPath": ".spec.amountOff"},
        {"name": "Duration", "type": "string", "jsonPath": ".spec.duration"},
        {"name": "Redemptions", "type": "integer", "jsonPath": ".status.redemptions"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )


class TaxRateKind(Kind):
    kind = "TaxRate"
    plural = "taxrates"
    short_names = ("tax",)
    scope = "Cluster"
    spec = TaxRateSpec
    status = TaxRateStatus
    printer_columns = (
        {"name": "Display", "type": "string", "jsonPath": ".spec.displayName"},
        {"name": "Percentage", "type": "string", "jsonPath": ".spec.percentage"},
        {"name": "Country", "type": "string", "jsonPath": ".spec.country"},
        {"name": "Inclusive", "type": "boolean", "jsonPath": ".spec.inclusive"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )


KINDS: list[type[Kind]] = [PlanKind, TenantKind, SubscriptionKind, ApiKeyKind, CouponKind,
                           TaxRateKind]  # fmt: skip
