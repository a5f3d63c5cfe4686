"""All SQL of subscription terms, and what invoices say about a subscription.

The operator writes each Subscription's terms (`save_terms`) and reads the
billing facts its state follows (`billing_facts`); billing runs and the API
read the terms (`load_terms`, `terms_of_tenant`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.core.invoices import Party, TaxRate
from tenantry.core.lifecycle import BillingFacts, CouponTerms, PlanChange, Terms
from tenantry.core.resources import CouponSpec, PlanSpec

_COLUMNS = (
    "uid, namespace, name, tenant_uid, tenant_name, plan_name, plan, started_at, trial_end, "
    "anchor_day, cancel_at, ended_at, end_reason, coupon_name, coupon, coupon_redeemed_at, "
    "tax_rates, buyer"
)


_SELECT = _COLUMNS.replace(", plan, ", ", plan::text AS plan, ")


@functools.lru_cache(maxsize=512)
def plan_spec(wire: str) -> PlanSpec:
    """A stored plan, parsed once per distinct text: thousands of subscriptions share a few
    plans, and billing runs read them all."""
    return PlanSpec.model_validate_json(wire)


def party_to_json(party: Party) -> dict[str, Any]:
    return {
        "name": party.name,
        "address": list(party.address),
        "country": party.country,
        "taxId": party.tax_id,
        "email": party.email,
    }


def party_from_json(raw: dict[str, Any]) -> Party:
    return Party(
        name=raw.get("name", ""),
        address=tuple(raw.get("address") or ()),
        country=raw.get("country"),
        tax_id=raw.get("taxId", ""),
        email=raw.get("email", ""),
    )


def _terms(row: Any, changes: Sequence[PlanChange]) -> Terms:
    coupon = None
    if row.coupon_name and row.coupon is not None and row.coupon_redeemed_at is not None:
        coupon = CouponTerms(
            row.coupon_name, CouponSpec.model_validate(row.coupon), row.coupon_redeemed_at
        )
    return Terms(
        uid=row.uid,
        namespace=row.namespace,
        name=row.name,
        tenant_uid=row.tenant_uid,
        tenant_name=row.tenant_name,
        plan_name=row.plan_name,
        plan=plan_spec(row.plan),
        started_at=row.started_at,
        anchor_day=row.anchor_day,
        trial_end=row.trial_end,
        cancel_at=row.cancel_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        coupon=coupon,
        tax_rates=tuple(
            TaxRate(r["name"], Decimal(r["percentage"]), bool(r.get("inclusive")))
            for r in row.tax_rates
        ),
        buyer=party_from_json(row.buyer),
        plan_changes=tuple(changes),
    )


async def _changes(conn: AsyncConnection, uids: Sequence[str]) -> dict[str, list[PlanChange]]:
    found: dict[str, list[PlanChange]] = {}
    if not uids:
        return found
    rows = await conn.execute(
        text(
            "SELECT subscription_uid, changed_at, from_plan_name, from_plan, to_plan_name, to_plan"
            " FROM subscription_plan_changes WHERE subscription_uid = ANY(:uids)"
            " ORDER BY subscription_uid, changed_at, id"
        ),
        {"uids": list(uids)},
    )
    for r in rows:
        found.setdefault(r.subscription_uid, []).append(
            PlanChange(
                r.changed_at,
                r.from_plan_name,
                PlanSpec.model_validate(r.from_plan),
                r.to_plan_name,
                PlanSpec.model_validate(r.to_plan),
            )
        )
    return found


async def load_terms(conn: AsyncConnection, uid: str) -> Terms | None:
    query = text(f"SELECT {_SELECT} FROM subscriptions WHERE uid = :uid")  # noqa: S608
    row = (await conn.execute(query, {"uid": uid})).first()
    if row is None:
        return None
    return _terms(row, (await _changes(conn, [uid])).get(uid, []))


async def load_many(conn: AsyncConnection, uids: Sequence[str]) -> list[Terms]:
    rows = (
        await conn.execute(
            text(f"SELECT {_SELECT} FROM subscriptions WHERE uid = ANY(:uids) ORDER BY uid"),  # noqa: S608
            {"uids": list(uids)},
        )
    ).all()
    changes = await _changes(conn, [r.uid for r in rows])
    return [_terms(r, changes.get(r.uid, [])) for r in rows]


async def all_uids(conn: AsyncConnection, tenant_uid: str | None = None) -> list[str]:
    """Every subscription billing runs consider (those of one tenant, when named)."""
    if tenant_uid is None:
        rows = await conn.scalars(text("SELECT uid FROM subscriptions ORDER BY uid"))
    else:
        rows = await conn.scalars(
            text("SELECT uid FROM subscriptions WHERE tenant_uid = :t ORDER BY uid"),
            {"t": tenant_uid},
        )
    return list(rows)


async def terms_of_tenant(conn: AsyncConnection, tenant_uid: str) -> Terms | None:
    """The tenant's latest subscription, ended or not."""
    uid = await conn.scalar(
        text(
            "SELECT uid FROM subscriptions WHERE tenant_uid = :t"
            " ORDER BY started_at DESC, uid DESC LIMIT 1"
        ),
        {"t": tenant_uid},
    )
    return None if uid is None else await load_terms(conn, uid)


