"""Ready of Plans and Subscriptions, derived without a cluster."""

from __future__ import annotations

import datetime as dt

import pytest

from tenantry.core.conditions import condition
from tenantry.core.readiness import plan_ready, subscription_ready
from tenantry.core.resources import ConditionStatus, SubscriptionState

AT = dt.datetime(2031, 3, 10, 0, 0, tzinfo=dt.UTC)


def test_a_valid_plan_is_ready_at_once_with_stripe_off() -> None:
    ready = plan_ready(None, stripe_on=False)
    assert (ready.type, ready.status, ready.reason) == ("Ready", ConditionStatus.TRUE, "Valid")


def test_with_stripe_on_a_plan_is_ready_once_its_prices_are_synced() -> None:
    synced = condition("StripeSynced", True, "Synced", "Stripe Product prod_1, Price price_1.")
    ready = plan_ready(synced, stripe_on=True)
    assert (ready.status, ready.reason) == (ConditionStatus.TRUE, "Synced")
    assert "price_1" in ready.message

    down = condition("StripeSynced", False, "StripeUnavailable", "Stripe did not answer.")
    ready = plan_ready(down, stripe_on=True)
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "StripeUnavailable")
    assert ready.message == "Its prices are not in Stripe: Stripe did not answer."

    pending = plan_ready(None, stripe_on=True)
    assert (pending.status, pending.reason) == (ConditionStatus.UNKNOWN, "StripePending")


@pytest.mark.parametrize(
    ("state", "reason", "says"),
    [
        (SubscriptionState.TRIALING, "Trialing", "In trial until 2031-03-10 00:00 UTC."),
        (SubscriptionState.ACTIVE, "Active", "Subscription is active."),
        (SubscriptionState.PAST_DUE, "PastDue", "Payment is overdue (99.00 USD unpaid)"),
        (SubscriptionState.UNPAID, "Unpaid", "the instance is suspended until payment"),
        (SubscriptionState.CANCELED, "Canceled", "Ended at 2031-03-10 00:00 UTC"),
    ],
)
def test_a_subscription_in_any_known_state_is_ready_with_its_state_as_reason(
    state: SubscriptionState, reason: str, says: str
) -> None:
    ready = subscription_ready(state, amount_due=9900, currency="USD", trial_end=AT, ended_at=AT)
    assert (ready.type, ready.status, ready.reason) == ("Ready", ConditionStatus.TRUE, reason)
    assert says in ready.message
