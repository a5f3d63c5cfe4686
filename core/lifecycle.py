"""A subscription's life as pure functions: its terms, its state at a moment,
and the invoices its boundaries call for.

Invoices follow Stripe's shape. At every boundary a subscription crosses it is
invoiced once: the base fee of the period that starts (in advance; none in a
trial, none after the end), the metered usage of the period that ended (in
arrears), the prorations of plan changes since the previous boundary, and
late usage of periods already invoiced. The boundaries are the first paid
period's start (the day it was created, or the trial's end), every period
boundary after it, and the moment it ended.

States: `trialing` until the trial ends; `canceled` from the end on; else
`unpaid` once an invoice is unpaid past its due date plus the Plan's grace
days, `past_due` once past its due date, and `active` otherwise.

The operator computes the terms and the state; billing runs compute the
invoices; both call these functions, with the time passed in. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from tenantry.core import pricing
from tenantry.core.invoices import Discount, Line, LineKind, Party, TaxRate, prorated
from tenantry.core.money import EXACT, plain, to_decimal
from tenantry.core.periods import BillingCycle, Period
from tenantry.core.resources import (
    CouponDuration,
    CouponSpec,
    PlanSpec,
    SubscriptionState,
    TrialUsage,
)

_DAY = dt.timedelta(days=1)
_JUST_BEFORE = dt.timedelta(microseconds=1)


def day_of(moment: dt.datetime) -> dt.datetime:
    utc = moment.astimezone(dt.UTC)
    return dt.datetime(utc.year, utc.month, utc.day, tzinfo=dt.UTC)


def trial_end(started_at: dt.datetime, days: int) -> dt.datetime | None:
    """When a trial of `days` days begun at `started_at` ends: at least `days` full days,
    up to the next 00:00 UTC, so billing periods stay whole days."""
    if days <= 0:
        return None
    end = started_at.astimezone(dt.UTC) + dt.timedelta(days=days)
    return end if end == day_of(end) else day_of(end) + _DAY


@dataclass(frozen=True)
class PlanChange:
    changed_at: dt.datetime
    from_plan_name: str
    from_plan: PlanSpec
    to_plan_name: str
    to_plan: PlanSpec


@dataclass(frozen=True)
class CouponTerms:
    name: str
    spec: CouponSpec
    redeemed_at: dt.datetime

    def discount(self) -> Discount:
        return Discount(
            name=self.spec.display_name or self.name,
            percent_off=to_decimal(self.spec.percent_off) if self.spec.percent_off else None,
            amount_off=self.spec.amount_off,
        )


@dataclass(frozen=True)
class Terms:
    """What billing needs to know of one Subscription, as the operator stored it."""

    uid: str
    namespace: str
    name: str
    tenant_uid: str
    tenant_name: str
    plan_name: str
    plan: PlanSpec
    started_at: dt.datetime
    anchor_day: int
    trial_end: dt.datetime | None = None
    cancel_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    end_reason: str | None = None
    coupon: CouponTerms | None = None
    tax_rates: tuple[TaxRate, ...] = ()
    buyer: Party = field(default_factory=lambda: Party(name=""))
    plan_changes: tuple[PlanChange, ...] = ()  # oldest first

    @property
    def currency(self) -> str:
        return self.plan.price.currency

    @property
    def cycle(self) -> BillingCycle:
        """Paid periods from the trial's end (or the start), on the anchor day."""
        return BillingCycle(
            start=self.trial_end or self.started_at,
            interval=self.plan.price.interval,
            anchor_day=self.anchor_day,
            trial_start=self.started_at if self.trial_end else None,
        )

    def plan_at(self, moment: dt.datetime) -> tuple[str, PlanSpec]:
        """The plan in force at `moment` (a change at exactly `moment` counts)."""
        for change in reversed(self.plan_changes):
            if change.changed_at <= moment:
                return change.to_plan_name, change.to_plan
        if self.plan_changes:
            first = self.plan_changes[0]
            return first.from_plan_name, first.from_plan
        return self.plan_name, self.plan


def default_anchor_day(
    requested: int | None, started_at: dt.datetime, trial_ends: dt.datetime | None
) -> int:
    """The day paid periods start on: the one asked for, else the first paid day's."""
    return requested or (trial_ends or started_at).astimezone(dt.UTC).day


# ------------------------------------------------------------------ state


