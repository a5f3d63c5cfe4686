"""All SQL of `stripe_events` and of the Stripe columns of subscriptions and invoices."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A verified event as received, to store."""

    id: str
    type: str
    created: int  # Stripe's time of the event, in Unix seconds, as the event says
    object_id: str | None
    payload: str  # the body as Stripe sent it


_STORE = (
    "INSERT INTO stripe_events (id, type, created, object_id, payload, deliveries)"
    " SELECT e.id, e.type, to_timestamp(e.created), e.object_id, CAST(e.payload AS json), e.n"
    " FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::int[])"
    "   AS e(id, type, created, object_id, payload, n)"
    " ORDER BY e.id"  # concurrent stores lock the rows they share in one order
    " ON CONFLICT (id) DO UPDATE SET deliveries = stripe_events.deliveries + EXCLUDED.deliveries"
    " RETURNING id, xmax = 0"  # no updating transaction: the row was inserted now
)


async def store_events(conn: psycopg.AsyncConnection[Any], events: Sequence[NewEvent]) -> set[str]:
    """Store events under their ids (a replay counts one more delivery); the ids that
    are new. One statement whatever the group's size, on the driver's own connection in
    autocommit: this is the path every acknowledgement waits for, and SQLAlchemy's work
    per statement would weigh as much as the statement.

    The columns go as arrays in PostgreSQL's binary format: the bodies travel as they
    came, neither escaped here nor parsed there beyond json's syntax check (the column
    is `json`, which keeps the body byte for byte: jsonb would parse and rebuild each,
    at twice the database's cost per event)."""
    deliveries = Counter(e.id for e in events)
    unique = sorted({e.id: e for e in events}.values(), key=lambda e: e.id)
    cursor = await conn.execute(
        _STORE,
        (
            [e.id for e in unique],
            [e.type for e in unique],
            [e.created for e in unique],
            [e.object_id for e in unique],
            [e.payload for e in unique],
            [deliveries[e.id] for e in unique],
        ),
    )
    return {row[0] for row in await cursor.fetchall() if row[1]}


@dataclass(frozen=True)
class Claimed:
    id: str
    type: str
    attempts: int
    payload: dict[str, Any]


async def claim(conn: AsyncConnection) -> Claimed | None:
    """The pending event due first (then the oldest by Stripe's `created`), locked until
    the transaction ends; events other workers hold are skipped. A new event is due when
    it is received; the order follows `stripe_events_pending`, so a backlog costs no sort."""
    row = (
        await conn.execute(
            text(
                "SELECT id, type, attempts, payload FROM stripe_events"
                " WHERE state = 'pending' AND next_attempt_at <= now()"
                " ORDER BY next_attempt_at, created LIMIT 1 FOR UPDATE SKIP LOCKED"
            )
        )
    ).first()
    return None if row is None else Claimed(row.id, row.type, row.attempts, row.payload)


async def finish(
    conn: AsyncConnection, event_id: str, state: Literal["handled", "ignored"]
) -> None:
    await conn.execute(
        text(
            "UPDATE stripe_events SET state = :state, attempts = attempts + 1,"
            " handled_at = now(), error = NULL WHERE id = :id"
        ),
        {"id": event_id, "state": state},
    )


async def retry(conn: AsyncConnection, event_id: str, delay: float, error: str) -> None:
    await conn.execute(
        text(
            "UPDATE stripe_events SET attempts = attempts + 1, error = :error,"
            " next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id"
        ),
        {"id": event_id, "delay": delay, "error": error},
    )


async def fail(conn: AsyncConnection, event_id: str, error: str) -> None:
    await conn.execute(
        text(
            "UPDATE stripe_events SET state = 'failed', attempts = attempts + 1, error = :error"
            " WHERE id = :id"
        ),
        {"id": event_id, "error": error},
    )


async def backlog(conn: AsyncConnection) -> tuple[int, float]:
    """The pending events (retries waiting included), and the seconds since the oldest
    of them was received (0 when none is pending)."""
    row = (
        await conn.execute(
            text(
                "SELECT count(*) AS pending,"
                " coalesce(extract(epoch FROM now() - min(received_at)), 0) AS age"
                " FROM stripe_events WHERE state = 'pending'"
            )
        )
    ).one()
    return int(row.pending), float(row.age)


