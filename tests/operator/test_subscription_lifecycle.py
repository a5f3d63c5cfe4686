"""A Subscription's life on the real control plane, as `kubectl` shows it: trials that
end at midnight, cancellation at the period's end, deletion, plan changes, coupons.

Time is moved with the suite's clock (the operator adds its offset to the system
time), so a trial of days ends within seconds.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from support import (
    API,
    DRIFT_INTERVAL,
    Clock,
    Kube,
    OperatorProcess,
    condition,
    dig,
    event_reasons,
    get_tenant,
    is_ready,
    license_claims,
    plan,
    ready_tenant,
    reason,
    subscription,
    tenant,
    unique_names,
    wait_for,
)

pytestmark = pytest.mark.cluster

TRIAL_DAYS = 3
Object = dict[str, Any]


@pytest.fixture(scope="module")
def plans(kube: Kube) -> Iterator[dict[str, str]]:
    """The module's Plans: one with a trial, a dearer one in the same currency, one in EUR."""
    suffix = uuid.uuid4().hex[:6]
    names = {"trial": f"trial-{suffix}", "dearer": f"dearer-{suffix}", "euro": f"euro-{suffix}"}
    kube.apply(
        plan(names["trial"], trialDays=TRIAL_DAYS),
        plan(names["dearer"], price={"amount": 19900, "currency": "USD", "interval": "month"}),
        plan(names["euro"], price={"amount": 8900, "currency": "EUR", "interval": "month"}),
    )
    yield names
    for name in names.values():
        kube.delete("plan", name)


@pytest.fixture
def names(kube: Kube) -> Iterator[dict[str, str]]:
    """Unique names and a control namespace, deleted with everything in it afterwards."""
    made = unique_names(kube)
    yield made
    # Deleted by name first: the namespace controller alone takes seconds to get to them.
    kube.kubectl("delete", "tenants,subscriptions", "--all", "-n", made["control"], "--wait=false")
    kube.delete("namespace", made["control"])
    wait_for(
        lambda: not kube.kubectl("get", "subscriptions", "-n", made["control"], "-o", "name"),
        "the test's Subscriptions to be finalized",
    )


# ------------------------------------------------------------------- helpers


def get_subscription(kube: Kube, names: dict[str, str], name: str | None = None) -> Object | None:
    return kube.get("subscription", name or names["tenant"], names["control"])


def subscription_in(
    kube: Kube, names: dict[str, str], state: str, name: str | None = None
) -> Object:
    return wait_for(
        lambda: (
            (s := get_subscription(kube, names, name)) and dig(s, "status", "state") == state and s
        ),
        f"Subscription {name or names['tenant']} to be {state}",
    )


def subscription_where(
    kube: Kube, names: dict[str, str], check: Callable[[Object], Any], what: str
) -> Object:
    return wait_for(lambda: (s := get_subscription(kube, names)) and check(s) and s, what)


def tenant_where(
    kube: Kube, names: dict[str, str], check: Callable[[Object], Any], what: str
) -> Object:
    return wait_for(lambda: (t := get_tenant(kube, names)) and check(t) and t, what, timeout=60)


def patch_spec(kube: Kube, names: dict[str, str], spec: dict[str, Any]) -> None:
    kube.kubectl(
        "patch", "subscription", names["tenant"], "-n", names["control"],
        "--type=merge", "-p", json.dumps({"spec": spec}),
    )  # fmt: skip