@dataclass(frozen=True)
class BillingFacts:
    """What the invoices, or Stripe, say about a subscription, for its state."""

    overdue_since: dt.datetime | None = None  # due date of the oldest unpaid open invoice
    amount_due: int = 0
    # When Stripe collects: its subscription's status, and since when it holds.
    stripe_status: str | None = None
    stripe_status_at: dt.datetime | None = None


# Stripe's subscription statuses, as payment states. Stripe retries a failed payment
# (`past_due`); Tenantry's grace then applies as without Stripe.
_STRIPE_OVERDUE = frozenset({"past_due", "incomplete"})
_STRIPE_UNPAID = frozenset({"unpaid", "paused"})


def state_at(terms: Terms, facts: BillingFacts, now: dt.datetime) -> SubscriptionState:
    if terms.ended_at is not None and now >= terms.ended_at:
        return SubscriptionState.CANCELED
    if terms.trial_end is not None and now < terms.trial_end:
        return SubscriptionState.TRIALING
    grace = dt.timedelta(days=terms.plan.past_due_grace_days)
    if facts.stripe_status is not None:
        # Stripe collects: its word on payment replaces the due dates of the invoices.
        if facts.stripe_status in _STRIPE_UNPAID:
            return SubscriptionState.UNPAID
        if facts.stripe_status in _STRIPE_OVERDUE:
            since = facts.stripe_status_at or now
            late = now >= since + grace
            return SubscriptionState.UNPAID if late else SubscriptionState.PAST_DUE
        return SubscriptionState.ACTIVE
    if facts.overdue_since is not None and now >= facts.overdue_since:
        if now >= facts.overdue_since + grace:
            return SubscriptionState.UNPAID
        return SubscriptionState.PAST_DUE
    return SubscriptionState.ACTIVE


def current_period(terms: Terms, now: dt.datetime) -> Period | None:
    """The period `now` falls in, or None once the subscription has ended."""
    if terms.ended_at is not None and now >= terms.ended_at:
        return None
    return terms.cycle.period_at(max(now, terms.started_at))


def cancel_at(terms: Terms, now: dt.datetime) -> dt.datetime:
    """With cancelAtPeriodEnd set now: the end of the current period (or of the trial)."""
    return terms.cycle.period_at(max(now, terms.started_at)).end


# ------------------------------------------------------------- boundaries


@dataclass(frozen=True)
class Boundary:
    """One invoice a subscription calls for."""

    at: dt.datetime
    previous: dt.datetime | None  # the boundary before: plan changes in [previous, at) prorate
    base_period: Period | None  # billed in advance
    usage_period: Period | None  # billed in arrears
    usage_charged: bool  # False for a waived trial's usage
    final: bool


def boundaries(terms: Terms, until: dt.datetime) -> list[Boundary]:
    """Every boundary at or before `until`, oldest first."""
    cycle = terms.cycle
    # A reached `cancel_at` is the end even before a reconcile records `ended_at`, so a
    # billing run that comes first bills no base fee past it.
    end = min((t for t in (terms.ended_at, terms.cancel_at) if t is not None), default=None)
    trial = cycle.trial
    waived = terms.plan.trial_usage == TrialUsage.WAIVED
    found: list[Boundary] = []
    if trial is not None and end is not None and end < trial.end:
        # Canceled within the trial: one final invoice, for the trial's usage.
        if end <= until:
            found.append(Boundary(end, None, None, trial, not waived, final=True))
        return found
    at: dt.datetime = cycle.first_day
    previous: dt.datetime | None = None
    usage: Period | None = trial
    charged = not waived
    while at <= until and (end is None or at <= end):
        final = end is not None and at == end
        base = None if final else cycle.period_at(at)
        found.append(Boundary(at, previous, base, usage, charged, final))
        if base is None:
            return found
        previous, usage, charged, at = at, base, True, base.end
    if end is not None and end <= until and (not found or found[-1].at < end):
        found.append(Boundary(end, previous, None, usage, charged, final=True))
    return found


# ------------------------------------------------------------------ lines


@dataclass(frozen=True)
class LateUsage:
    """A metric of a period already invoiced whose figure has changed since."""

    period: Period
    metric: str
    billed_quantity: Decimal
    billed_unrounded: Decimal
    billed_amount: int
    quantity: Decimal  # the figure now