async def newest_status_event(
    conn: AsyncConnection, stripe_subscription_id: str, excluding: str
) -> dt.datetime | None:
    """When the newest subscription event already handled for this Stripe Subscription
    happened: an event older than it never sets the status."""
    found: dt.datetime | None = await conn.scalar(
        text(
            "SELECT max(created) FROM stripe_events WHERE object_id = :object"
            " AND state = 'handled' AND type LIKE 'customer.subscription.%' AND id <> :id"
        ),
        {"object": stripe_subscription_id, "id": excluding},
    )
    return found


async def requeue_ignored(conn: AsyncConnection, object_id: str, type_prefix: str) -> int:
    """Make pending again the ignored events of an object (of types with this prefix):
    what was no one's has become Tenantry's."""
    result = await conn.execute(
        text(
            "UPDATE stripe_events SET state = 'pending', next_attempt_at = now(),"
            " handled_at = NULL WHERE object_id = :object AND state = 'ignored'"
            " AND starts_with(type, :prefix)"
        ),
        {"object": object_id, "prefix": type_prefix},
    )
    return int(result.rowcount)


# ------------------------------------------------------------------ subscriptions


@dataclass(frozen=True)
class StripeStatus:
    status: str
    since: dt.datetime  # when Stripe's subscription entered it (an event's `created`)


@dataclass(frozen=True)
class StripeSubscription:
    """The Stripe side of one of Tenantry's subscriptions."""

    uid: str
    customer_id: str | None
    subscription_id: str | None
    status: str | None
    status_at: dt.datetime | None


_SUBSCRIPTION = (
    "SELECT uid, stripe_customer_id, stripe_subscription_id, stripe_status, stripe_status_at"
    " FROM subscriptions"
)


async def lock_subscription(
    conn: AsyncConnection, *, stripe_id: str | None, uid: str | None
) -> StripeSubscription | None:
    """The subscription linked to `stripe_id`, else the one whose uid is `uid`, its row
    locked until the transaction ends: events of one subscription take turns."""
    for column, value in (("stripe_subscription_id", stripe_id), ("uid", uid)):
        if not value:
            continue
        row = (
            await conn.execute(
                text(f"{_SUBSCRIPTION} WHERE {column} = :v FOR UPDATE"),
                {"v": value},
            )
        ).first()
        if row is not None:
            return StripeSubscription(
                row.uid, row.stripe_customer_id, row.stripe_subscription_id, row.stripe_status,
                row.stripe_status_at,
            )  # fmt: skip
    return None


async def find_subscription(
    conn: AsyncConnection, *, stripe_id: str | None, uid: str | None
) -> str | None:
    """The uid of the subscription linked to `stripe_id`, else of the one whose uid is `uid`."""
    found: str | None = await conn.scalar(
        text(
            "SELECT uid FROM subscriptions WHERE stripe_subscription_id = :sid OR uid = :uid"
            " ORDER BY stripe_subscription_id = :sid DESC NULLS LAST LIMIT 1"
        ),
        {"sid": stripe_id, "uid": uid},
    )
    return found


async def set_status(conn: AsyncConnection, uid: str, status: StripeStatus) -> None:
    await conn.execute(
        text(
            "UPDATE subscriptions SET stripe_status = :status, stripe_status_at = :since,"
            " updated_at = now() WHERE uid = :uid"
        ),
        {"uid": uid, "status": status.status, "since": status.since},
    )


async def link_subscription(
    conn: AsyncConnection, uid: str, *, customer_id: str | None, subscription_id: str | None
) -> None:
    """Record Stripe's customer and subscription ids where none is recorded yet."""
    await conn.execute(
        text(
            "UPDATE subscriptions SET"
            " stripe_customer_id = COALESCE(stripe_customer_id, :customer),"
            " stripe_subscription_id = COALESCE(stripe_subscription_id, :subscription),"
            " updated_at = now() WHERE uid = :uid"
        ),
        {"uid": uid, "customer": customer_id, "subscription": subscription_id},
    )


