"""Subscription -> Stripe Subscription on its Plan's base Price, in step with Tenantry's terms.

The Stripe Subscription is made once the Tenant has its Customer and the
Plan in force its Price, with one item (that Price) and:

- `billing_cycle_anchor`: Tenantry's next period boundary (the first paid
  period's end, or the end of the period now running), so that Stripe's
  periods are Tenantry's and each Stripe invoice falls on a boundary Tenantry
  invoices at, with the base fee of the period it starts;
- `trial_end`: Tenantry's trial end (while it is ahead);
- `proration_behavior="none"`, on creation and on every change: Stripe
  charges nothing for the stretch before the anchor and prorates no plan
  change; both are Tenantry's lines, which the API adds to Stripe's invoices;
- `cancel_at_period_end` as the spec says;
- metadata naming the Subscription (`tenantry_subscription_uid`) and its
  Tenant (`tenantry_tenant`, namespace/name).

A plan change, or a Plan whose price changed, moves the item to the Price
now in force. Deleting the Subscription cancels the Stripe Subscription now,
without a Stripe invoice: the final invoice is Tenantry's. Coupons and tax
rates are never attached (see the package's docstring).

Stripe anchors a cycle on the anchor's day of the month: an anchor day of 29
to 31 whose first boundary falls in a shorter month (February 28) makes
Stripe's later periods start on that shorter day, one to three days before
Tenantry's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import kopf
from pydantic import ValidationError

from tenantry.core.lifecycle import Terms
from tenantry.core.resources import StripePlanStatus
from tenantry.operator.errors import InvalidSpec, NotReady, StripeRefused
from tenantry.operator.reconcile import Logger, Reconcile
from tenantry.operator.stripe.client import Stripe, idempotency_key, missing
from tenantry.operator.stripe.plans import price_fingerprint
from tenantry.operator.stripe.sync import in_step, synced, syncing

if TYPE_CHECKING:
    from stripe import Subscription
    from stripe.params import SubscriptionCreateParams, SubscriptionUpdateParams

KIND = "Subscription"
ENDED = frozenset({"canceled", "incomplete_expired"})
"""Stripe Subscription statuses that never change again."""


@dataclass(frozen=True)
class Refs:
    """What a Subscription's Stripe step reads from other objects' statuses (kopf indexes)."""

    customer_id: str | None
    plans: Mapping[str, Iterable[Mapping[str, Any]]]  # Plan name -> its status.stripe

    def plan(self, name: str) -> StripePlanStatus | None:
        for raw in self.plans.get(name) or ():
            try:
                return StripePlanStatus.model_validate(raw)
            except ValidationError:
                return None
        return None


def refs(indexes: Mapping[str, Any], namespace: str | None, tenant: str) -> Refs:
    """From the handler's kwargs: the indexes `customers.register` and `plans.register` keep."""
    customer = next(
        iter(indexes["stripe_customers_by_tenant"].get((namespace, tenant)) or ()), None
    )
    return Refs(customer_id=customer, plans=indexes["stripe_plans_by_name"])


@dataclass(frozen=True)
class Desired:
    """The Stripe Subscription the terms call for. Pure."""

    customer_id: str
    price_id: str
    billing_cycle_anchor: dt.datetime
    trial_end: dt.datetime | None
    cancel_at_period_end: bool


def desired(terms: Terms, customer_id: str, price_id: str, now: dt.datetime) -> Desired:
    cycle = terms.cycle
    return Desired(
        customer_id=customer_id,
        price_id=price_id,
        billing_cycle_anchor=cycle.period_at(max(now, cycle.start)).end,
        trial_end=terms.trial_end,
        cancel_at_period_end=terms.cancel_at is not None,
    )