def metered_lines(plan: PlanSpec, period: Period, usage: Mapping[str, int | Decimal]) -> list[Line]:
    lines = []
    for price in plan.metered_prices:
        charge = pricing.price_metered(price, usage.get(price.metric, 0))
        lines.append(
            Line(
                kind=LineKind.METERED,
                description=f"{_metric_label(plan, price.metric)} ({price.model.value})",
                period=period,
                unrounded=charge.unrounded,
                amount=charge.amount,
                metric=price.metric,
                quantity=charge.quantity,
                billable=charge.billable,
                unit_amount=charge.unit_amount,
                tiers=charge.tiers,
            )
        )
    return lines


def late_usage_line(plan: PlanSpec, late: LateUsage) -> Line | None:
    """The difference between the price of the corrected figure and what was billed."""
    price = next((p for p in plan.metered_prices if p.metric == late.metric), None)
    if price is None or late.quantity == late.billed_quantity:
        return None
    charge = pricing.price_metered(price, late.quantity)
    # Under `EXACT`: the default context keeps 28 digits and would round these.
    delta = EXACT.subtract(late.quantity, late.billed_quantity)
    return Line(
        kind=LineKind.LATE_USAGE,
        description=f"Late usage for {late.period.label()}: {_metric_label(plan, late.metric)}, "
        f"{plain(late.billed_quantity)} → {plain(late.quantity)}",
        period=late.period,
        unrounded=EXACT.subtract(charge.unrounded, late.billed_unrounded),
        amount=charge.amount - late.billed_amount,
        metric=late.metric,
        quantity=delta,
        billable=charge.billable,
        unit_amount=charge.unit_amount,
        tiers=charge.tiers,
    )


def _metric_label(plan: PlanSpec, metric: str) -> str:
    described = next(
        (m.description for m in plan.metrics if m.name == metric and m.description), ""
    )
    return described or metric


def base_line(plan_name: str, plan: PlanSpec, period: Period) -> Line:
    amount = plan.price.amount
    return Line(
        kind=LineKind.BASE,
        description=f"{plan.display_name} ({plan_name}), {plan.price.interval.value}ly",
        period=period,
        unrounded=Decimal(amount),
        amount=amount,
        quantity=Decimal(1),
        unit_amount=Decimal(amount),
    )


def proration_lines(terms: Terms, change: PlanChange) -> list[Line]:
    """A credit for the unused part of the old base price and a charge for the rest of the
    period at the new one; nothing for a change in a trial or at a period's first moment."""
    period = terms.cycle.period_at(change.changed_at)
    if period == terms.cycle.trial or change.changed_at <= period.start:
        return []
    rest = Period(change.changed_at, period.end)
    credit_unrounded, credit = prorated(change.from_plan.price.amount, period, change.changed_at)
    charge_unrounded, charge = prorated(change.to_plan.price.amount, period, change.changed_at)
    return [
        Line(
            kind=LineKind.PRORATION,
            description=f"Unused time on {change.from_plan.display_name} ({change.from_plan_name})",
            period=rest,
            unrounded=credit_unrounded.copy_negate(),  # exact; unary minus rounds to 28 digits
            amount=-credit,
            quantity=Decimal(1),
            unit_amount=Decimal(change.from_plan.price.amount),
        ),
        Line(
            kind=LineKind.PRORATION,
            description=f"Remaining time on {change.to_plan.display_name} ({change.to_plan_name})",
            period=rest,
            unrounded=charge_unrounded,
            amount=charge,
            quantity=Decimal(1),
            unit_amount=Decimal(change.to_plan.price.amount),
        ),
    ]


def cancel_credit_line(terms: Terms, boundary: Boundary) -> Line | None:
    """The unused part of the base fee of a subscription that ended mid-period."""
    period = boundary.usage_period
    if period is None or period == terms.cycle.trial or boundary.at >= period.end:
        return None
    plan_name, plan = terms.plan_at(boundary.at)
    unrounded, amount = prorated(plan.price.amount, period, boundary.at)
    if amount == 0:
        return None
    return Line(
        kind=LineKind.CANCEL_CREDIT,
        description=f"Unused time on {plan.display_name} ({plan_name}) after cancellation",
        period=Period(boundary.at, period.end),
        unrounded=unrounded.copy_negate(),
        amount=-amount,
        quantity=Decimal(1),
        unit_amount=Decimal(plan.price.amount),
    )


