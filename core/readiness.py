"""The Ready condition of Plans and Subscriptions, derived from what a pass learned. Pure.

Ready answers one question for every kind: does Tenantry hold this object as its
spec asks? It is not a verdict on the customer: a Subscription whose payment is
overdue is still Ready, and says so in its reason. What each kind's Ready means:

- Plan: its spec is valid (a refused spec is `Ready=False, InvalidSpec`, written by
  the pass that refused it) and, with Stripe on, its Product and Price are in
  Stripe (`StripeSynced=True`); until they are, Ready is False with Stripe's
  reason, so Subscriptions billed through Stripe never name a Price that is not
  there.
- Subscription: its Tenant, Plan, Coupon and TaxRates exist (a missing one is
  `Ready=False` naming it, e.g. `TenantNotFound`), its terms are stored, and its
  state is known. The reason is the state in CamelCase: `Trialing`, `Active`,
  `PastDue` (payment overdue; the instance still runs), `Unpaid` (past the grace
  period; the instance is suspended until payment) or `Canceled` (final; the
  instance is suspended, its data kept). Argo CD shows the last two as Suspended
  (manifests/argocd/).
"""

from __future__ import annotations

import datetime as dt

from tenantry.core.conditions import READY, Observed, condition
from tenantry.core.money import format_money
from tenantry.core.resources import SubscriptionState

SUSPENDED_STATES = frozenset({SubscriptionState.UNPAID, SubscriptionState.CANCELED})
"""States in which the Subscription's instance is scaled to zero."""


def plan_ready(stripe_synced: Observed | None, *, stripe_on: bool) -> Observed:
    """Ready of a Plan whose spec is valid, from the `StripeSynced` it holds now."""
    if not stripe_on:
        return condition(READY, True, "Valid", "Subscriptions may name it.")
    if stripe_synced is None:
        return condition(READY, None, "StripePending", "Its prices are not in Stripe yet.")
    if not stripe_synced.ok:
        return condition(
            READY,
            False,
            stripe_synced.reason,
            f"Its prices are not in Stripe: {stripe_synced.message}",
        )
    return condition(READY, True, "Synced", f"Subscriptions may name it; {stripe_synced.message}")


def subscription_ready(
    state: SubscriptionState,
    *,
    amount_due: int,
    currency: str,
    trial_end: dt.datetime | None,
    ended_at: dt.datetime | None,
) -> Observed:
    """Ready of a Subscription whose terms are stored and whose objects all exist."""
    reason = "".join(part.capitalize() for part in state.value.split("_"))
    if state == SubscriptionState.TRIALING and trial_end is not None:
        message = f"In trial until {trial_end:%Y-%m-%d %H:%M} UTC."
    elif state == SubscriptionState.PAST_DUE:
        message = (
            f"Payment is overdue ({format_money(amount_due, currency)} unpaid); the instance "
            "runs until the Plan's grace period ends."
        )
    elif state == SubscriptionState.UNPAID:
        message = (
            f"Unpaid past the grace period ({format_money(amount_due, currency)}): the "
            "instance is suspended until payment."
        )
    elif state == SubscriptionState.CANCELED:
        when = f" at {ended_at:%Y-%m-%d %H:%M} UTC" if ended_at else ""
        message = f"Ended{when}: the instance is suspended, its data kept."
    else:
        message = f"Subscription is {state.value}."
    return condition(READY, True, reason, message)
