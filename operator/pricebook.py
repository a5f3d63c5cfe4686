"""Handlers of the Coupon and TaxRate kinds: their specs checked, a Coupon's redemptions
counted. Subscriptions read both (see `subscription.py`); these only report."""

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
from tenantry.operator import errors
from tenantry.operator.context import Context
from tenantry.operator.reconcile import Logger, prior_status, reconciling


async def reconcile_coupon(ctx: Context, body: kopf.Body, logger: Logger) -> dict[str, Any]:
    prior = prior_status(body, CouponStatus)
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
    return r.status()


async def reconcile_tax_rate(ctx: Context, body: kopf.Body, logger: Logger) -> dict[str, Any]:
    prior = prior_status(body, TaxRateStatus)
    async with reconciling(body, prior.conditions, logger, now=ctx.clock()) as r:
        spec = r.spec(TaxRateSpec)
        kind = "inclusive" if spec.inclusive else "exclusive"
        r.observe(condition(READY, True, "Valid", f"{spec.percentage}% {kind}."))
    return r.status()


def register(registry: kopf.OperatorRegistry, ctx_of: Any, interval: float) -> None:
    coupons = (GROUP, VERSION, CouponKind.plural)
    tax_rates = (GROUP, VERSION, TaxRateKind.plural)

    @kopf.on.resume(*coupons, id="report", registry=registry)
    @kopf.on.create(*coupons, id="report", registry=registry)
    @kopf.on.update(*coupons, id="report", field="spec", registry=registry)
    @kopf.timer(*coupons, id="count", interval=interval, initial_delay=interval,
                registry=registry)  # fmt: skip
    async def report_coupon(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any,
                            **_: Any) -> None:  # fmt: skip
        patch.status.update(await reconcile_coupon(ctx_of(memo), body, logger))

    @kopf.on.resume(*tax_rates, id="report", registry=registry)
    @kopf.on.create(*tax_rates, id="report", registry=registry)
    @kopf.on.update(*tax_rates, id="report", field="spec", registry=registry)
    async def report_tax_rate(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any,
                              **_: Any) -> None:  # fmt: skip
        patch.status.update(await reconcile_tax_rate(ctx_of(memo), body, logger))