@dataclass(frozen=True)
class InvoiceDraft:
    boundary: Boundary
    plan_name: str
    lines: tuple[Line, ...]
    period: Period

    @property
    def empty(self) -> bool:
        return not self.lines


def draft_invoice(
    terms: Terms,
    boundary: Boundary,
    usage: Mapping[str, int | Decimal],
    late: Sequence[LateUsage] = (),
    *,
    credit_unused_on_cancel: bool = False,
) -> InvoiceDraft:
    """The lines of the invoice at `boundary`, given the usage of its usage period
    (the metric's figure for the period) and what changed in periods already billed."""
    lines: list[Line] = []
    if boundary.base_period is not None:
        name, plan = terms.plan_at(boundary.at)
        lines.append(base_line(name, plan, boundary.base_period))
    for change in terms.plan_changes:
        in_window = boundary.previous is not None and (
            boundary.previous <= change.changed_at < boundary.at
        )
        if in_window and change.from_plan.price.currency == change.to_plan.price.currency:
            lines.extend(proration_lines(terms, change))
    # Metered usage is priced by the plan in force when its period ends.
    metered_name, metered_plan = terms.plan_at(boundary.at - _JUST_BEFORE)
    if boundary.usage_period is not None and boundary.usage_charged:
        lines.extend(metered_lines(metered_plan, boundary.usage_period, usage))
    for item in late:
        _, plan = terms.plan_at(item.period.end - _JUST_BEFORE)
        line = late_usage_line(plan, item)
        if line is not None:
            lines.append(line)
    if boundary.final and credit_unused_on_cancel:
        credit = cancel_credit_line(terms, boundary)
        if credit is not None:
            lines.append(credit)
    periods = [line.period for line in lines] or [
        boundary.base_period or boundary.usage_period or Period(boundary.at, boundary.at)
    ]
    covered = Period(min(p.start for p in periods), max(p.end for p in periods))
    plan_name = terms.plan_at(boundary.at)[0] if boundary.base_period else metered_name
    return InvoiceDraft(boundary, plan_name, tuple(lines), covered)


def discount_for(
    terms: Terms, boundary: Boundary, discounted_before: int, currency: str
) -> Discount | None:
    """The coupon's discount on the invoice at `boundary`, given how many earlier invoices
    of the subscription it has already discounted."""
    coupon = terms.coupon
    if coupon is None or boundary.at < day_of(coupon.redeemed_at):
        return None
    spec = coupon.spec
    if spec.amount_off is not None and spec.currency != currency:
        return None
    if spec.duration == CouponDuration.ONCE and discounted_before >= 1:
        return None
    if spec.duration == CouponDuration.REPEATING and discounted_before >= (
        spec.duration_periods or 0
    ):
        return None
    return coupon.discount()


def reverse_charged(buyer: Party, seller_country: str | None) -> bool:
    """B2B across borders: the buyer has a tax id and is in another country than the seller."""
    return bool(
        buyer.tax_id and buyer.country and seller_country and buyer.country != seller_country
    )


# ------------------------------------------------------------- next terms


@dataclass(frozen=True)
class CouponOffer:
    """The Coupon a Subscription names, and whether it may be redeemed now."""

    name: str
    spec: CouponSpec
    redemptions: int  # by other subscriptions


@dataclass(frozen=True)
class TermsUpdate:
    terms: Terms
    plan_change: PlanChange | None = None
    refusals: tuple[str, ...] = ()  # spec changes not applied, for a condition


def coupon_refusal(offer: CouponOffer, currency: str, now: dt.datetime) -> str | None:
    spec = offer.spec
    if spec.redeem_by is not None and now > spec.redeem_by:
        return f"Coupon {offer.name} could be redeemed until {spec.redeem_by:%Y-%m-%d}."
    if spec.max_redemptions is not None and offer.redemptions >= spec.max_redemptions:
        return f"Coupon {offer.name} has been redeemed its maximum {spec.max_redemptions} times."
    if spec.amount_off is not None and spec.currency != currency:
        return f"Coupon {offer.name} takes {spec.currency} off; the plan bills in {currency}."
    return None


