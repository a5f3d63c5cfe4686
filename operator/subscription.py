"""Handlers of the Subscription kind: its terms in PostgreSQL, its state in status.

Each pass reads the Subscription, its Tenant, Plan, Coupon and TaxRates,
computes the terms (`lifecycle.next_terms`), stores them for billing runs,
reads what the invoices say, and writes one status patch: the state, the
current period, the trial's end, the latest invoice and the amount due. A
timer repeats it, because time alone moves a subscription: trials end,
periods turn, invoices fall due. Every change of state is an Event, and the
Tenant follows (a Subscription's change nudges it). `Ready` is True once every
object it names exists and its state is known, with the state as its reason
(`core/readiness.py`); a missing one is `Ready=False` naming it.

Deleting a Subscription cancels it now: its terms get an end, the billing run
issues the final invoice, and the Tenant is suspended and its license revoked.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, cast

import kopf
from pydantic import ValidationError

from tenantry.core import lifecycle
from tenantry.core.conditions import condition
from tenantry.core.invoices import Party, TaxRate
from tenantry.core.lifecycle import CouponOffer, Terms
from tenantry.core.readiness import subscription_ready
from tenantry.core.resources import (
    GROUP,
    VERSION,
    BillingCycleSummary,
    CouponKind,
    CouponSpec,
    InvoiceSummary,
    Period,
    PlanSpec,
    SubscriptionKind,
    SubscriptionSpec,
    SubscriptionState,
    SubscriptionStatus,
    TaxRateKind,
    TaxRateSpec,
    TenantKind,
    TenantSpec,
)
from tenantry.db import subscriptions as repository
from tenantry.operator import errors, metrics, outbound, sharding
from tenantry.operator.context import Context
from tenantry.operator.errors import InvalidSpec, NotReady, spec_error
from tenantry.operator.reconcile import Logger, Reconcile, prior_status, reconciling
from tenantry.operator.stripe import subscriptions as stripe_subscriptions

TERMS_APPLIED = "TermsApplied"


def buyer_of(name: str, spec: TenantSpec) -> Party:
    billing = spec.billing
    address = billing.address
    city = " ".join(part for part in (address.postal_code, address.city) if part)
    lines = tuple(part for part in (address.line1, address.line2, city, address.state) if part)
    return Party(
        name=billing.legal_name or spec.display_name,
        address=lines,
        country=address.country,
        tax_id=billing.tax_id,
        email=spec.billing_email,
    )


def _one(index: Iterable[Mapping[str, Any]] | None) -> Mapping[str, Any] | None:
    for item in index or ():
        return item
    return None


def _parse(model: type[Any], raw: Mapping[str, Any], what: str, reason: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise InvalidSpec(
            f"{what} is invalid ({spec_error(error)}); fix it.", reason=reason
        ) from error


def base_terms(
    body: kopf.Body,
    spec: SubscriptionSpec,
    tenant: Mapping[str, Any] | None,
    plan: Mapping[str, Any] | None,
    tax_rates: Mapping[str, Mapping[str, Any] | None],
) -> Terms:
    """What the objects say now, or NotReady naming what is missing."""
    namespace = body.metadata.namespace or ""
    if tenant is None:
        raise NotReady(
            "TenantNotFound",
            f"Tenant {spec.tenant_ref.name} does not exist in namespace {namespace}: apply it, "
            "or point spec.tenantRef.name at an existing Tenant.",
        )
    if plan is None:
        raise NotReady(
            "PlanNotFound",
            f"Plan {spec.plan_ref.name} does not exist: apply it, or point spec.planRef.name at "
            "an existing Plan.",
        )
    rates = []
    for name in spec.tax_rates:
        raw = tax_rates.get(name)
        if raw is None:
            raise NotReady(
                "TaxRateNotFound",
                f"TaxRate {name} does not exist: apply it, or remove it from spec.taxRates.",
            )
        rate: TaxRateSpec = _parse(TaxRateSpec, raw, f"TaxRate {name}", "InvalidTaxRate")
        rates.append(TaxRate(rate.display_name, Decimal(rate.percentage), rate.inclusive))
    tenant_spec: TenantSpec = _parse(
        TenantSpec, tenant["spec"], f"Tenant {spec.tenant_ref.name}", "InvalidTenant"
    )
    plan_spec: PlanSpec = _parse(PlanSpec, plan, f"Plan {spec.plan_ref.name}", "InvalidPlan")
    created = body.metadata.get("creationTimestamp")
    return Terms(
        uid=body.metadata.uid or "",
        namespace=namespace,
        name=body.metadata.name or "",
        tenant_uid=tenant["uid"],
        tenant_name=spec.tenant_ref.name,
        plan_name=spec.plan_ref.name,
        plan=plan_spec,
        started_at=dt.datetime.fromisoformat(created) if created else dt.datetime.now(dt.UTC),
        anchor_day=1,
        tax_rates=tuple(rates),
        buyer=buyer_of(spec.tenant_ref.name, tenant_spec),
    )


async def reconcile(
    ctx: Context,
    body: kopf.Body,
    tenant: Mapping[str, Any] | None,
    plan: Mapping[str, Any] | None,
    coupon: Mapping[str, Any] | None,
    tax_rates: Mapping[str, Mapping[str, Any] | None],
    logger: Logger,
    stripe_refs: stripe_subscriptions.Refs | None = None,
) -> dict[str, Any]:
    prior = prior_status(body, SubscriptionStatus)
    async with reconciling(body, prior.conditions, logger, now=ctx.clock()) as r:
        await settle(ctx, r, prior, tenant, plan, coupon, tax_rates, logger, stripe_refs)
    return r.status()


async def settle(
    ctx: Context,
    r: Reconcile,
    prior: SubscriptionStatus,
    tenant: Mapping[str, Any] | None,
    plan: Mapping[str, Any] | None,
    coupon: Mapping[str, Any] | None,
    tax_rates: Mapping[str, Mapping[str, Any] | None],
    logger: Logger,
    stripe_refs: stripe_subscriptions.Refs | None = None,
) -> None:
    spec = r.spec(SubscriptionSpec)
    if ctx.database is None:
        raise NotReady(
            "DatabaseNotConfigured",
            "Billing needs PostgreSQL: set TENANTRY_OPERATOR_DATABASE_URL.",
        )
    base: Terms | None = None
    missing: NotReady | InvalidSpec | None = None
    try:
        base = base_terms(r.body, spec, tenant, plan, tax_rates)
        if spec.coupon and coupon is None:
            raise NotReady(
                "CouponNotFound",
                f"Coupon {spec.coupon} does not exist: apply it, or remove spec.coupon.",
            )
        coupon_spec: CouponSpec | None = (
            _parse(CouponSpec, coupon, f"Coupon {spec.coupon}", "InvalidCoupon") if coupon else None
        )
    except (NotReady, InvalidSpec) as problem:
        base, missing = None, problem
    async with errors.database(), ctx.database.begin() as conn:
        stored = await repository.load_terms(conn, r.body.metadata.uid or "")
        if base is None:
            # What it names is gone or broken: the stored terms still run (trials end,
            # periods turn, a cancellation takes effect), and Ready says what is wrong.
            assert missing is not None
            if stored is None:
                raise missing
            ended = lifecycle.with_cancellation(
                stored, stored.cancel_at, spec.cancel_at_period_end, r.now
            )
            update = lifecycle.TermsUpdate(ended)
        else:
            offer = None
            if spec.coupon and coupon_spec is not None:
                await repository.lock_coupon(conn, spec.coupon)
                taken = await repository.coupon_redemptions(conn, spec.coupon)
                mine = stored is not None and stored.coupon and stored.coupon.name == spec.coupon
                offer = CouponOffer(spec.coupon, coupon_spec, taken - (1 if mine else 0))
            update = lifecycle.next_terms(
                stored,
                base=base,
                requested_trial_days=spec.trial_days,
                requested_anchor_day=spec.billing_cycle_anchor_day,
                cancel_at_period_end=spec.cancel_at_period_end,
                coupon=offer,
                now=r.now,
            )
        if update.terms != stored:
            await repository.save_terms(conn, update.terms)
        if update.plan_change is not None:
            await repository.record_plan_change(conn, update.terms.uid, update.plan_change)
        facts = await repository.billing_facts(conn, update.terms.uid)

    terms = update.terms
    if update.plan_change is not None:
        change = update.plan_change
        message = (
            f"Changed plan from {change.from_plan_name} to {change.to_plan_name}; the rest of "
            "the period is prorated on the next invoice"
        )
        logger.info(message)
        kopf.info(r.body, reason="PlanChanged", message=message)
    if ctx.stripe is not None:
        if base is not None and stripe_refs is not None:
            await keep_stripe_in_step(ctx, r, prior, terms, stripe_refs, logger)
        r.set(stripeStatus=facts.facts.stripe_status)
    state = lifecycle.state_at(terms, facts.facts, r.now)
    period = lifecycle.current_period(terms, r.now)
    cycle = terms.cycle
    latest = facts.latest
    r.set(
        state=state.value,
        plan=terms.plan_name,
        startedAt=terms.started_at.isoformat(),
        currentPeriod=Period(start=period.start, end=period.end).to_wire() if period else None,
        trialEnd=terms.trial_end.isoformat() if terms.trial_end else None,
        cancelAt=terms.cancel_at.isoformat() if terms.cancel_at else None,
        endedAt=terms.ended_at.isoformat() if terms.ended_at else None,
        billingCycle=BillingCycleSummary(
            start=cycle.start,
            interval=cycle.interval,
            anchor_day=cycle.anchor_day,
            trial_start=cycle.trial_start,
        ).to_wire(),
        latestInvoice=None
        if latest is None
        else InvoiceSummary(
            id=latest.id,
            number=latest.number,
            status=latest.status,
            currency=latest.currency,
            total=latest.total,
            amount_due=latest.amount_due,
            due_at=latest.due_at,
        ).to_wire(),
        amountDue=facts.facts.amount_due,
    )
    if update.refusals:
        r.observe(condition(TERMS_APPLIED, False, "ChangeRefused", " ".join(update.refusals)))
    else:
        r.observe(condition(TERMS_APPLIED, True, "Applied", "The spec's terms are in force."))
    if prior.state != state:
        message = _transition_message(prior.state, state, terms, facts.facts.amount_due)
        logger.info(message)
        kopf.info(r.body, reason=f"Subscription{_camel(state.value)}", message=message)
        await outbound.subscription_changed(
            ctx, r.body, terms, prior.state, state, facts.facts.amount_due
        )
    if missing is not None:
        raise missing  # after the status above: Ready=False says what is missing
    r.observe(
        subscription_ready(
            state,
            amount_due=facts.facts.amount_due,
            currency=terms.currency,
            trial_end=terms.trial_end,
            ended_at=terms.ended_at,
        )
    )


async def keep_stripe_in_step(
    ctx: Context,
    r: Reconcile,
    prior: SubscriptionStatus,
    terms: Terms,
    refs: stripe_subscriptions.Refs,
    logger: Logger,
) -> None:
    """The Stripe Subscription in step with the terms; its ids on the row too, where the
    webhook worker looks them up. A Stripe problem shows in StripeSynced; the timer retries."""
    assert ctx.stripe is not None
    assert ctx.database is not None
    synced = await stripe_subscriptions.keep_in_step(
        ctx.stripe, r, terms, refs, prior.stripe_subscription_id, logger
    )
    if synced is not None:
        async with errors.database(), ctx.database.begin() as conn:
            await repository.record_stripe_ids(
                conn, terms.uid, synced.customer_id, synced.subscription_id
            )


def _camel(value: str) -> str:
    return "".join(part.capitalize() for part in value.split("_"))


def _transition_message(
    before: SubscriptionState | None, after: SubscriptionState, terms: Terms, due: int
) -> str:
    was = f" (was {before.value})" if before else ""
    if after == SubscriptionState.PAST_DUE:
        return f"Subscription is past_due{was}: {due} {terms.currency} minor units unpaid"
    if after == SubscriptionState.CANCELED:
        return f"Subscription is canceled{was}: ended {terms.ended_at:%Y-%m-%d %H:%M} UTC"
    return f"Subscription is {after.value}{was}"


async def finalize(ctx: Context, body: kopf.Body, logger: Logger) -> None:
    """A deleted Subscription ends now; the billing run issues its final invoice."""
    if ctx.database is None:
        return
    async with errors.database(), ctx.database.begin() as conn:
        stored = await repository.load_terms(conn, body.metadata.uid or "")
        if stored is None or stored.ended_at is not None:
            return
        ended = lifecycle.ended_now(stored, ctx.clock(), "deleted")
        await repository.save_terms(conn, ended)
        prior = prior_status(body, SubscriptionStatus)
        await outbound.subscription_changed(
            ctx, body, ended, prior.state, SubscriptionState.CANCELED, prior.amount_due or 0,
            conn=conn,
        )  # fmt: skip
    message = f"Canceled subscription {body.metadata.namespace}/{body.metadata.name}: deleted"
    logger.info(message)
    kopf.info(body, reason="SubscriptionCanceled", message=message)


def with_status(body: kopf.Body, written: Mapping[str, Any] | None) -> kopf.Body:
    """`body` as it stands after the status this process last wrote on it. A timer's body
    is taken before it waits for the object's lock, so a pass that held the lock may have
    written since: its conditions (their transition times) and state are the prior ones
    (this operator is the one writer of a Subscription's status)."""
    if written is None:
        return body
    raw = {**dict(body), "status": {**dict(body.status), **written}}
    return kopf.Body(cast(kopf.RawBody, raw))


def register(registry: kopf.OperatorRegistry, ctx_of: Any, interval: float) -> None:
    subscriptions = (GROUP, VERSION, SubscriptionKind.plural)
    written: dict[str | None, dict[str, Any]] = {}  # by uid: the status last computed

    @kopf.index(GROUP, VERSION, TenantKind.plural, id="tenants_by_name", when=sharding.tenants,
                registry=registry)  # fmt: skip
    async def tenants_by_name(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str | None, str], dict[str, Any]]:
        return {
            (namespace, name): {"uid": body.metadata.uid, "spec": copy.deepcopy(dict(body.spec))}
        }

    @kopf.index(GROUP, VERSION, CouponKind.plural, id="coupons_by_name", registry=registry)
    async def coupons_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: copy.deepcopy(dict(body.spec))}

    @kopf.index(GROUP, VERSION, TaxRateKind.plural, id="taxrates_by_name", registry=registry)
    async def taxrates_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: copy.deepcopy(dict(body.spec))}

    async def run(
        body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any, **kwargs: Any
    ) -> None:
        if body.metadata.get("deletionTimestamp"):
            return
        ctx = ctx_of(memo)
        spec = body.spec
        tenant_name = (spec.get("tenantRef") or {}).get("name", "")
        plan_name = (spec.get("planRef") or {}).get("name", "")
        coupon_name = spec.get("coupon")
        trigger = "timer" if "stopped" in kwargs else "change"
        with metrics.reconcile_pass("Subscription", trigger) as outcome:
            async with ctx.lock(("Subscription", body.metadata.namespace, body.metadata.name)):
                seen = with_status(body, written.get(body.metadata.uid))
                status = await reconcile(
                    ctx,
                    seen,
                    _one(kwargs["tenants_by_name"].get((body.metadata.namespace, tenant_name))),
                    _one(kwargs["plans_by_name"].get(plan_name)),
                    _one(kwargs["coupons_by_name"].get(coupon_name)) if coupon_name else None,
                    {
                        n: _one(kwargs["taxrates_by_name"].get(n))
                        for n in spec.get("taxRates") or ()
                    },
                    logger,
                    stripe_subscriptions.refs(kwargs, body.metadata.namespace, tenant_name)
                    if ctx.stripe is not None
                    else None,
                )
                written[body.metadata.uid] = {**dict(seen.status), **status}
            outcome.result = "ok"
        # A Subscription that time did not move costs the API server no write.
        if any(body.status.get(field) != value for field, value in status.items()):
            patch.status.update(status)

    @kopf.on.resume(*subscriptions, id="reconcile", when=sharding.tenant_parts,
                    registry=registry)  # fmt: skip
    @kopf.on.create(*subscriptions, id="reconcile", when=sharding.tenant_parts,
                    registry=registry)  # fmt: skip
    @kopf.on.update(*subscriptions, id="reconcile", field="spec", when=sharding.tenant_parts,
                    registry=registry)  # fmt: skip
    @errors.boundary
    async def reconcile_subscription(**kwargs: Any) -> None:
        await run(**kwargs)

    def spread(**_: Any) -> float:
        # Spread over one more interval, so that many Subscriptions do not tick together.
        return interval * (1 + random.random())  # noqa: S311 - spreading, not secrecy

    @kopf.timer(*subscriptions, id="clock", interval=interval, initial_delay=spread,
                when=sharding.tenant_parts, registry=registry)  # fmt: skip
    @errors.boundary
    async def tick(**kwargs: Any) -> None:
        await run(**kwargs)

    @kopf.on.delete(*subscriptions, id="cancel", when=sharding.tenant_parts, registry=registry)
    @errors.boundary
    async def cancel(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        ctx = ctx_of(memo)
        async with ctx.lock(("Subscription", body.metadata.namespace, body.metadata.name)):
            written.pop(body.metadata.uid, None)
            await finalize(ctx, body, logger)
            if ctx.stripe is not None:
                await stripe_subscriptions.cancel_now(ctx.stripe, body, logger)
        tenant = (body.spec.get("tenantRef") or {}).get("name")
        if tenant and body.metadata.namespace:
            await ctx.cluster.nudge_tenant(body.metadata.namespace, tenant, "Subscription deleted")
