"""What each Stripe event does to Tenantry's facts: one small function per type.

Invariant: an event's effects are written in the worker's transaction that
marks it handled, so they land once or not at all; the one effect outside it,
a payment, goes through `BillingService.record_payment` under a reference
Stripe gives once per invoice (its id), so a retry records nothing twice.

Effects are facts in PostgreSQL (Stripe's status, ids, links, payments): the
operator's Subscription timer turns them into states, suspensions and
licenses. Kubernetes is written in one case: a change the customer made in
Stripe (the portal's plan change or cancellation) moves the Subscription's
spec, `planRef` and `cancelAtPeriodEnd`, so cluster and Stripe agree; the
operator then prices the change as any.

Invoices: a Stripe invoice stands for the Tenantry invoice its metadata names
(`tenantry_invoice_id`), else for the invoice of the subscription it names
whose boundary is the latest at or before its `period_end`, less than a day
before it (see `tenantry_invoice`); the link is `invoices.stripe_invoice_id`,
kept from then on. A paid one is a payment on it, referenced by the Stripe
invoice's id, of what Stripe collected up to the amount due.

Order: Stripe sends events late, twice and out of order. A subscription's
status is applied only from an event newer than every one already applied to
it (their `created`, read back from `stripe_events`); `next_status` decides,
without I/O. A handler raises `NotYet` when what it needs is not there yet
(Tenantry's invoice is still to be drafted or finalized; retried with
backoff) and `Refused` when the event contradicts Tenantry's records (failed
at once, with the reason, for a person to settle).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import stripe
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.api.billing import repository as billing_repository
from tenantry.api.billing.service import BillingService
from tenantry.api.errors import ApiError
from tenantry.api.stripe import collection
from tenantry.api.stripe import repository as repo
from tenantry.api.tenants.kube import Kube
from tenantry.core import outbound
from tenantry.core.invoices import Invoice, InvoiceStatus
from tenantry.db import audit

log = logging.getLogger("tenantry.api.stripe")

SUBSCRIPTION_KEY = "tenantry_subscription_uid"
"""Metadata the operator puts on the Stripe Subscription (and Checkout Session) it makes."""
TENANT_KEY = "tenantry_tenant_uid"
"""Metadata naming the Tenant on a Stripe Customer."""
INVOICE_KEY = "tenantry_invoice_id"
"""Metadata naming Tenantry's invoice on a Stripe invoice, when whoever made it knows it."""
LINK_WINDOW = dt.timedelta(days=1)
"""How long after the boundary of Tenantry's invoice a Stripe invoice's `period_end` may
lie. Tenantry's boundaries are at 00:00 UTC (and at a cancellation's end); Stripe stamps a
cycle's invoice at its anchor, the same moment, and the first one when the Stripe
Subscription was created, later that day."""
PAYMENT_METHOD = "stripe"


class NotYet(Exception):
    """What the event needs is not there yet: retry later (with backoff)."""


class Refused(Exception):
    """The event contradicts Tenantry's records: fail it now, saying why."""


@dataclass(frozen=True)
class StripeEvent:
    """The parts of a Stripe event the handlers read."""

    id: str
    type: str
    created: dt.datetime
    object: Mapping[str, Any]  # data.object: the object as it was when the event happened
    previous: Mapping[str, Any] = field(default_factory=dict)  # data.previous_attributes

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> StripeEvent:
        data = payload["data"]
        return cls(
            id=payload["id"],
            type=payload["type"],
            created=timestamp(payload["created"]),
            object=data["object"],
            previous=data.get("previous_attributes") or {},
        )


@dataclass(frozen=True)
class Outcome:
    state: Literal["handled", "ignored"]
    note: str  # for the log, in the past tense


def handled(note: str) -> Outcome:
    return Outcome("handled", note)


def ignored(note: str) -> Outcome:
    return Outcome("ignored", note)


@dataclass(frozen=True)
class Context:
    """What handlers work with: the worker's transaction, billing, and Stripe's API."""

    conn: AsyncConnection
    billing: BillingService
    client: stripe.StripeClient
    kube: Kube


Handler = Callable[[Context, StripeEvent], Awaitable[Outcome]]


