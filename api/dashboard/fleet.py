"""The fleet: every Tenant with its plan, subscription state and health, for the team's list.

Read with one LIST of Tenants and one of Subscriptions, kept for
`TENANTRY_DASHBOARD_FLEET_TTL` seconds; an older list is still shown while one
background read refreshes it, so a page of the fleet never waits on the API
server once the first list is in. Searching, filtering and paging are pure
functions over that list: a thousand tenants take well under a millisecond.

A tenant's page takes its Tenant object from the same list while the list is
younger than the TTL (no GET for a tenant opened from the fleet page, and never
older than what the fleet page shows), and otherwise from a GET reused under the
same rule: never older than the TTL, re-read in the background once half of it
has passed (`FreshCache`), so a page viewed again and again seldom waits on the
API server and never shows an older object than the fleet page may.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenantry.api.dashboard.cluster import list_all
from tenantry.api.tenants.catalog import FreshCache
from tenantry.api.tenants.kube import Kube, SubscriptionResource, TenantResource

log = logging.getLogger("tenantry.api.dashboard")

HEALTHS = ("healthy", "failing", "pending")
NO_SUBSCRIPTION = "none"
STALE_FACTOR = 12
"""A list older than this many TTLs is not shown: the page waits for a fresh one."""


@dataclass(frozen=True)
class TenantRow:
    namespace: str
    name: str
    display_name: str
    email: str
    plan: str  # in force (status), else the Subscription's planRef; "" for none
    state: str  # the Subscription's state, or "none"
    health: str  # healthy | failing | pending
    reason: str  # the Ready condition's reason
    chart_version: str
    license_expires: dt.datetime | None
    created: str
    haystack: str  # what search matches, lower-cased

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def health_of(status: Mapping[str, Any]) -> tuple[str, str]:
    """`healthy` when Ready is True, `failing` when False, `pending` until it is known."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            state = {"True": "healthy", "False": "failing"}.get(cond.get("status"), "pending")
            return state, str(cond.get("reason") or "")
    return "pending", ""


def rows_of(
    tenants: Sequence[Mapping[str, Any]], subscriptions: Sequence[Mapping[str, Any]]
) -> list[TenantRow]:
    """The fleet's rows, sorted by namespace and name. Pure."""
    by_tenant: dict[tuple[str, str], Mapping[str, Any]] = {}
    for sub in subscriptions:
        ref = ((sub.get("spec") or {}).get("tenantRef") or {}).get("name")
        namespace = (sub.get("metadata") or {}).get("namespace", "")
        if ref:
            by_tenant[(namespace, ref)] = sub
    rows = []
    for body in tenants:
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        status = body.get("status") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        sub = by_tenant.get((namespace, name)) or {}
        sub_spec, sub_status = sub.get("spec") or {}, sub.get("status") or {}
        plan = status.get("plan") or ((sub_spec.get("planRef") or {}).get("name") or "")
        health, reason = health_of(status)
        license_ = status.get("license") or {}
        expires = license_.get("expiresAt")
        display = spec.get("displayName") or name
        email = spec.get("billingEmail") or ""
        rows.append(
            TenantRow(
                namespace=namespace,
                name=name,
                display_name=display,
                email=email,
                plan=plan,
                state=(sub_status.get("state") or "pending") if sub else NO_SUBSCRIPTION,
                health=health,
                reason=reason,
                chart_version=(status.get("release") or {}).get("chartVersion") or "",
                license_expires=dt.datetime.fromisoformat(expires) if expires else None,
                created=meta.get("creationTimestamp") or "",
                haystack=f"{namespace}/{name} {display} {email}".lower(),
            )
        )
    rows.sort(key=lambda r: (r.namespace, r.name))
    return rows


@dataclass(frozen=True)
class Query:
    search: str = ""
    plan: str = ""
    state: str = ""
    health: str = ""
    page: int = 1


@dataclass(frozen=True)
class Page:
    rows: Sequence[TenantRow]
    matched: int
    total: int
    page: int
    pages: int
    plans: Sequence[str]  # every plan in the fleet, for the filter
    states: Sequence[str]


@dataclass(frozen=True)
class Choices:
    """What the fleet's filters offer: every plan and subscription state in it."""

    plans: Sequence[str]
    states: Sequence[str]

    @classmethod
    def of(cls, rows: Sequence[TenantRow]) -> Choices:
        return cls(sorted({r.plan for r in rows if r.plan}), sorted({r.state for r in rows}))