def _seconds(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def metadata(terms: Terms) -> dict[str, str]:
    return {
        "tenantry_subscription_uid": terms.uid,
        "tenantry_subscription": f"{terms.namespace}/{terms.name}",
        "tenantry_tenant": f"{terms.namespace}/{terms.tenant_name}",
    }


def create_params(want: Desired, terms: Terms, now: dt.datetime) -> SubscriptionCreateParams:
    params: dict[str, Any] = {
        "customer": want.customer_id,
        "items": [{"price": want.price_id}],
        "billing_cycle_anchor": _seconds(want.billing_cycle_anchor),
        "proration_behavior": "none",
        "cancel_at_period_end": want.cancel_at_period_end,
        "metadata": metadata(terms),
    }
    if want.trial_end is not None and want.trial_end > now:
        params["trial_end"] = _seconds(want.trial_end)
    return cast("SubscriptionCreateParams", params)


def update_params(
    want: Desired, current: Subscription, now: dt.datetime
) -> SubscriptionUpdateParams | None:
    """What to change on the Stripe Subscription `current`; None when nothing."""
    changes: dict[str, Any] = {}
    items = current["items"].data
    if not items or items[0].price.id != want.price_id:
        item = {"id": items[0].id, "price": want.price_id} if items else {"price": want.price_id}
        changes["items"] = [item]
    if bool(current.cancel_at_period_end) != want.cancel_at_period_end:
        changes["cancel_at_period_end"] = want.cancel_at_period_end
    if (
        want.trial_end is not None
        and want.trial_end > now
        and current.trial_end != _seconds(want.trial_end)
    ):
        changes["trial_end"] = _seconds(want.trial_end)
    if not changes:
        return None
    return cast("SubscriptionUpdateParams", {**changes, "proration_behavior": "none"})


def in_step_message(subscription_id: str, want: Desired) -> str:
    trial = f", trial until {want.trial_end:%Y-%m-%dT%H:%MZ}" if want.trial_end else ""
    ending = ", canceled at period end" if want.cancel_at_period_end else ""
    return (
        f"Stripe Subscription {subscription_id}: Customer {want.customer_id}, "
        f"Price {want.price_id}{trial}{ending}."
    )


@dataclass(frozen=True)
class Synced:
    """The Stripe Subscription brought in step by this pass (made, found or changed)."""

    subscription_id: str
    customer_id: str


async def keep_in_step(
    api: Stripe,
    r: Reconcile,
    terms: Terms,
    found: Refs,
    subscription_id: str | None,
    logger: Logger,
) -> Synced | None:
    """Make or change the Stripe Subscription unless it is in step (its id into status);
    what this pass brought in step, None if nothing. Ended terms change nothing: Stripe
    ends at the period's end by itself, and a deleted Subscription is canceled by
    `cancel_now`."""
    if terms.ended_at is not None:
        return None
    plan = found.plan(terms.plan_name)
    fingerprint = price_fingerprint(terms.plan.price)
    if plan is not None and found.customer_id is not None:
        want = desired(terms, found.customer_id, plan.price_id, r.now)
        if (
            subscription_id is not None
            and plan.price_fingerprint == fingerprint
            and in_step(r, in_step_message(subscription_id, want))
        ):
            return None
    async with syncing(r, logger):
        if found.customer_id is None:
            raise NotReady(
                "CustomerPending",
                f"Waiting for Tenant {terms.tenant_name} to have its Stripe Customer (see its "
                "StripeSynced condition).",
            )
        if plan is None or plan.price_fingerprint != fingerprint:
            raise NotReady(
                "PricePending",
                f"Waiting for Plan {terms.plan_name} to have its Stripe Price for {fingerprint} "
                "(see its StripeSynced condition).",
            )
        want = desired(terms, found.customer_id, plan.price_id, r.now)
        current, made = None, False
        if subscription_id is None:
            current = await _adopt(api, terms, want.customer_id)
            if current is None:
                subscription_id, made = await _create(api, r, terms, want, logger), True
            else:
                subscription_id = current.id
            r.set(stripeSubscriptionId=subscription_id)
        if not made:
            await _update(api, r, terms, want, subscription_id, current, logger)
        synced(r, in_step_message(subscription_id, want))
        return Synced(subscription_id, want.customer_id)
    return None  # not in step: StripeSynced says why


async def _adopt(api: Stripe, terms: Terms, customer_id: str) -> Subscription | None:
    """The Stripe Subscription an earlier pass made whose id never reached the status."""
    async with api.calling(f"list the Stripe Subscriptions of Customer {customer_id}"):
        found = await api.client.v1.subscriptions.list_async(
            {"customer": customer_id, "status": "all", "limit": 100}
        )
    for subscription in found.data:
        meta = subscription.metadata.to_dict() if subscription.metadata is not None else {}
        if meta.get("tenantry_subscription_uid") == terms.uid and subscription.status not in ENDED:
            return subscription
    return None


async def _create(api: Stripe, r: Reconcile, terms: Terms, want: Desired, logger: Logger) -> str:
    params = create_params(want, terms, r.now)
    key = idempotency_key(KIND, terms.uid, r.generation, "create-subscription", params)
    where = f"{terms.namespace}/{terms.name}"
    async with api.calling(f"create the Stripe Subscription of Subscription {where}"):
        made = await api.client.v1.subscriptions.create_async(params, api.options(key))
    message = f"Created Stripe Subscription {made.id} for Subscription {where}"
    logger.info(message)
    kopf.info(r.body, reason="StripeSubscriptionCreated", message=message)
    return made.id


async def _update(
    api: Stripe,
    r: Reconcile,
    terms: Terms,
    want: Desired,
    subscription_id: str,
    current: Subscription | None,
    logger: Logger,
) -> None:
    """Change what differs from `want` on the Stripe Subscription (read unless given)."""
    if current is None:
        async with api.calling(f"read Stripe Subscription {subscription_id}"):
            current = await api.client.v1.subscriptions.retrieve_async(subscription_id)
    if current.status in ENDED:
        raise InvalidSpec(
            f"Stripe Subscription {subscription_id} is {current.status}: it was ended in Stripe, "
            "which collects no more. Delete this Subscription and create a new one to bill "
            "through Stripe again.",
            reason="EndedInStripe",
        )
    changes = update_params(want, current, r.now)
    if changes is None:
        return
    key = idempotency_key(KIND, terms.uid, r.generation, "update-subscription", changes)
    async with api.calling(f"update Stripe Subscription {subscription_id}"):
        await api.client.v1.subscriptions.update_async(subscription_id, changes, api.options(key))
    what = ", ".join(sorted(k for k in changes if k != "proration_behavior"))
    message = f"Updated Stripe Subscription {subscription_id} ({what})"
    logger.info(message)
    kopf.info(r.body, reason="StripeSubscriptionUpdated", message=message)


async def cancel_now(api: Stripe, body: kopf.Body, logger: Logger) -> None:
    """A deleted Subscription's Stripe Subscription ends now, with no Stripe invoice and no
    proration: the final invoice is Tenantry's."""
    subscription_id = body.status.get("stripeSubscriptionId")
    if not subscription_id:
        return
    try:
        async with api.calling(f"cancel Stripe Subscription {subscription_id}"):
            await api.client.v1.subscriptions.cancel_async(
                subscription_id, {"invoice_now": False, "prorate": False}
            )
    except StripeRefused as refused:
        if not missing(refused):
            # Canceled already, or refused for good: the Subscription goes all the same.
            logger.warning(refused.message)
            kopf.warn(body, reason=refused.reason, message=refused.message)
        return
    message = (
        f"Canceled Stripe Subscription {subscription_id} of deleted Subscription "
        f"{body.metadata.namespace}/{body.metadata.name}"
    )
    logger.info(message)
    kopf.info(body, reason="StripeSubscriptionCanceled", message=message)