# ------------------------------------------------------------------ reading Stripe objects


def timestamp(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def object_id(value: Any) -> str | None:
    """The id of an expandable field: a string, or an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def metadata(obj: Mapping[str, Any]) -> Mapping[str, str]:
    found = obj.get("metadata")
    return found if isinstance(found, Mapping) else {}


def invoice_subscription(invoice: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The Stripe subscription id and Tenantry subscription uid an invoice names, if any:
    from `parent.subscription_details` (API versions since 2025-03-31) or the older
    top-level `subscription`, and the metadata of either place."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    subscription = object_id(details.get("subscription")) or object_id(invoice.get("subscription"))
    uid = metadata(details).get(SUBSCRIPTION_KEY) or metadata(invoice).get(SUBSCRIPTION_KEY)
    return subscription, uid


# ------------------------------------------------------------------ subscription status


@dataclass(frozen=True)
class StatusReport:
    """A subscription's status as one event tells it."""

    status: str
    at: dt.datetime  # the event's `created`
    previous: str | None = None  # the status just before, when the event changed it
    terminal: bool = False  # customer.subscription.deleted: nothing comes after it


def next_status(
    stored: repo.StripeStatus | None, newest: dt.datetime | None, report: StatusReport
) -> repo.StripeStatus | None:
    """The status and its start to store after `report`; None to keep what is stored.

    `newest` is the `created` of the newest event already applied to the subscription.
    A newer event sets the status; an older one never does. Events of the same second
    (Stripe's resolution) are told apart by the status they left: an event that moved
    on from the stored status is the later one; a deletion is always the last.

    The start (`since`, from which Tenantry's past-due grace counts) moves only when
    the status changes, so an unrelated update does not restart the grace. An older
    event can still correct it: a different status seen after `since` means the stored
    one began later.
    """
    if stored is None:
        return repo.StripeStatus(report.status, report.at)
    latest = max(newest or stored.since, stored.since)
    changed_here = report.previous is not None and report.previous != report.status
    newer = report.at > latest or (
        report.at == latest
        and (report.terminal or (report.previous == stored.status and changed_here))
    )
    if newer:
        if report.status != stored.status or (changed_here and report.at > stored.since):
            return repo.StripeStatus(report.status, report.at)
        return None
    began_later = report.status != stored.status or changed_here
    if began_later and report.at > stored.since:
        return repo.StripeStatus(stored.status, report.at)
    return None


async def _subscription_row(
    ctx: Context, event: StripeEvent
) -> tuple[repo.StripeSubscription | None, str]:
    """Tenantry's subscription for a Stripe Subscription (locked), or why there is none;
    the Stripe Subscription's ids and schedule (start, billing cycle anchor) recorded on it.
    """
    obj = event.object
    stripe_id = object_id(obj.get("id"))
    uid = metadata(obj).get(SUBSCRIPTION_KEY)
    row = await repo.lock_subscription(ctx.conn, stripe_id=stripe_id, uid=uid)
    if row is None:
        return None, f"Stripe subscription {stripe_id} is not Tenantry's (no subscription of ours)"
    if row.subscription_id not in (None, stripe_id):
        return None, (
            f"Stripe subscription {stripe_id} names subscription {row.uid}, which is linked to "
            f"Stripe subscription {row.subscription_id}"
        )
    if row.subscription_id is None or row.customer_id is None:
        await repo.link_subscription(
            ctx.conn, row.uid, customer_id=object_id(obj.get("customer")), subscription_id=stripe_id
        )
    started, anchor = obj.get("start_date"), obj.get("billing_cycle_anchor")
    if isinstance(started, int) and isinstance(anchor, int):
        await repo.record_cycle(
            ctx.conn, row.uid, started_at=timestamp(started), anchor=timestamp(anchor),
            seen_at=event.created,
        )  # fmt: skip
    return row, ""


async def _apply_status(
    ctx: Context, event: StripeEvent, row: repo.StripeSubscription, terminal: bool
) -> str:
    previous = event.previous.get("status")
    report = StatusReport(
        status=str(event.object["status"]),
        at=event.created,
        previous=str(previous) if previous is not None else None,
        terminal=terminal,
    )
    newest = await repo.newest_status_event(ctx.conn, str(event.object["id"]), event.id)
    stored = repo.StripeStatus(row.status, row.status_at) if row.status and row.status_at else None
    update = next_status(stored, newest, report)
    if update is None:
        return f"kept status {row.status} of subscription {row.uid} (nothing newer in the event)"
    await repo.set_status(ctx.conn, row.uid, update)
    return f"set subscription {row.uid} to Stripe status {update.status} (since {update.since})"


async def subscription_changed(ctx: Context, event: StripeEvent) -> Outcome:
    """customer.subscription.created|updated|trial_will_end: Stripe's status, in order;
    and a plan change or cancellation made in Stripe, onto the Subscription's spec."""
    row, why = await _subscription_row(ctx, event)
    if row is None:
        return ignored(why)
    note = await _apply_status(ctx, event, row, terminal=False)
    if event.type == "customer.subscription.updated":
        note += await _follow_stripe(ctx, event, row.uid)
    return handled(note)


def stripe_plan(subscription: Mapping[str, Any]) -> str | None:
    """The Plan whose Price the Stripe Subscription is on (the operator names it in the
    Price's metadata, `tenantry_plan`); None for a Price that is not a Plan's."""
    items = (subscription.get("items") or {}).get("data") or []
    if len(items) != 1:
        return None
    price = items[0].get("price")
    return metadata(price).get("tenantry_plan") if isinstance(price, Mapping) else None


def spec_changes(event: StripeEvent) -> dict[str, Any]:
    """What a `customer.subscription.updated` changed in Stripe, as the Subscription's spec
    says it: its Plan (when the event moved the item to a Plan's Price) and cancellation
    at the period's end. Compared with nothing stored: Tenantry's terms follow the spec
    only after the operator's next pass, and the spec may say so already (the merge patch
    is then a no-op). Pure."""
    changes: dict[str, Any] = {}
    if "items" in event.previous:
        plan = stripe_plan(event.object)
        if plan:
            changes["planRef"] = {"name": plan}
    if "cancel_at_period_end" in event.previous:
        changes["cancelAtPeriodEnd"] = bool(event.object.get("cancel_at_period_end"))
    return changes


async def _follow_stripe(ctx: Context, event: StripeEvent, uid: str) -> str:
    """The spec follows a change made in Stripe, unless a newer event was handled first
    (its change, or the spec's since, is the newer truth)."""
    changes = spec_changes(event)
    place = await repo.subscription_place(ctx.conn, uid)
    if place is None or not changes:
        return ""
    newest = await repo.newest_status_event(ctx.conn, str(event.object["id"]), event.id)
    if newest is not None and newest > event.created:
        return "; a newer event was handled first, so the spec stays"
    try:
        found = await ctx.kube.patch_subscription_spec(place.namespace, place.name, changes)
    except ApiError as error:
        raise NotYet(f"the Subscription's spec could not be written: {error.message}") from error
    if not found:
        return f"; Subscription {place.namespace}/{place.name} is gone, its spec stays unchanged"
    return f"; Subscription {place.namespace}/{place.name} follows Stripe: {changes}"


async def subscription_deleted(ctx: Context, event: StripeEvent) -> Outcome:
    """customer.subscription.deleted: the status, and the terms end (if they have not)."""
    row, why = await _subscription_row(ctx, event)
    if row is None:
        return ignored(why)
    note = await _apply_status(ctx, event, row, terminal=True)
    obj = event.object
    moment = obj.get("ended_at") or obj.get("canceled_at")
    ended_at = timestamp(moment) if isinstance(moment, int) else event.created
    if await repo.end_subscription(ctx.conn, row.uid, ended_at, "stripe_canceled"):
        note += f"; ended it at {ended_at} (canceled in Stripe)"
    return handled(note)


# ------------------------------------------------------------------ invoices


async def tenantry_invoice(ctx: Context, event: StripeEvent) -> tuple[str | None, str]:
    """Tenantry's invoice a Stripe invoice stands for, or (None, why) when it is not ours.

    In order: the invoice already linked to it; the one its metadata names
    (`tenantry_invoice_id`); else, for an invoice Stripe made for a subscription (not
    by hand), the invoice of the Tenantry subscription it names whose boundary is the
    latest at or before the Stripe invoice's `period_end`, at most LINK_WINDOW before it.
    NotYet when there is none yet (a billing run drafts it), unless Stripe's invoice
    is for nothing (a trial's): then there is nothing to link.
    """
    invoice = event.object
    stripe_id = str(invoice["id"])
    linked = await repo.invoice_linked_to(ctx.conn, stripe_id)
    if linked is not None:
        return linked, ""
    named = metadata(invoice).get(INVOICE_KEY)
    if named and _is_uuid(named) and await repo.invoice_exists(ctx.conn, named):
        return named, ""
    stripe_subscription, uid = invoice_subscription(invoice)
    owner = await repo.find_subscription(ctx.conn, stripe_id=stripe_subscription, uid=uid)
    if owner is None:
        return None, f"Stripe invoice {stripe_id} is not Tenantry's (no subscription of ours)"
    if invoice.get("billing_reason") == "manual":
        return None, f"Stripe invoice {stripe_id} was made by hand and names no invoice of ours"
    if invoice.get("billing_reason") == "subscription_create" and not _charged(invoice):
        # Stripe charges nothing before its anchor (proration none): Tenantry's invoice
        # for that stretch is collected by a one-off (collection.py), not by this one.
        return None, f"Stripe invoice {stripe_id} opens the subscription and is for nothing"
    period_end = timestamp(invoice["period_end"])
    found = await repo.invoice_before(ctx.conn, owner, period_end, LINK_WINDOW)
    if found is not None:
        return found, ""
    if not _charged(invoice):
        return None, f"Stripe invoice {stripe_id} is for nothing, and Tenantry bills nothing then"
    raise NotYet(
        f"Subscription {owner} has no invoice in the day up to {period_end} (the period end "
        f"of Stripe invoice {stripe_id}) yet: a billing run drafts it"
    )


def _charged(invoice: Mapping[str, Any]) -> bool:
    return bool(invoice.get("total") or invoice.get("amount_paid"))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def _link(ctx: Context, event: StripeEvent, invoice_id: str) -> str:
    stripe_id = str(event.object["id"])
    number = event.object.get("number")
    other = await repo.link_invoice(ctx.conn, invoice_id, stripe_id, number)
    if other is not None:
        raise Refused(
            f"Tenantry invoice {invoice_id} is linked to Stripe invoice {other} already, so "
            f"Stripe invoice {stripe_id} cannot be: void one in Stripe, or settle it by hand"
        )
    return f"linked Stripe invoice {stripe_id} to invoice {invoice_id}"


async def on_invoice_created(ctx: Context, event: StripeEvent) -> None:
    """Hook for the lead: add Tenantry's metered, discount and tax lines to Stripe's draft.

    Called for `invoice.created` once Tenantry's invoice for it exists (the id:
    `await tenantry_invoice(ctx, event)`), before the link is written and before the
    event is marked handled, in the worker's transaction (`ctx.conn`, no row of
    `invoices` locked by it yet). It runs again whenever the event is retried, so
    each Stripe call (`ctx.client`) needs an idempotency key. Raise NotYet to retry
    later, Refused to fail the event.

    Stripe's draft is held (`auto_advance` off): Tenantry adds its lines and finalizes it
    when its own invoice is final, late usage included (api/stripe/collection.py).
    """
    if event.object.get("status") == "draft":
        await collection.hold_draft(ctx.client, str(event.object["id"]))


async def invoice_created(ctx: Context, event: StripeEvent) -> Outcome:
    invoice_id, why = await tenantry_invoice(ctx, event)
    if invoice_id is None:
        return ignored(why)
    await on_invoice_created(ctx, event)
    return handled(await _link(ctx, event, invoice_id))


async def invoice_linked(ctx: Context, event: StripeEvent) -> Outcome:
    """invoice.finalized: the link, with the number Stripe gave."""
    invoice_id, why = await tenantry_invoice(ctx, event)
    if invoice_id is None:
        return ignored(why)
    return handled(await _link(ctx, event, invoice_id))


async def invoice_payment_failed(ctx: Context, event: StripeEvent) -> Outcome:
    """The fact is stored (this event); the state follows Stripe's `past_due` status.
    Linked if it can be, never waited for."""
    try:
        invoice_id, why = await tenantry_invoice(ctx, event)
    except NotYet as missing:
        return handled(
            f"kept the failed payment of Stripe invoice {event.object['id']} ({missing})"
        )
    if invoice_id is None:
        return ignored(why)
    linked = await _link(ctx, event, invoice_id)
    invoice = await billing_repository.get_invoice(ctx.conn, invoice_id)
    if invoice is not None and invoice.status == InvoiceStatus.OPEN:
        # A late delivery after the invoice was paid tells the SaaS team nothing new.
        await ctx.billing.events.invoice(
            ctx.conn, outbound.INVOICE_PAYMENT_FAILED, invoice, ctx.billing.clock(), key=event.id
        )
    return handled(linked + "; its payment failed")


@dataclass(frozen=True)
class Payment:
    amount: int  # minor units; 0: nothing to record
    reference: str
    paid_at: dt.datetime
    note: str = ""


def payment_of(invoice: Invoice, stripe_invoice: Mapping[str, Any], at: dt.datetime) -> Payment:
    """What to record on Tenantry's invoice for a paid Stripe invoice (no I/O).

    The reference is the Stripe invoice's id: `invoice.paid` and
    `invoice.payment_succeeded` of one invoice are one payment. The amount is what
    Stripe collected, at most Tenantry's amount due.
    """
    reference = str(stripe_invoice["id"])
    paid = stripe_invoice.get("status_transitions") or {}
    paid_at = timestamp(paid["paid_at"]) if isinstance(paid.get("paid_at"), int) else at
    if any(p.reference == reference for p in invoice.payments):
        return Payment(0, reference, paid_at, "recorded already")
    collected = int(stripe_invoice.get("amount_paid") or 0)
    name = invoice.number or invoice.id
    currency = str(stripe_invoice.get("currency", "")).upper()
    if collected and currency != invoice.currency:
        raise Refused(
            f"Stripe collected {collected} {currency} for invoice {name}, which is in "
            f"{invoice.currency}: record the payment by hand"
        )
    if collected == 0:
        return Payment(0, reference, paid_at, "nothing collected")
    if invoice.status == InvoiceStatus.DRAFT:
        raise NotYet(f"invoice {name} is a draft: payments are recorded once it is finalized")
    if invoice.status != InvoiceStatus.OPEN:
        raise Refused(
            f"Stripe collected {collected} {currency} for invoice {name}, which is "
            f"{invoice.status.value} in Tenantry: refund it in Stripe, or correct the invoice"
        )
    amount = min(collected, invoice.amount_due)
    note = f", {collected - amount} more than was due" if collected > amount else ""
    return Payment(amount, reference, paid_at, note)


async def invoice_paid(ctx: Context, event: StripeEvent) -> Outcome:
    """invoice.paid|payment_succeeded: a payment on Tenantry's invoice (once), and the link."""
    invoice_id, why = await tenantry_invoice(ctx, event)
    if invoice_id is None:
        return ignored(why)
    invoice = await billing_repository.get_invoice(ctx.conn, invoice_id)
    if invoice is None:
        raise NotYet(f"invoice {invoice_id} is gone")
    payment = payment_of(invoice, event.object, event.created)
    if payment.amount:
        # Its own transaction, committed before this one writes the link: this one
        # holds no lock on the invoice that record_payment waits for.
        try:
            await ctx.billing.record_payment(
                invoice_id, payment.amount, PAYMENT_METHOD, payment.reference, payment.paid_at,
                by=audit.STRIPE,
            )  # fmt: skip
        except ApiError as error:
            if error.code != "payment_reference_taken":
                raise NotYet(f"invoice {invoice_id} changed meanwhile: {error.message}") from error
        outcome = f"recorded a payment of {payment.amount} {invoice.currency}{payment.note}"
    else:
        outcome = f"recorded no payment ({payment.note})"
    linked = await _link(ctx, event, invoice_id)
    return handled(f"{outcome} on invoice {invoice.number or invoice_id}; {linked}")


# ------------------------------------------------------------------ checkout, customers


async def checkout_completed(ctx: Context, event: StripeEvent) -> Outcome:
    """The customer and subscription a Checkout Session made, on the subscription it names;
    for a setup session, the payment method it saved becomes the customer's default."""
    session = event.object
    if session.get("mode") == "setup":
        return await _payment_method_saved(ctx, session)
    uid = metadata(session).get(SUBSCRIPTION_KEY) or session.get("client_reference_id")
    if not uid:
        return ignored(f"Checkout Session {session['id']} names no subscription of Tenantry's")
    row = await repo.lock_subscription(ctx.conn, stripe_id=None, uid=str(uid))
    if row is None:
        return ignored(f"Checkout Session {session['id']} names subscription {uid}, not ours")
    customer = object_id(session.get("customer"))
    subscription = object_id(session.get("subscription"))
    for mine, theirs, what in (
        (row.customer_id, customer, "customer"),
        (row.subscription_id, subscription, "subscription"),
    ):
        if mine and theirs and mine != theirs:
            raise Refused(
                f"Checkout Session {session['id']} made Stripe {what} {theirs} for subscription "
                f"{row.uid}, which has Stripe {what} {mine}: cancel one in Stripe"
            )
    await repo.link_subscription(
        ctx.conn, row.uid, customer_id=customer, subscription_id=subscription
    )
    note = f"linked customer {customer} to subscription {row.uid}"
    if subscription:
        # Its subscription's events may have come first, ignored as no one's: now they
        # are ours, and are processed again (in order, as any).
        again = await repo.requeue_ignored(ctx.conn, subscription, "customer.subscription.")
        note += f", and Stripe subscription {subscription} ({again} earlier events requeued)"
    return handled(note)


async def _payment_method_saved(ctx: Context, session: Mapping[str, Any]) -> Outcome:
    """Checkout in setup mode (api/stripe/sessions.py): the method it saved is what the
    customer's invoices are charged to from now on."""
    customer = object_id(session.get("customer"))
    setup_intent = object_id(session.get("setup_intent"))
    if not metadata(session).get(TENANT_KEY) or not customer or not setup_intent:
        return ignored(f"Checkout Session {session['id']} saved no payment method of Tenantry's")
    intent = await ctx.client.v1.setup_intents.retrieve_async(setup_intent)
    method = object_id(intent.payment_method)
    if method is None:
        return ignored(f"Checkout Session {session['id']} ended without a payment method")
    await ctx.client.v1.customers.update_async(
        customer,
        {"invoice_settings": {"default_payment_method": method}},
        {"idempotency_key": f"tenantry-default-method-{session['id']}"},
    )
    return handled(f"made payment method {method} the default of customer {customer}")


async def customer_created(ctx: Context, event: StripeEvent) -> Outcome:
    """The customer on the subscriptions its metadata names that have none yet."""
    customer = event.object
    tags = metadata(customer)
    linked = await repo.link_customer(
        ctx.conn,
        str(customer["id"]),
        subscription_uid=tags.get(SUBSCRIPTION_KEY),
        tenant_uid=tags.get(TENANT_KEY),
    )
    return handled(f"linked customer {customer['id']} to {linked} subscriptions")


async def stored_only(_: Context, event: StripeEvent) -> Outcome:
    """Kept as a fact: payments are recorded from the invoice events, which name the invoice."""
    return handled(f"kept {event.type} of {event.object.get('id')}")


HANDLERS: Mapping[str, Handler] = {
    "customer.subscription.created": subscription_changed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.trial_will_end": subscription_changed,
    "customer.subscription.deleted": subscription_deleted,
    "invoice.created": invoice_created,
    "invoice.finalized": invoice_linked,
    "invoice.paid": invoice_paid,
    "invoice.payment_succeeded": invoice_paid,
    "invoice.payment_failed": invoice_payment_failed,
    "checkout.session.completed": checkout_completed,
    "customer.created": customer_created,
    "payment_intent.succeeded": stored_only,
    "payment_intent.payment_failed": stored_only,
}


async def dispatch(ctx: Context, event: StripeEvent) -> Outcome:
    handler = HANDLERS.get(event.type)
    if handler is None:
        return ignored(f"no handler for {event.type}")
    return await handler(ctx, event)