def select(
    rows: Sequence[TenantRow], query: Query, page_size: int, choices: Choices | None = None
) -> Page:
    """The page of `rows` matching `query`, with the filters' `choices` (those of `rows`
    unless given: the fleet list keeps its own). Pure."""
    needle = query.search.strip().lower()
    matched = (
        [
            r
            for r in rows
            if (not needle or needle in r.haystack)
            and (not query.plan or r.plan == query.plan)
            and (not query.state or r.state == query.state)
            and (not query.health or r.health == query.health)
        ]
        if needle or query.plan or query.state or query.health
        else rows
    )
    pages = max(1, math.ceil(len(matched) / page_size))
    number = min(max(1, query.page), pages)
    start = (number - 1) * page_size
    offered = choices or Choices.of(rows)
    return Page(
        rows=matched[start : start + page_size],
        matched=len(matched),
        total=len(rows),
        page=number,
        pages=pages,
        plans=offered.plans,
        states=offered.states,
    )


@dataclass(frozen=True)
class Listing:
    """One reading of the fleet: its rows, each row and Tenant object by key, and what
    its filters offer (read once per list, not per page)."""

    rows: list[TenantRow]
    by_key: Mapping[str, tuple[Mapping[str, Any], TenantRow]]
    choices: Choices

    @classmethod
    def of(
        cls, tenants: Sequence[Mapping[str, Any]], subscriptions: Sequence[Mapping[str, Any]]
    ) -> Listing:
        rows = rows_of(tenants, subscriptions)
        bodies = {_key_of(body): body for body in tenants}
        return cls(rows, {row.key: (bodies[row.key], row) for row in rows}, Choices.of(rows))


def _key_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Fleet:
    """The fleet list, read from Kubernetes and reused (see the module's docstring)."""

    def __init__(self, kube: Kube, ttl: float) -> None:
        self._kube = kube
        self._ttl = ttl
        self._listing: Listing | None = None
        self._at = 0.0
        self._loading: asyncio.Future[Listing] | None = None
        self._read_one: FreshCache[tuple[str, str], Mapping[str, Any] | None] = FreshCache(
            ttl, self._get, "Tenant"
        )

    async def listing(self) -> Listing:
        """The fleet list, for the fleet page (see the module's docstring)."""
        age = time.monotonic() - self._at
        if self._listing is not None and age < self._ttl:
            return self._listing
        if self._listing is not None and age < STALE_FACTOR * self._ttl:
            self._refresh()
            return self._listing
        return await asyncio.shield(self._loading or self._start())

    def row(self, namespace: str, name: str) -> TenantRow | None:
        """The tenant's row for its page, without waiting: as listed if the list is younger
        than STALE_FACTOR TTLs. It starts no LIST: a thousand objects cost more than the
        GETs of the pages people open between two fleet pages."""
        if self._listing is None or time.monotonic() - self._at >= STALE_FACTOR * self._ttl:
            return None
        return self._listing.by_key.get(f"{namespace}/{name}", (None, None))[1]

    async def body(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Tenant object for its page, never older than the TTL: as listed while the
        list is that young, else as read by a GET that young (None: there is none)."""
        if self._listing is not None and time.monotonic() - self._at < self._ttl:
            listed = self._listing.by_key.get(f"{namespace}/{name}")
            if listed is not None:
                return listed[0]
        return await self._read_one.get((namespace, name))

    async def _get(self, key: tuple[str, str]) -> Mapping[str, Any] | None:
        return await self._kube.tenant(*key)

    def _refresh(self) -> None:
        if self._loading is None:
            self._start().add_done_callback(_quiet)

    def _start(self) -> asyncio.Future[Listing]:
        self._loading = asyncio.ensure_future(self._read())
        return self._loading

    async def _read(self) -> Listing:
        try:
            started = time.monotonic()
            client = self._kube.client
            tenants, subscriptions = await asyncio.gather(
                list_all(client, TenantResource), list_all(client, SubscriptionResource)
            )
            self._listing = Listing.of(tenants, subscriptions)
            self._at = started
            return self._listing
        finally:
            self._loading = None


def _quiet(future: asyncio.Future[Listing]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("Could not refresh the fleet list", exc_info=future.exception())
