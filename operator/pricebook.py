"""Handlers of the Coupon and TaxRate kinds: their specs checked, a Coupon's redemptions
counted, and with Stripe on their Stripe counterparts kept in step. Subscriptions read
both (see `subscription.py`); these only report."""

from __future__ import annotations

from typing import Any

import kopf

from tenantry.core.conditions import READY, condition
from tenantry.core.resources import (
    GROUP,
    VERSION,
    CouponKind,
    CouponSpec,
    CouponStatus,
    TaxRateKind,
    TaxRateSpec,
    TaxRateStatus,
)
from tenantry.db import subscriptions as repository
from tenantry.operator import errors, sharding
from tenantry.operator.context import Context
from tenantry.operator.errors import StripeUnavailable
from tenantry.operator.reconcile import Logger, prior_status, reconciling
from tenantry.operator.stripe import pricebook as stripe_pricebook


async def reconcile_coupon(
    ctx: Context, body: kopf.Body, logger: Logger
) -> tuple[dict[str, Any], StripeUnavailable | None]:
    """The Coupon's status and, when Stripe was unavailable, what to retry."""
    prior = prior_status(body, CouponStatus)
    retry = None
    async with reconciling(body, prior.conditions, logger, now=ctx.clock()) as r:
        spec = r.spec(CouponSpec)
        redemptions = None
        if ctx.database is not None:
            async with errors.database(), ctx.database.connect() as conn:
                redemptions = await repository.coupon_redemptions(conn, body.metadata.name or "")
            r.set(redemptions=redemptions)
        limit = spec.max_redemptions
        if redemptions is not None and limit is not None and redemptions >= limit:
            message = f"Redeemed {redemptions} of {limit} times."
            r.observe(condition(READY, False, "Exhausted", message))
        elif spec.redeem_by is not None and r.now > spec.redeem_by:
            r.observe(condition(READY, False, "Expired", f"Redeemable until {spec.redeem_by}."))
        else:
            r.observe(condition(READY, True, "Redeemable", "Subscriptions may name it."))
        if ctx.stripe is not None:
            retry = await stripe_pricebook.keep_coupon_in_step(
                ctx.stripe, r, spec, prior.stripe_id, logger
            )
    return r.status(), retry


async def reconcile_tax_rate(
    ctx: Context, body: kopf.Body, logger: Logger
) -> tuple[dict[str, Any], StripeUnavailable | None]:
    """The TaxRate's status and, when Stripe was unavailable, what to retry."""
    prior = prior_status(body, TaxRateStatus)
    retry = None
    async with reconciling(body, prior.conditions, logger, now=ctx.clock()) as r:
        spec = r.spec(TaxRateSpec)
        kind = "inclusive" if spec.inclusive else "exclusive"
        r.observe(condition(READY, True, "Valid", f"{spec.percentage}% {kind}."))
        if ctx.stripe is not None:
            retry = await stripe_pricebook.keep_tax_rate_in_step(
                ctx.stripe, r, spec, prior.stripe_id, logger
            )
    return r.status(), retry


def register(registry: kopf.OperatorRegistry, ctx_of: Any, interval: float) -> None:
    coupons = (GROUP, VERSION, CouponKind.plural)
    tax_rates = (GROUP, VERSION, TaxRateKind.plural)

    @kopf.on.resume(*coupons, id="report", when=sharding.cluster_wide, registry=registry)
    @kopf.on.create(*coupons, id="report", when=sharding.cluster_wide, registry=registry)
    @kopf.on.update(*coupons, id="report", field="spec", when=sharding.cluster_wide,
                    registry=registry)  # fmt: skip
    @kopf.timer(*coupons, id="count", interval=interval, initial_delay=interval,
                when=sharding.cluster_wide, registry=registry)  # fmt: skip
    @errors.boundary
    async def report_coupon(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any,
                            **_: Any) -> None:  # fmt: skip
        status, retry = await reconcile_coupon(ctx_of(memo), body, logger)
        patch.status.update(status)
        if retry is not None:
            raise retry

    @kopf.on.resume(*tax_rates, id="report", when=sharding.cluster_wide, registry=registry)
    @kopf.on.create(*tax_rates, id="report", when=sharding.cluster_wide, registry=registry)
    @kopf.on.update(*tax_rates, id="report", field="spec", when=sharding.cluster_wide,
                    registry=registry)  # fmt: skip
    @errors.boundary
    async def report_tax_rate(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any,
                              **_: Any) -> None:  # fmt: skip
        status, retry = await reconcile_tax_rate(ctx_of(memo), body, logger)
        patch.status.update(status)
        if retry is not None:
            raise retry
