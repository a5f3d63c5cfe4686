"""Handlers of the Plan kind: its spec checked and, with Stripe on, its prices in Stripe.

Every pass ends in one status patch whose `Ready` says whether Subscriptions may
name the Plan (`core/readiness.py`): a spec the models refuse is
`Ready=False, InvalidSpec`; with Stripe on, a Plan whose Product and Price are
not in Stripe yet is `Ready=False` with Stripe's reason, and is retried. Tenants
and Subscriptions read Plans through their own indexes; this module only reports.
"""

from __future__ import annotations

from typing import Any

import kopf

from tenantry.core.readiness import plan_ready
from tenantry.core.resources import GROUP, VERSION, PlanKind, PlanSpec, PlanStatus
from tenantry.operator import errors, sharding
from tenantry.operator.context import Context
from tenantry.operator.errors import StripeUnavailable
from tenantry.operator.reconcile import Logger, prior_status, reconciling
from tenantry.operator.stripe import plans as stripe_plans
from tenantry.operator.stripe.sync import STRIPE_SYNCED


async def reconcile(
    ctx: Context, body: kopf.Body, logger: Logger
) -> tuple[dict[str, Any], StripeUnavailable | None]:
    """One pass over a Plan: its status and, when Stripe was unavailable, what to retry."""
    prior = prior_status(body, PlanStatus)
    retry = None
    async with reconciling(body, prior.conditions, logger, now=ctx.clock()) as r:
        spec = r.spec(PlanSpec)
        if ctx.stripe is not None:
            retry = await stripe_plans.keep_in_step(ctx.stripe, r, spec, prior.stripe, logger)
        r.observe(plan_ready(r.holds(STRIPE_SYNCED), stripe_on=ctx.stripe is not None))
    return r.status(), retry


def register(registry: kopf.OperatorRegistry, ctx_of: Any) -> None:
    plans = (GROUP, VERSION, PlanKind.plural)

    @kopf.on.resume(*plans, id="reconcile", when=sharding.cluster_wide, registry=registry)
    @kopf.on.create(*plans, id="reconcile", when=sharding.cluster_wide, registry=registry)
    @kopf.on.update(*plans, id="reconcile", field="spec", when=sharding.cluster_wide,
                    registry=registry)  # fmt: skip
    @errors.boundary
    async def reconcile_plan(
        body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any, **_: Any
    ) -> None:
        ctx = ctx_of(memo)
        async with ctx.lock(("Plan", body.metadata.name)):
            status, retry = await reconcile(ctx, body, logger)
        patch.status.update(status)
        if retry is not None:
            raise retry
