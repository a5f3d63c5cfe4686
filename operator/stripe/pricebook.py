"""Coupon -> Stripe Coupon, TaxRate -> Stripe Tax Rate: for reports and the portal.

Neither is ever attached to a Stripe Subscription, Customer or invoice:
Tenantry computes discounts and taxes once, itself, and adds them as lines
(see the package's docstring). They exist in Stripe so that the dashboard,
exports and the customer portal name the same coupons and rates.

What Stripe lets change on them (a name, a display name, metadata) is
updated; what it does not (a Coupon's discount and duration, a rate's
percentage and inclusiveness) makes a new object, and the old one is
deleted (a Coupon) or archived (a Tax Rate, which invoices keep naming).
A Coupon's `durationPeriods` becomes Stripe's `duration_in_months`: the
same for monthly plans, which is all a Stripe Coupon can say.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import kopf

from tenantry.core.resources import CouponDuration, CouponSpec, TaxRateSpec
from tenantry.operator.errors import NotReady, StripeRefused, StripeUnavailable
from tenantry.operator.reconcile import Logger, Reconcile
from tenantry.operator.stripe.client import Stripe, idempotency_key, missing
from tenantry.operator.stripe.sync import in_step, synced, syncing

if TYPE_CHECKING:
    from stripe import Coupon, TaxRate
    from stripe.params import (
        CouponCreateParams,
        CouponUpdateParams,
        TaxRateCreateParams,
        TaxRateUpdateParams,
    )

_COUPON_TERMS = (
    "duration",
    "percent_off",
    "amount_off",
    "currency",
    "duration_in_months",
    "max_redemptions",
    "redeem_by",
)
_COUPON_NAME_MAX = 40  # Stripe's limits
_RATE_NAME_MAX = 50


def _number(decimal: str) -> float:
    # Stripe's API types these as numbers. A percentage has at most 9 significant
    # digits, so the float's shortest repr, which is what goes on the wire, is exact.
    return float(Decimal(decimal))


def _metadata(kind: str, uid: str, name: str) -> dict[str, str]:
    return {f"tenantry_{kind}_uid": uid, f"tenantry_{kind}": name}


# -------------------------------------------------------------------- Coupon


def coupon_terms(spec: CouponSpec) -> dict[str, Any]:
    """What a Stripe Coupon cannot change once made."""
    terms: dict[str, Any] = {"duration": spec.duration.value}
    if spec.percent_off is not None:
        terms["percent_off"] = _number(spec.percent_off)
    else:
        terms["amount_off"] = spec.amount_off
        terms["currency"] = (spec.currency or "").lower()
    if spec.duration == CouponDuration.REPEATING:
        terms["duration_in_months"] = spec.duration_periods
    if spec.max_redemptions is not None:
        terms["max_redemptions"] = spec.max_redemptions
    if spec.redeem_by is not None:
        terms["redeem_by"] = int(spec.redeem_by.timestamp())
    return terms


def terms_of(coupon: Coupon) -> dict[str, Any]:
    """The same terms, as a Stripe Coupon holds them."""
    held = coupon.to_dict()
    return {field: held[field] for field in _COUPON_TERMS if held.get(field) is not None}


def coupon_params(uid: str, name: str, spec: CouponSpec) -> CouponCreateParams:
    params = {
        **coupon_terms(spec),
        "name": (spec.display_name or name)[:_COUPON_NAME_MAX],
        "metadata": _metadata("coupon", uid, name),
    }
    return cast("CouponCreateParams", params)


async def keep_coupon_in_step(
    api: Stripe, r: Reconcile, spec: CouponSpec, stripe_id: str | None, logger: Logger
) -> StripeUnavailable | None:
    if stripe_id is not None and in_step(r, f"Stripe Coupon {stripe_id}."):
        return None
    meta = r.body.metadata
    uid, name = meta.uid or "", meta.name or ""
    params = coupon_params(uid, name, spec)
    async with syncing(r, logger) as step:
        current = None
        if stripe_id is not None:
            try:
                async with api.calling(f"read Stripe Coupon {stripe_id}"):
                    current = await api.client.v1.coupons.retrieve_async(stripe_id)
            except StripeRefused as refused:
                if not missing(refused):
                    raise  # deleted in Stripe: made again below
        if current is not None and terms_of(current) == coupon_terms(spec):
            update = cast(
                "CouponUpdateParams", {"name": params["name"], "metadata": params["metadata"]}
            )
            key = idempotency_key("Coupon", uid, r.generation, "update-coupon", update)
            async with api.calling(f"update Stripe Coupon {stripe_id}"):
                await api.client.v1.coupons.update_async(current.id, update, api.options(key))
        else:
            if spec.redeem_by is not None and spec.redeem_by <= r.now:
                raise NotReady(
                    "Expired",
                    f"Not made in Stripe: the Coupon was redeemable until {spec.redeem_by}, and "
                    "Stripe makes none that ended.",
                )
            key = idempotency_key("Coupon", uid, r.generation, "create-coupon", params)
            async with api.calling(f"create the Coupon of Coupon {name}"):
                made = await api.client.v1.coupons.create_async(params, api.options(key))
            message = f"Created Stripe Coupon {made.id} for Coupon {name}"
            logger.info(message)
            kopf.info(r.body, reason="StripeCouponCreated", message=message)
            if stripe_id is not None:
                await _delete_coupon(api, stripe_id)
            stripe_id = made.id
        r.set(stripeId=stripe_id)
        synced(r, f"Stripe Coupon {stripe_id}.")
    return step.retry


async def _delete_coupon(api: Stripe, coupon_id: str) -> None:
    """The coupon replaced; discounts it gave (none, from Tenantry) would stay."""
    try:
        async with api.calling(f"delete Stripe Coupon {coupon_id}"):
            await api.client.v1.coupons.delete_async(coupon_id)
    except StripeRefused as refused:
        if not missing(refused):
            raise


# ------------------------------------------------------------------- TaxRate


def tax_rate_params(uid: str, name: str, spec: TaxRateSpec) -> TaxRateCreateParams:
    params: dict[str, Any] = {
        "display_name": spec.display_name[:_RATE_NAME_MAX],
        "percentage": _number(spec.percentage),
        "inclusive": spec.inclusive,
        "metadata": _metadata("taxrate", uid, name),
    }
    if spec.description:
        params["description"] = spec.description
    if spec.country:
        params["country"] = spec.country
    return cast("TaxRateCreateParams", params)


def same_rate(rate: TaxRate, spec: TaxRateSpec) -> bool:
    return Decimal(str(rate.percentage)) == Decimal(spec.percentage) and rate.inclusive == (
        spec.inclusive
    )


async def keep_tax_rate_in_step(
    api: Stripe, r: Reconcile, spec: TaxRateSpec, stripe_id: str | None, logger: Logger
) -> StripeUnavailable | None:
    if stripe_id is not None and in_step(r, f"Stripe Tax Rate {stripe_id}."):
        return None
    meta = r.body.metadata
    uid, name = meta.uid or "", meta.name or ""
    params = tax_rate_params(uid, name, spec)
    async with syncing(r, logger) as step:
        current = None
        if stripe_id is not None:
            try:
                async with api.calling(f"read Stripe Tax Rate {stripe_id}"):
                    current = await api.client.v1.tax_rates.retrieve_async(stripe_id)
            except StripeRefused as refused:
                if not missing(refused):
                    raise  # gone from Stripe: made again below
        if current is not None and current.active and same_rate(current, spec):
            update = cast(
                "TaxRateUpdateParams",
                {k: v for k, v in params.items() if k not in ("percentage", "inclusive")},
            )
            key = idempotency_key("TaxRate", uid, r.generation, "update-tax-rate", update)
            async with api.calling(f"update Stripe Tax Rate {current.id}"):
                await api.client.v1.tax_rates.update_async(current.id, update, api.options(key))
        else:
            key = idempotency_key("TaxRate", uid, r.generation, "create-tax-rate", params)
            async with api.calling(f"create the Tax Rate of TaxRate {name}"):
                made = await api.client.v1.tax_rates.create_async(params, api.options(key))
            message = f"Created Stripe Tax Rate {made.id} for TaxRate {name}"
            logger.info(message)
            kopf.info(r.body, reason="StripeTaxRateCreated", message=message)
            if current is not None and current.active:
                await _archive_tax_rate(api, r, current.id)
            stripe_id = made.id
        r.set(stripeId=stripe_id)
        synced(r, f"Stripe Tax Rate {stripe_id}.")
    return step.retry


async def _archive_tax_rate(api: Stripe, r: Reconcile, rate_id: str) -> None:
    """The replaced rate applies to nothing new; invoices that name it keep it."""
    params: TaxRateUpdateParams = {"active": False}
    uid = r.body.metadata.uid or ""
    key = idempotency_key("TaxRate", uid, r.generation, f"archive-{rate_id}", params)
    async with api.calling(f"archive Stripe Tax Rate {rate_id}"):
        await api.client.v1.tax_rates.update_async(rate_id, params, api.options(key))