async def link_customer(
    conn: AsyncConnection, customer_id: str, *, subscription_uid: str | None,
    tenant_uid: str | None,
) -> int:  # fmt: skip
    """Record a customer on the subscription, or the tenant's subscriptions, that have none."""
    if not subscription_uid and not tenant_uid:
        return 0
    result = await conn.execute(
        text(
            "UPDATE subscriptions SET stripe_customer_id = :customer, updated_at = now()"
            " WHERE stripe_customer_id IS NULL AND (uid = :uid OR tenant_uid = :tenant)"
        ),
        {"customer": customer_id, "uid": subscription_uid, "tenant": tenant_uid},
    )
    return int(result.rowcount)


async def end_subscription(
    conn: AsyncConnection, uid: str, ended_at: dt.datetime, reason: str
) -> bool:
    """End the subscription's terms at `ended_at`; False when they had ended already."""
    result = await conn.execute(
        text(
            "UPDATE subscriptions SET ended_at = :at, end_reason = :reason, updated_at = now()"
            " WHERE uid = :uid AND ended_at IS NULL"
        ),
        {"uid": uid, "at": ended_at, "reason": reason},
    )
    return bool(result.rowcount)


# ------------------------------------------------------------------ invoices


async def invoice_linked_to(conn: AsyncConnection, stripe_invoice_id: str) -> str | None:
    found = await conn.scalar(
        text("SELECT id FROM invoices WHERE stripe_invoice_id = :sid"), {"sid": stripe_invoice_id}
    )
    return None if found is None else str(found)


async def invoice_exists(conn: AsyncConnection, invoice_id: str) -> bool:
    found = await conn.scalar(
        text("SELECT 1 FROM invoices WHERE id = CAST(:id AS uuid)"), {"id": invoice_id}
    )
    return found is not None


async def invoice_before(
    conn: AsyncConnection, subscription_uid: str, at: dt.datetime, within: dt.timedelta
) -> str | None:
    """The subscription's invoice whose boundary is the latest at or before `at`, and
    less than `within` before it."""
    found = await conn.scalar(
        text(
            "SELECT id FROM invoices WHERE subscription_uid = :uid"
            " AND boundary <= :at AND boundary > :at - :within ORDER BY boundary DESC LIMIT 1"
        ),
        {"uid": subscription_uid, "at": at, "within": within},
    )
    return None if found is None else str(found)


async def link_invoice(
    conn: AsyncConnection, invoice_id: str, stripe_invoice_id: str, number: str | None
) -> str | None:
    """Link Tenantry's invoice to Stripe's (and its number, once it has one); the Stripe
    invoice it is linked to instead, when another."""
    linked = await conn.scalar(
        text(
            "UPDATE invoices SET stripe_invoice_id = :sid,"
            " stripe_invoice_number = COALESCE(:number, stripe_invoice_number)"
            " WHERE id = CAST(:id AS uuid)"
            " AND (stripe_invoice_id IS NULL OR stripe_invoice_id = :sid)"
            " RETURNING id"
        ),
        {"id": invoice_id, "sid": stripe_invoice_id, "number": number},
    )
    if linked is not None:
        return None
    other: str | None = await conn.scalar(
        text("SELECT stripe_invoice_id FROM invoices WHERE id = CAST(:id AS uuid)"),
        {"id": invoice_id},
    )
    return other


@dataclass(frozen=True)
class Place:
    """Where a subscription's resource is."""

    namespace: str
    name: str


async def subscription_place(conn: AsyncConnection, uid: str) -> Place | None:
    found = (
        await conn.execute(
            text("SELECT namespace, name FROM subscriptions WHERE uid = :uid"), {"uid": uid}
        )
    ).first()
    return None if found is None else Place(found.namespace, found.name)


async def record_cycle(
    conn: AsyncConnection, uid: str, *, started_at: dt.datetime, anchor: dt.datetime,
    seen_at: dt.datetime,
) -> None:  # fmt: skip
    """The Stripe Subscription's start and billing cycle anchor, as an event that happened
    at `seen_at` tells them; an event older than the one they were read from changes
    nothing (api/stripe/collection.py decides by them)."""
    await conn.execute(
        text(
            "UPDATE subscriptions SET stripe_started_at = :started,"
            " stripe_cycle_anchor = :anchor, stripe_cycle_seen_at = :seen, updated_at = now()"
            " WHERE uid = :uid"
            " AND (stripe_cycle_seen_at IS NULL OR stripe_cycle_seen_at <= :seen)"
        ),
        {"uid": uid, "started": started_at, "anchor": anchor, "seen": seen_at},
    )