def next_terms(
    prior: Terms | None,
    *,
    base: Terms,
    requested_trial_days: int | None,
    requested_anchor_day: int | None,
    cancel_at_period_end: bool,
    coupon: CouponOffer | None,
    now: dt.datetime,
) -> TermsUpdate:
    """The terms after one reconcile. `base` carries what the objects say now (names,
    plan, buyer, tax rates, `started_at` = the object's creation); `prior` what was stored.

    What has happened stays: the start, the anchor day, a trial that is over, an end.
    A plan change to another currency or interval is refused, and the plan kept.
    """
    refusals: list[str] = []
    if prior is not None and prior.ended_at is not None:
        return TermsUpdate(prior)  # an ended subscription changes no more
    started = prior.started_at if prior else base.started_at
    days = requested_trial_days if requested_trial_days is not None else base.plan.trial_days
    if prior is None or (prior.trial_end is not None and now < prior.trial_end):
        trial = trial_end(started, days)
        if prior is not None and (trial is None or trial <= now):
            # Shortened to before now, or to no trial at all: the running trial ends as set
            # (dropping it would bill the days already trialed as a paid period).
            trial = prior.trial_end
    else:
        trial = prior.trial_end
    anchor = prior.anchor_day if prior else default_anchor_day(requested_anchor_day, started, trial)
    if prior is not None and requested_anchor_day not in (None, prior.anchor_day):
        refusals.append(
            f"billingCycleAnchorDay stays {prior.anchor_day}: periods are fixed once a "
            "subscription has started."
        )

    plan_name, plan = base.plan_name, base.plan
    changes: tuple[PlanChange, ...] = ()
    change: PlanChange | None = None
    if prior is not None:
        changes = prior.plan_changes
        if prior.plan_name != base.plan_name:
            old = prior.plan.price
            new = base.plan.price
            if old.currency != new.currency or old.interval != new.interval:
                what = "currency" if old.currency != new.currency else "billing interval"
                refusals.append(
                    f"Plan {base.plan_name} bills in {new.currency} per {new.interval.value}, "
                    f"{prior.plan_name} in {old.currency} per {old.interval.value}: a change of "
                    f"{what} is refused; cancel this Subscription and create a new one."
                )
                plan_name, plan = prior.plan_name, prior.plan
            else:
                change = PlanChange(now, prior.plan_name, prior.plan, base.plan_name, base.plan)
                changes = (*changes, change)

    redeemed = prior.coupon if prior else None
    if coupon is None:
        redeemed = None
    elif redeemed is None or redeemed.name != coupon.name:
        refusal = coupon_refusal(coupon, plan.price.currency, now)
        if refusal:
            refusals.append(refusal)
            redeemed = None
        else:
            redeemed = CouponTerms(coupon.name, coupon.spec, now)

    terms = Terms(
        uid=base.uid,
        namespace=base.namespace,
        name=base.name,
        tenant_uid=base.tenant_uid,
        tenant_name=base.tenant_name,
        plan_name=plan_name,
        plan=plan,
        started_at=started,
        anchor_day=anchor,
        trial_end=trial,
        coupon=redeemed,
        tax_rates=base.tax_rates,
        buyer=base.buyer,
        plan_changes=changes,
    )
    ends = prior.cancel_at if prior is not None else None
    return TermsUpdate(with_cancellation(terms, ends, cancel_at_period_end, now), change,
                       tuple(refusals))  # fmt: skip


def with_cancellation(
    terms: Terms, scheduled: dt.datetime | None, cancel_at_period_end: bool, now: dt.datetime
) -> Terms:
    """The terms with cancelAtPeriodEnd applied: `scheduled` is the end recorded before."""
    ends = scheduled
    if ends is not None and now < ends and not cancel_at_period_end:
        ends = None  # unset before it was reached; once reached, the end has happened
    elif ends is None and cancel_at_period_end:
        ends = cancel_at(terms, now)
    terms = replace(terms, cancel_at=ends)
    if ends is not None and now >= ends:
        terms = replace(terms, ended_at=ends, end_reason="cancel_at_period_end")
    return terms


def ended_now(terms: Terms, now: dt.datetime, reason: str) -> Terms:
    """The terms of a subscription canceled at `now` (deleted): kept if it ended already,
    also at a `cancel_at` that passed before a reconcile could record it."""
    if terms.ended_at is not None:
        return terms
    if terms.cancel_at is not None and terms.cancel_at <= now:
        return replace(terms, ended_at=terms.cancel_at, end_reason="cancel_at_period_end")
    return replace(terms, ended_at=now, end_reason=reason)