async def save_terms(conn: AsyncConnection, terms: Terms) -> None:
    """Insert or update the subscription's row (plan changes are recorded separately)."""
    coupon = terms.coupon
    await conn.execute(
        text(
            f"INSERT INTO subscriptions ({_COLUMNS}, currency, updated_at) VALUES ("  # noqa: S608
            " :uid, :namespace, :name, :tenant_uid, :tenant_name, :plan_name, CAST(:plan AS jsonb),"
            " :started_at, :trial_end, :anchor_day, :cancel_at, :ended_at, :end_reason,"
            " :coupon_name, CAST(:coupon AS jsonb), :coupon_redeemed_at, CAST(:tax_rates AS jsonb),"
            " CAST(:buyer AS jsonb), :currency, now())"
            " ON CONFLICT (uid) DO UPDATE SET namespace = EXCLUDED.namespace, name = EXCLUDED.name,"
            " tenant_uid = EXCLUDED.tenant_uid, tenant_name = EXCLUDED.tenant_name,"
            " plan_name = EXCLUDED.plan_name, plan = EXCLUDED.plan, currency = EXCLUDED.currency,"
            " started_at = EXCLUDED.started_at, trial_end = EXCLUDED.trial_end,"
            " anchor_day = EXCLUDED.anchor_day, cancel_at = EXCLUDED.cancel_at,"
            # An end, once recorded (by the operator or a Stripe webhook), stays.
            " ended_at = COALESCE(subscriptions.ended_at, EXCLUDED.ended_at),"
            " end_reason = COALESCE(subscriptions.end_reason, EXCLUDED.end_reason),"
            " coupon_name = EXCLUDED.coupon_name, coupon = EXCLUDED.coupon,"
            " coupon_redeemed_at = EXCLUDED.coupon_redeemed_at, tax_rates = EXCLUDED.tax_rates,"
            " buyer = EXCLUDED.buyer, updated_at = now()"
        ),
        {
            "uid": terms.uid,
            "namespace": terms.namespace,
            "name": terms.name,
            "tenant_uid": terms.tenant_uid,
            "tenant_name": terms.tenant_name,
            "plan_name": terms.plan_name,
            "plan": json.dumps(terms.plan.to_wire()),
            "currency": terms.currency,
            "started_at": terms.started_at,
            "trial_end": terms.trial_end,
            "anchor_day": terms.anchor_day,
            "cancel_at": terms.cancel_at,
            "ended_at": terms.ended_at,
            "end_reason": terms.end_reason,
            "coupon_name": coupon.name if coupon else None,
            "coupon": json.dumps(coupon.spec.to_wire()) if coupon else None,
            "coupon_redeemed_at": coupon.redeemed_at if coupon else None,
            "tax_rates": json.dumps(
                [
                    {"name": r.name, "percentage": str(r.percentage), "inclusive": r.inclusive}
                    for r in terms.tax_rates
                ]
            ),
            "buyer": json.dumps(party_to_json(terms.buyer)),
        },
    )


async def record_plan_change(conn: AsyncConnection, uid: str, change: PlanChange) -> None:
    await conn.execute(
        text(
            "INSERT INTO subscription_plan_changes"
            " (subscription_uid, changed_at, from_plan_name, from_plan, to_plan_name, to_plan)"
            " VALUES (:uid, :at, :fn, CAST(:fp AS jsonb), :tn, CAST(:tp AS jsonb))"
        ),
        {
            "uid": uid,
            "at": change.changed_at,
            "fn": change.from_plan_name,
            "fp": json.dumps(change.from_plan.to_wire()),
            "tn": change.to_plan_name,
            "tp": json.dumps(change.to_plan.to_wire()),
        },
    )


