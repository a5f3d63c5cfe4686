"""Tenants and their Plans, read from Kubernetes and reused for a few seconds.

The hot path must not wait on the API server: an entry younger than the TTL
is served as is; an older one is still served while one background read
refreshes it (up to three TTLs; past that the caller waits for a fresh read).
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

from tenantry.api.errors import NotFound, Unavailable
from tenantry.api.tenants.kube import Kube
from tenantry.core.periods import CALENDAR_MONTHS, BillingCycle, Period
from tenantry.core.resources import UNLIMITED, Aggregation, BillingCycleSummary, Metric, PlanSpec

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

    @property
    def key(self) -> str:
        """How people name the tenant: `<namespace>/<name>`."""
        return f"{self.namespace}/{self.name}"

    def period_at(self, moment: dt.datetime) -> Period:
        """The tenant's billing period holding `moment`."""
        return self.cycle.period_at(moment)


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


class Catalog:
    def __init__(self, kube: Kube, ttl: float) -> None:
        self.kube = kube
        self._tenants: TtlCache[tuple[str, str], TenantRecord | None] = TtlCache(
            ttl, self._read_tenant, "Tenant"
        )
        self._plans: TtlCache[str, Plan | None] = TtlCache(ttl, self._read_plan, "Plan")

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
    return BillingCycle(summary.start, summary.interval, summary.anchor_day)


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
