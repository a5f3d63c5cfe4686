"""Tenants and their Plans, read from Kubernetes and reused for a few seconds;
the end of each tenant's subscription, read from PostgreSQL and never older
than a second or two.

The hot path must not wait on the API server: an entry younger than the TTL
is served as is; an older one is still served while one background read
refreshes it (up to three TTLs; past that the caller waits for a fresh read).

A subscription's end is different: it must stop new work at once, so its
cache (`FreshCache`) never serves a value older than its TTL, stale or not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.errors import NotFound, Unavailable
from tenantry.api.tenants.kube import Kube
from tenantry.core.lifecycle import Terms
from tenantry.core.periods import CALENDAR_MONTHS, BillingCycle, Period
from tenantry.core.resources import UNLIMITED, Aggregation, BillingCycleSummary, Metric, PlanSpec
from tenantry.db import subscriptions as subscriptions_repo

log = logging.getLogger("tenantry.api.catalog")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Plan:
    name: str
    spec: PlanSpec
    metrics: dict[str, Metric] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", {m.name: m for m in self.spec.metrics})

    def limit(self, metric: str) -> int:
        """The plan's limit on a metered metric; a metric without one is unlimited."""
        return self.spec.limits.get(metric, UNLIMITED)

    def limited_metrics(self) -> list[Metric]:
        """Metered metrics with a limit: the ones quotas apply to."""
        return [m for m in self.spec.metrics if self.limit(m.name) != UNLIMITED]

    def aggregation(self, metric: str) -> Aggregation:
        return self.metrics[metric].aggregation


@dataclass(frozen=True)
class SubscriptionEnd:
    """When the tenant's subscription stops admitting new work."""

    subscription: str  # the Subscription, `<namespace>/<name>`
    at: dt.datetime
    reason: str | None  # `deleted`, `cancel_at_period_end`, ...

    @classmethod
    def of(cls, terms: Terms | None) -> SubscriptionEnd | None:
        """The end the stored terms set: `ended_at`, else a `cancel_at` (cancelAtPeriodEnd),
        which the operator records as `ended_at` on its first pass after that moment."""
        if terms is None:
            return None
        name = f"{terms.namespace}/{terms.name}"
        if terms.ended_at is not None:
            return cls(name, terms.ended_at, terms.end_reason)
        if terms.cancel_at is not None:
            return cls(name, terms.cancel_at, "cancel_at_period_end")
        return None

    def describe(self) -> str:
        """`Subscription ns/name ended at 2026-11-15 00:00:00 UTC (it was deleted)`."""
        why = _END_REASONS.get(self.reason or "")
        at = self.at.astimezone(dt.UTC)
        return f"Subscription {self.subscription} ended at {at:%Y-%m-%d %H:%M:%S} UTC" + (
            f" ({why})" if why else ""
        )


_END_REASONS = {
    "deleted": "it was deleted",
    "cancel_at_period_end": "canceled at the end of its billing period",
}


@dataclass(frozen=True)
class TenantRecord:
    """What the Tenant object says (cached)."""

    namespace: str
    name: str
    uid: str
    instance_namespace: str | None
    plan_name: str | None
    cycle: BillingCycle


@dataclass(frozen=True)
class Tenant:
    """A Tenant with its Plan resolved (None until the operator has settled one).

    Usage, quota counters and keys belong to its `uid`: a Tenant deleted and
    re-created under the same name is another tenant, and starts from zero.
    """

    namespace: str
    name: str
    uid: str
    instance_namespace: str | None
    plan: Plan | None
    cycle: BillingCycle = CALENDAR_MONTHS
    subscription_end: SubscriptionEnd | None = None

    @property
    def key(self) -> str:
        """How people name the tenant: `<namespace>/<name>`."""
        return f"{self.namespace}/{self.name}"

    def period_at(self, moment: dt.datetime) -> Period:
        """The tenant's billing period holding `moment`."""
        return self.cycle.period_at(moment)

    def ended(self, moment: dt.datetime) -> SubscriptionEnd | None:
        """The subscription's end if it has come by `moment`: no new work is admitted."""
        end = self.subscription_end
        return end if end is not None and moment >= end.at else None