async def record_stripe_ids(
    conn: AsyncConnection, uid: str, customer_id: str, subscription_id: str
) -> None:
    """The ids of the subscription's Stripe objects, by which the webhook worker finds it."""
    await conn.execute(
        text(
            "UPDATE subscriptions SET stripe_customer_id = :customer,"
            " stripe_subscription_id = :subscription, updated_at = now() WHERE uid = :uid"
        ),
        {"uid": uid, "customer": customer_id, "subscription": subscription_id},
    )


async def coupon_redemptions(conn: AsyncConnection, coupon: str) -> int:
    count = await conn.scalar(
        text(
            "SELECT count(*) FROM subscriptions"
            " WHERE coupon_name = :c AND coupon_redeemed_at IS NOT NULL"
        ),
        {"c": coupon},
    )
    return int(count or 0)


async def lock_coupon(conn: AsyncConnection, coupon: str) -> None:
    """Redemptions of one coupon take turns, so maxRedemptions holds under concurrency."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('coupon:' || :c, 0))"), {"c": coupon}
    )


@dataclass(frozen=True)
class LatestInvoice:
    id: str
    number: str | None
    status: str
    currency: str
    total: int
    amount_due: int
    due_at: dt.datetime | None


@dataclass(frozen=True)
class InvoiceFacts:
    facts: BillingFacts
    latest: LatestInvoice | None


_AMOUNT_DUE = "GREATEST(0, total - amount_paid - amount_credited)"


async def billing_facts(conn: AsyncConnection, subscription_uid: str) -> InvoiceFacts:
    """The oldest overdue date, the amount due, and the latest invoice."""
    due = (
        await conn.execute(
            text(
                "SELECT min(due_at) AS overdue_since,"  # noqa: S608
                f" coalesce(sum({_AMOUNT_DUE}), 0) AS amount_due"
                " FROM invoices WHERE subscription_uid = :uid AND status = 'open'"
                f" AND {_AMOUNT_DUE} > 0"
            ),
            {"uid": subscription_uid},
        )
    ).one()
    stripe = (
        await conn.execute(
            text("SELECT stripe_status, stripe_status_at FROM subscriptions WHERE uid = :uid"),
            {"uid": subscription_uid},
        )
    ).first()
    latest = (
        await conn.execute(
            text(
                f"SELECT id, number, status, currency, total, {_AMOUNT_DUE} AS amount_due,"  # noqa: S608
                " due_at FROM invoices WHERE subscription_uid = :uid"
                " ORDER BY boundary DESC LIMIT 1"
            ),
            {"uid": subscription_uid},
        )
    ).first()
    return InvoiceFacts(
        BillingFacts(
            overdue_since=due.overdue_since,
            amount_due=int(due.amount_due),
            stripe_status=stripe.stripe_status if stripe else None,
            stripe_status_at=stripe.stripe_status_at if stripe else None,
        ),
        None
        if latest is None
        else LatestInvoice(
            id=str(latest.id),
            number=latest.number,
            status=latest.status,
            currency=latest.currency,
            total=latest.total,
            amount_due=0 if latest.status in ("void", "uncollectible") else int(latest.amount_due),
            due_at=latest.due_at,
        ),
    )


async def overdue_since_all(conn: AsyncConnection) -> dict[str, dt.datetime]:
    """The due date of each subscription's oldest unpaid open invoice."""
    rows = await conn.execute(
        text(
            "SELECT subscription_uid, min(due_at) AS since FROM invoices"  # noqa: S608
            f" WHERE status = 'open' AND {_AMOUNT_DUE} > 0 GROUP BY subscription_uid"
        )
    )
    return {r.subscription_uid: r.since for r in rows}


async def past_due_amounts(conn: AsyncConnection, now: dt.datetime) -> dict[str, int]:
    """What is overdue now, per currency."""
    rows = await conn.execute(
        text(
            f"SELECT currency, sum({_AMOUNT_DUE}) AS due FROM invoices"  # noqa: S608
            " WHERE status = 'open' AND due_at <= :now GROUP BY currency"
        ),
        {"now": now},
    )
    return {r.currency: int(r.due) for r in rows}