def time_of(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def period_of(obj: Object) -> tuple[dt.datetime, dt.datetime]:
    period = obj["status"]["currentPeriod"]
    return time_of(period["start"]), time_of(period["end"])


def start_of_day(moment: dt.datetime) -> dt.datetime:
    """00:00 UTC of the day of `moment`."""
    utc = moment.astimezone(dt.UTC)
    return dt.datetime(utc.year, utc.month, utc.day, tzinfo=dt.UTC)


def a_month_after(moment: dt.datetime) -> dt.datetime:
    """The same day of the next month, or that month's last day when it is shorter."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def licensed_for(kube: Kube, names: dict[str, str], period_end: int) -> Object:
    """The claims of the license the Ready Tenant holds, once it is the one for the
    period ending at `period_end` (epoch seconds)."""
    return wait_for(
        lambda: (
            is_ready(t := get_tenant(kube, names))
            and (claims := license_claims(kube, names["target"]))
            and claims["jti"] == dig(t, "status", "license", "id")
            and claims["subscription"].get("currentPeriodEnd") == period_end
            and claims
        ),
        f"Tenant {names['tenant']} to hold the license of the period ending {period_end}",
        timeout=60,
    )


def assert_suspended_and_unlicensed(kube: Kube, names: dict[str, str]) -> None:
    suspended = tenant_where(
        kube,
        names,
        lambda t: (
            reason(t, "Ready") == "Suspended"
            and dig(condition(t, "LicenseIssued"), "status") == "False"
        ),
        "the Tenant to be suspended and its license revoked",
    )
    assert reason(suspended, "ReleaseDeployed") == "Suspended"
    assert reason(suspended, "LicenseIssued") == "Revoked"
    assert license_claims(kube, names["target"]) is None, "the revoked token left the Secret"
    deployment = kube.get("deployment", "instance-customer-instance", names["target"])
    assert dig(deployment, "spec", "replicas") == 0


# --------------------------------------------------------------------- tests


def test_a_trial_ends_at_midnight_and_the_subscription_turns_active(
    kube: Kube,
    operator: OperatorProcess,
    clock: Clock,
    names: dict[str, str],
    plans: dict[str, str],
) -> None:
    kube.apply(
        subscription(names["tenant"], names["control"], names["tenant"], plans["trial"]),
        tenant(names["tenant"], names["control"]),
    )
    trialing = subscription_in(kube, names, "trialing")
    created = time_of(trialing["metadata"]["creationTimestamp"])
    trial_end = time_of(trialing["status"]["trialEnd"])
    # At least the trial's days, up to the next 00:00 UTC: periods are whole days.
    assert trial_end == start_of_day(trial_end), trial_end
    days = dt.timedelta(days=TRIAL_DAYS)
    assert created + days <= trial_end < created + days + dt.timedelta(days=1)
    assert period_of(trialing) == (start_of_day(created), trial_end)
    first = licensed_for(kube, names, int(trial_end.timestamp()))
    assert first["subscription"]["status"] == "trialing"
    assert first["trial"] == {"isTrialMode": True, "endsAt": int(trial_end.timestamp())}

    clock.move_past(trial_end)
    active = subscription_in(kube, names, "active")
    start, end = period_of(active)
    assert (start, end) == (trial_end, a_month_after(trial_end))
    assert "SubscriptionActive" in event_reasons(
        kube, names["control"], "Subscription", names["tenant"]
    )
    # The license carries the subscription's state: a new one says active.
    claims = licensed_for(kube, names, int(end.timestamp()))
    assert claims["jti"] != first["jti"]
    assert claims["subscription"]["status"] == "active"
    assert claims["trial"]["isTrialMode"] is False


def test_cancel_at_period_end_ends_the_subscription_and_suspends_the_tenant(
    kube: Kube,
    operator: OperatorProcess,
    clock: Clock,
    names: dict[str, str],
    plans: dict[str, str],
) -> None:
    kube.apply(
        subscription(names["tenant"], names["control"], names["tenant"], plans["trial"],
                     trialDays=0),
        tenant(names["tenant"], names["control"]),
    )  # fmt: skip
    ready_tenant(kube, names)
    subscription_in(kube, names, "active")

    patch_spec(kube, names, {"cancelAtPeriodEnd": True})
    pending = subscription_where(
        kube, names, lambda s: dig(s, "status", "cancelAt"), "status.cancelAt to be set"
    )
    cancel_at = time_of(pending["status"]["cancelAt"])
    assert cancel_at == period_of(pending)[1]
    assert pending["status"]["state"] == "active", "it runs until the period ends"

    clock.move_past(cancel_at)
    canceled = subscription_in(kube, names, "canceled")
    assert time_of(canceled["status"]["endedAt"]) == cancel_at
    assert "currentPeriod" not in canceled["status"]
    assert "SubscriptionCanceled" in event_reasons(
        kube, names["control"], "Subscription", names["tenant"]
    )
    assert_suspended_and_unlicensed(kube, names)


def test_deleting_a_subscription_ends_it_and_suspends_the_tenant(
    kube: Kube,
    operator: OperatorProcess,
    database: str,
    names: dict[str, str],
    plans: dict[str, str],
) -> None:
    kube.apply(
        subscription(names["tenant"], names["control"], names["tenant"], plans["trial"],
                     trialDays=0),
        tenant(names["tenant"], names["control"]),
    )  # fmt: skip
    ready_tenant(kube, names)
    uid = subscription_in(kube, names, "active")["metadata"]["uid"]

    kube.delete("subscription", names["tenant"], names["control"])
    wait_for(lambda: get_subscription(kube, names) is None, "the Subscription to be gone")
    assert_suspended_and_unlicensed(kube, names)
    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT ended_at, end_reason FROM subscriptions WHERE uid = %s", (uid,)
        ).fetchone()
    assert row is not None, "billing keeps the terms of a deleted Subscription"
    ended_at, end_reason = row
    assert end_reason == "deleted"
    assert ended_at is not None


def test_a_plan_change_applies_within_a_currency_and_is_refused_across(
    kube: Kube,
    operator: OperatorProcess,
    database: str,
    names: dict[str, str],
    plans: dict[str, str],
) -> None:
    kube.apply(
        subscription(names["tenant"], names["control"], names["tenant"], plans["trial"],
                     trialDays=0),
        tenant(names["tenant"], names["control"]),
    )  # fmt: skip
    uid = subscription_in(kube, names, "active")["metadata"]["uid"]
    ready_tenant(kube, names)

    patch_spec(kube, names, {"planRef": {"name": plans["dearer"]}})
    changed = subscription_where(
        kube,
        names,
        lambda s: dig(s, "status", "plan") == plans["dearer"],
        f"status.plan to be {plans['dearer']}",
    )
    assert dig(condition(changed, "TermsApplied"), "status") == "True"
    assert "PlanChanged" in event_reasons(kube, names["control"], "Subscription", names["tenant"])
    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT from_plan_name, to_plan_name FROM subscription_plan_changes"
            " WHERE subscription_uid = %s",
            (uid,),
        ).fetchall()
    assert rows == [(plans["trial"], plans["dearer"])]
    tenant_where(
        kube,
        names,
        lambda t: dig(t, "status", "license", "plan") == plans["dearer"],
        "the Tenant's license to grant the new plan",
    )

    patch_spec(kube, names, {"planRef": {"name": plans["euro"]}})
    refused = subscription_where(
        kube,
        names,
        lambda s: reason(s, "TermsApplied") == "ChangeRefused",
        "TermsApplied=False with reason ChangeRefused",
    )
    terms = condition(refused, "TermsApplied")
    assert terms is not None
    assert terms["status"] == "False"
    assert "currency" in terms["message"]
    assert refused["status"]["plan"] == plans["dearer"]
    # The Tenant follows the plan in force, not the refused one.
    time.sleep(2 * DRIFT_INTERVAL)
    kept = get_tenant(kube, names)
    assert dig(kept, "status", "plan") == plans["dearer"]
    assert dig(license_claims(kube, names["target"]), "plan", "code") == plans["dearer"]


def test_a_missing_coupon_then_one_redeemed_its_maximum_times(
    kube: Kube,
    operator: OperatorProcess,
    names: dict[str, str],
    plans: dict[str, str],
) -> None:
    coupon = f"launch-{names['tenant']}"
    second = f"{names['tenant']}-2"
    kube.apply(
        subscription(names["tenant"], names["control"], names["tenant"], plans["trial"],
                     trialDays=0, coupon=coupon),
        tenant(names["tenant"], names["control"], paused=True),
    )  # fmt: skip
    try:
        missing = subscription_where(
            kube,
            names,
            lambda s: reason(s, "Ready") == "CouponNotFound",
            "Ready=False with reason CouponNotFound",
        )
        assert dig(condition(missing, "Ready"), "status") == "False"
        assert coupon in dig(condition(missing, "Ready"), "message")

        kube.apply(
            {
                "apiVersion": API,
                "kind": "Coupon",
                "metadata": {"name": coupon},
                "spec": {
                    "percentOff": "20",
                    "duration": "repeating",
                    "durationPeriods": 3,
                    "maxRedemptions": 1,
                },
            }
        )
        subscription_where(
            kube,
            names,
            lambda s: reason(s, "TermsApplied") == "Applied" and reason(s, "Ready") == "Active",
            "the Coupon to be redeemed",
        )
        wait_for(
            lambda: dig(kube.get("coupon", coupon), "status", "redemptions") == 1,
            "the Coupon to count its redemption",
        )

        kube.apply(
            subscription(second, names["control"], second, plans["trial"], trialDays=0,
                         coupon=coupon),
            tenant(second, names["control"], paused=True),
        )  # fmt: skip
        refused = wait_for(
            lambda: (
                (s := get_subscription(kube, names, second))
                and reason(s, "TermsApplied") == "ChangeRefused"
                and s
            ),
            "the second redemption to be refused",
        )
        terms = condition(refused, "TermsApplied")
        assert terms is not None
        assert terms["status"] == "False"
        assert "maximum" in terms["message"]
    finally:
        kube.delete("coupon", coupon)


def test_kubectl_get_shows_state_period_end_and_amount_due(
    kube: Kube,
    operator: OperatorProcess,
    names: dict[str, str],
    plans: dict[str, str],
) -> None:
    kube.apply(
        subscription(names["tenant"], names["control"], names["tenant"], plans["trial"]),
        tenant(names["tenant"], names["control"], paused=True),
    )
    trialing = subscription_in(kube, names, "trialing")

    table = kube.kubectl("get", "subscriptions", "-n", names["control"]).splitlines()
    assert table[0].split() == [
        "NAME", "TENANT", "PLAN", "STATE", "PERIOD-END", "AMOUNT-DUE", "AGE",
    ]  # fmt: skip
    row = table[1].split()
    assert row[:4] == [names["tenant"], names["tenant"], plans["trial"], "trialing"]
    assert time_of(row[4]) == period_of(trialing)[1]
    assert row[5] == "0"
    assert names["tenant"] in kube.kubectl("get", "sub", "-n", names["control"])  # short name