@dataclass
class _Entry(Generic[V]):
    value: V
    at: float


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, load: Callable[[K], Awaitable[V]], what: str) -> None:
        self.ttl = ttl
        self._load = load
        self._what = what
        self._entries: dict[K, _Entry[V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            age = time.monotonic() - entry.at
            if age < self.ttl:
                return entry.value
            # A stale "not found" is not served: what was missing may exist by now.
            if age < 3 * self.ttl and entry.value is not None:
                if key not in self._loading:
                    self._start(key).add_done_callback(_ignore_failure)
                return entry.value
        future = self._loading.get(key) or self._start(key)
        try:
            return await asyncio.shield(future)
        except Exception as error:
            if entry is not None:
                return entry.value  # the API server is away: stale beats nothing
            if isinstance(error, Unavailable):
                raise
            raise Unavailable(
                f"Could not read {self._what} {key} from Kubernetes ({error}); retry shortly.",
                code="kubernetes_unavailable",
                headers={"Retry-After": "1"},
            ) from error

    def _start(self, key: K) -> asyncio.Future[V]:
        future: asyncio.Future[V] = asyncio.ensure_future(self._fetch(key))
        self._loading[key] = future
        return future

    async def _fetch(self, key: K) -> V:
        try:
            value = await self._load(key)
            self._entries[key] = _Entry(value, time.monotonic())
            return value
        except Exception:
            log.warning("Failed to read %s %s from Kubernetes", self._what, key, exc_info=True)
            raise
        finally:
            self._loading.pop(key, None)


def _ignore_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # logged in _fetch; read here so asyncio does not warn


class FreshCache(Generic[K, V]):
    """Values reused for at most `ttl` seconds, never longer (`KeyCache`'s rule).

    A value in use is re-read in the background once half its TTL has passed,
    so requests seldom wait for the read; none is served older than the TTL,
    and a failed read fails the request rather than serving an old answer.
    """

    def __init__(self, ttl: float, load: Callable[[K], Awaitable[V]], what: str) -> None:
        self.ttl = ttl
        self._load = load
        self._what = what
        self._entries: dict[K, _Entry[V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            age = time.monotonic() - entry.at
            if age < self.ttl:
                if age >= self.ttl / 2 and key not in self._loading:
                    self._start(key).add_done_callback(_ignore_failure)
                return entry.value
        future = self._loading.get(key) or self._start(key)
        return await asyncio.shield(future)

    def _start(self, key: K) -> asyncio.Future[V]:
        future: asyncio.Future[V] = asyncio.ensure_future(self._fetch(key))
        self._loading[key] = future
        return future

    async def _fetch(self, key: K) -> V:
        try:
            started = time.monotonic()
            value = await self._load(key)
            # Stamped with the start of the read: the value is no fresher than that.
            self._entries[key] = _Entry(value, started)
            return value
        except Exception:
            log.warning("Failed to read %s %s", self._what, key, exc_info=True)
            raise
        finally:
            self._loading.pop(key, None)


class Catalog:
    def __init__(self, kube: Kube, ttl: float, engine: AsyncEngine, end_ttl: float) -> None:
        self.kube = kube
        self.engine = engine
        self._tenants: TtlCache[tuple[str, str], TenantRecord | None] = TtlCache(
            ttl, self._read_tenant, "Tenant"
        )
        self._plans: TtlCache[str, Plan | None] = TtlCache(ttl, self._read_plan, "Plan")
        self._ends: FreshCache[str, SubscriptionEnd | None] = FreshCache(
            end_ttl, self._read_end, "the subscription end of tenant"
        )

    async def tenant(self, namespace: str, name: str) -> Tenant | None:
        record = await self._tenants.get((namespace, name))
        if record is None:
            return None
        plan = await self._plans.get(record.plan_name) if record.plan_name else None
        return Tenant(
            record.namespace,
            record.name,
            record.uid,
            record.instance_namespace,
            plan,
            record.cycle,
            await self._ends.get(record.uid) if record.uid else None,
        )

    async def _read_tenant(self, key: tuple[str, str]) -> TenantRecord | None:
        body = await self.kube.tenant(*key)
        if body is None:
            return None
        status = body.get("status") or {}
        return TenantRecord(
            namespace=key[0],
            name=key[1],
            uid=(body.get("metadata") or {}).get("uid", ""),
            instance_namespace=status.get("namespace"),
            plan_name=status.get("plan"),
            cycle=_cycle(status.get("billingCycle"), key),
        )

    async def _read_end(self, tenant_uid: str) -> SubscriptionEnd | None:
        async with self.engine.connect() as conn:
            return SubscriptionEnd.of(await subscriptions_repo.terms_of_tenant(conn, tenant_uid))

    async def _read_plan(self, name: str) -> Plan | None:
        body = await self.kube.plan(name)
        if body is None:
            return None
        try:
            return Plan(name=name, spec=PlanSpec.model_validate(body.get("spec") or {}))
        except ValidationError:
            log.warning("Plan %s is invalid; treated as missing", name, exc_info=True)
            return None


def _cycle(raw: Any, tenant: tuple[str, str]) -> BillingCycle:
    """The cycle the operator wrote into the Tenant's status; calendar months until then."""
    if not raw:
        return CALENDAR_MONTHS
    try:
        summary = BillingCycleSummary.model_validate(raw)
    except ValidationError:
        log.warning("Tenant %s/%s has an unreadable status.billingCycle", *tenant)
        return CALENDAR_MONTHS
    return BillingCycle(summary.start, summary.interval, summary.anchor_day, summary.trial_start)


async def existing_tenant(catalog: Catalog, namespace: str, name: str) -> Tenant:
    """The Tenant, or a 404 naming it: an admin asking about a typo gets told so,
    not an empty answer that reads like a tenant without keys or usage."""
    tenant = await catalog.tenant(namespace, name)
    if tenant is None:
        raise NotFound(
            f"There is no Tenant {name} in namespace {namespace} (see `kubectl get tenants -A`).",
            code="tenant_not_found",
            details={"namespace": namespace, "name": name},
        )
    return tenant
