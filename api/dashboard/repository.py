"""The SQL only the dashboard reads: billing runs and Stripe events, newest first, and
everything PostgreSQL holds for a tenant's page in one statement.

That statement is its owners' reads side by side (license history, keys, usage
totals and hours, invoices with lines and payments), the same filters and order,
so a page shows what the API's routes return; its rows are typed as the driver
types them and built by the owners' own functions where they have them
(`billing.invoice_of`). One round trip and one snapshot: an invoice is never
shown with payments from another moment than its own.

Invariant: the statement runs for every view; nothing a page shows is older
than its own request. `LastReads` keeps each page's last answer only so that a
part whose text has not changed since is not parsed again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.api.billing import repository as billing
from tenantry.api.tenants.catalog import Tenant
from tenantry.core.invoices import Invoice, Payment
from tenantry.core.periods import Period
from tenantry.core.resources import Aggregation
from tenantry.core.usage import HourlyTotals
from tenantry.db.apikeys import KeyRow
from tenantry.db.licenses import LicenseRecord


@dataclass(frozen=True)
class RunRow:
    id: int
    scope: str
    trigger: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    state: str
    subscriptions: int
    drafted: int
    finalized: int
    error: str | None


@dataclass(frozen=True)
class StripeEventRow:
    id: str
    type: str
    created: dt.datetime
    state: str
    attempts: int
    deliveries: int
    error: str | None


async def billing_runs(conn: AsyncConnection, limit: int) -> list[RunRow]:
    rows = await conn.execute(
        text(
            "SELECT id, scope, trigger, started_at, finished_at, state, subscriptions, drafted,"
            " finalized, error FROM billing_runs ORDER BY started_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [RunRow(**r._asdict()) for r in rows]


async def stripe_events(conn: AsyncConnection, limit: int) -> list[StripeEventRow]:
    rows = await conn.execute(
        text(
            "SELECT id, type, created, state, attempts, deliveries, error FROM stripe_events"
            " ORDER BY received_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [StripeEventRow(**r._asdict()) for r in rows]


# ------------------------------------------------------------------ a tenant's page

# Each part is the statement its owner runs (db/licenses.py `history`, db/apikeys.py
# `list_for_tenant`, api/usage/repository.py `period_totals` and `hourly`,
# api/billing/repository.py `tenant_invoices` with its lines and payments), with the same
# filters and order, as JSON text: no number passes through a float. Run on the driver's
# own connection, as api/stripe/repository.py's `store_events` is: SQLAlchemy's own work
# per statement (about 0.1 ms) is a sixth of this statement's time.
_TENANT_PAGE = """
    SELECT
      (SELECT coalesce(json_agg(l ORDER BY l.recorded_at, l.id), '[]')
       FROM (SELECT id, tenant_namespace, tenant_name, tenant_uid, license_id, action, plan,
                    features, limits, token_sha256, issued_at, expires_at, recorded_at
             FROM license_history
             WHERE tenant_namespace = %(ns)s AND tenant_name = %(name)s
                   AND tenant_uid = %(uid)s) l
      )::text AS licenses,
      (SELECT coalesce(json_agg(k ORDER BY k.created_at, k.id), '[]')
       FROM (SELECT id, resource_uid, resource_namespace, resource_name, tenant_namespace,
                    tenant_name, tenant_uid, key_prefix, key_hash, scopes, expires_at,
                    revoked_at, created_at, last_used_at
             FROM api_keys
             WHERE %(keys)s AND (tenant_uid = %(uid)s OR (tenant_uid IS NULL
                   AND tenant_namespace = %(ns)s AND tenant_name = %(name)s))) k
      )::text AS keys,
      (SELECT coalesce(json_agg(t), '[]')
       FROM (SELECT metric, aggregation, sum(value)::bigint AS total, max(value) AS maximum,
                    (array_agg(value ORDER BY latest_at DESC))[1] AS latest,
                    max(latest_at) AS latest_at
             FROM usage_hourly
             WHERE tenant_uid = %(uid)s AND hour >= %(start)s AND hour < %(end)s
             GROUP BY metric, aggregation) t
      )::text AS totals,
      (SELECT coalesce(json_agg(json_build_array(metric, hour, value, events)
                                ORDER BY metric, hour), '[]')
       FROM usage_hourly WHERE tenant_uid = %(uid)s AND hour >= %(start)s AND hour < %(end)s
      )::text AS hours,
      (SELECT coalesce(json_agg(i ORDER BY i.boundary DESC, i.id DESC), '[]')
       FROM (SELECT i.id, i.subscription_uid, i.tenant_uid, i.boundary, i.final, i.status,
                    i.number, i.currency, i.period_start, i.period_end, i.plan_name,
                    i.subtotal, i.discount, i.discount_unrounded, i.discount_name, i.taxes,
                    i.tax, i.total, i.reverse_charge, i.amount_paid, i.amount_credited,
                    i.seller, i.buyer, i.created_at, i.issued_at, i.due_at,
                    s.namespace, s.name, s.tenant_name,
                    (SELECT coalesce(json_agg(il ORDER BY il.position), '[]')
                     FROM invoice_lines il WHERE il.invoice_id = i.id) AS lines,
                    (SELECT coalesce(json_agg(json_build_object('amount', p.amount,
                              'method', p.method, 'reference', p.reference,
                              'paid_at', p.paid_at) ORDER BY p.paid_at, p.id), '[]')
                     FROM payments p WHERE p.invoice_id = i.id) AS payments
             FROM invoices i JOIN subscriptions s ON s.uid = i.subscription_uid
             WHERE i.tenant_uid = %(uid)s AND (%(drafts)s OR i.status <> 'draft')
             ORDER BY i.boundary DESC, i.id DESC LIMIT %(limit)s) i
      )::text AS invoices
"""
PARTS = ("licenses", "keys", "totals", "hours", "invoices")


@dataclass(frozen=True)
class TenantRecords:
    """What PostgreSQL holds for a tenant's page, as its owners' reads give it."""

    licenses: tuple[LicenseRecord, ...]
    keys: tuple[KeyRow, ...]
    totals: tuple[HourlyTotals, ...]
    hours: tuple[tuple[str, dt.datetime, int, int], ...]  # (metric, hour, value, events)
    invoices: tuple[Invoice, ...]
    texts: tuple[str, ...] = field(repr=False, compare=False)  # each part as read, by PARTS


async def tenant_records(
    conn: psycopg.AsyncConnection[Any],
    tenant: Tenant,
    period: Period,
    *,
    invoices: int,
    drafts: bool,
    keys: bool,
    last: TenantRecords | None = None,
) -> TenantRecords:
    """The tenant's license history, keys (when `keys`), usage in `period` and newest
    `invoices` (drafts when `drafts`), in one statement: one round trip, one snapshot.

    `last` is this same read's previous answer: a part whose text is what it was then is
    not parsed again but its objects reused (equal text, equal objects; all frozen). The
    database is still read every time: nothing shown is older than this statement."""
    params = {"uid": tenant.uid, "ns": tenant.namespace, "name": tenant.name, "keys": keys,
              "start": period.start, "end": period.end, "drafts": drafts,
              "limit": invoices}  # fmt: skip
    # Prepared at its first run on each connection, not its sixth (psycopg's default):
    # planning costs more than running it, and pooled connections take turns.
    row = await (await conn.execute(_TENANT_PAGE, params, prepare=True)).fetchone()
    assert row is not None  # one row, always: each part is an aggregate
    texts = tuple(row)
    parts = {
        part: (
            getattr(last, part)
            if last is not None and last.texts[n] == texts[n]
            else tuple(map(_BUILDERS[part], json.loads(texts[n], parse_float=Decimal)))
        )
        for n, part in enumerate(PARTS)
    }
    return TenantRecords(**parts, texts=texts)


def _license(r: dict[str, Any]) -> LicenseRecord:
    return LicenseRecord(**_typed(r, ("issued_at", "expires_at", "recorded_at")))


def _key(r: dict[str, Any]) -> KeyRow:
    typed = _typed(r, ("expires_at", "revoked_at", "created_at", "last_used_at"))
    return KeyRow(**{**typed, "scopes": frozenset(r["scopes"])})


def _totals(r: dict[str, Any]) -> HourlyTotals:
    return HourlyTotals(
        metric=r["metric"],
        aggregation=Aggregation(r["aggregation"]),
        total=r["total"],
        maximum=r["maximum"],
        latest=r["latest"],
        latest_at=dt.datetime.fromisoformat(r["latest_at"]),
    )


def _hour(r: list[Any]) -> tuple[str, dt.datetime, int, int]:
    metric, hour, value, events = r
    return metric, dt.datetime.fromisoformat(hour), value, events


_INVOICE_TIMES = ("boundary", "period_start", "period_end", "created_at", "issued_at", "due_at")
_LINE_TIMES = ("period_start", "period_end")
_LINE_DECIMALS = ("quantity", "billable", "unit_amount", "unrounded")


def _invoice(r: dict[str, Any]) -> Invoice:
    """Built by the billing repository's own functions, from the columns typed as the
    driver types them (numeric as Decimal, timestamps as datetimes)."""
    row = _typed(r, _INVOICE_TIMES, ("discount_unrounded",))
    lines = [
        billing.line_of(SimpleNamespace(**_typed(line, _LINE_TIMES, _LINE_DECIMALS)))
        for line in r["lines"]
    ]
    payments = [
        Payment(p["amount"], p["method"], p["reference"], dt.datetime.fromisoformat(p["paid_at"]))
        for p in r["payments"]
    ]
    return billing.invoice_of(SimpleNamespace(**row), lines, payments)


_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "licenses": _license,
    "keys": _key,
    "totals": _totals,
    "hours": _hour,
    "invoices": _invoice,
}


def _typed(
    row: dict[str, Any], times: tuple[str, ...], decimals: tuple[str, ...] = ()
) -> dict[str, Any]:
    typed = dict(row)
    for column in times:
        typed[column] = None if row[column] is None else dt.datetime.fromisoformat(row[column])
    for column in decimals:
        typed[column] = None if row[column] is None else Decimal(row[column])
    return typed


class LastReads:
    """The last `tenant_records` answer per tenant page (tenant, period and options), for
    the `size` pages read most lately: what the next read of each compares its text with."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._answers: OrderedDict[Hashable, TenantRecords] = OrderedDict()

    def get(self, key: Hashable) -> TenantRecords | None:
        return self._answers.get(key)

    def put(self, key: Hashable, answer: TenantRecords) -> None:
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self._size:
            self._answers.popitem(last=False)
