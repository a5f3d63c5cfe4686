"""Plan -> Stripe Product and its one recurring Price (the base price); handlers.

Stripe Prices cannot change: a Plan whose amount, currency or interval
changes gets a new Price, and the old one is deactivated (Subscriptions on
it move to the new one when they next pass). The ids, and the price the
Price was made for (its fingerprint), are in `status.stripe`. Only the base
price goes to Stripe; metered prices are Tenantry's (see the package's
docstring). The Plan handler (`operator/plan.py`) calls `keep_in_step` when Stripe is on.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import kopf

from tenantry.core.resources import (
    GROUP,
    VERSION,
    PlanKind,
    PlanSpec,
    Price,
    StripePlanStatus,
)
from tenantry.operator.errors import StripeUnavailable
from tenantry.operator.reconcile import Logger, Reconcile
from tenantry.operator.stripe.client import Stripe, idempotency_key
from tenantry.operator.stripe.sync import in_step, synced, syncing

if TYPE_CHECKING:
    from stripe.params import (
        PriceCreateParams,
        PriceUpdateParams,
        ProductCreateParams,
        ProductUpdateParams,
    )

KIND = "Plan"


def price_fingerprint(price: Price) -> str:
    """What a Stripe Price is made for, e.g. `9900 USD per month`."""
    return f"{price.amount} {price.currency} per {price.interval.value}"


def metadata(uid: str, name: str) -> dict[str, str]:
    return {"tenantry_plan_uid": uid, "tenantry_plan": name}


def product_params(uid: str, name: str, spec: PlanSpec) -> ProductCreateParams:
    return {"name": spec.display_name, "metadata": metadata(uid, name)}


def price_params(uid: str, name: str, product_id: str, price: Price) -> PriceCreateParams:
    params: dict[str, Any] = {
        "product": product_id,
        "unit_amount": price.amount,
        "currency": price.currency.lower(),
        "recurring": {"interval": price.interval.value},
        "nickname": price_fingerprint(price),
        "metadata": metadata(uid, name),
    }
    return cast("PriceCreateParams", params)


def in_step_message(ids: StripePlanStatus) -> str:
    return f"Stripe Product {ids.product_id}, Price {ids.price_id} ({ids.price_fingerprint})."


async def keep_in_step(
    api: Stripe, r: Reconcile, spec: PlanSpec, prior: StripePlanStatus | None, logger: Logger
) -> StripeUnavailable | None:
    fingerprint = price_fingerprint(spec.price)
    if (
        prior is not None
        and prior.price_fingerprint == fingerprint
        and in_step(r, in_step_message(prior))
    ):
        return None
    meta = r.body.metadata
    uid, name = meta.uid or "", meta.name or ""
    async with syncing(r, logger) as step:
        product = product_params(uid, name, spec)
        if prior is None:
            key = idempotency_key(KIND, uid, r.generation, "create-product", product)
            async with api.calling(f"create the Product of Plan {name}"):
                product_id = (
                    await api.client.v1.products.create_async(product, api.options(key))
                ).id
        else:
            product_id = prior.product_id
            update = cast("ProductUpdateParams", product)
            key = idempotency_key(KIND, uid, r.generation, "update-product", update)
            async with api.calling(f"update Stripe Product {product_id}"):
                await api.client.v1.products.update_async(product_id, update, api.options(key))
        price_id = prior.price_id if prior is not None else None
        if prior is None or prior.price_fingerprint != fingerprint:
            price = price_params(uid, name, product_id, spec.price)
            key = idempotency_key(KIND, uid, r.generation, "create-price", price)
            async with api.calling(f"create the Price of Plan {name} ({fingerprint})"):
                price_id = (await api.client.v1.prices.create_async(price, api.options(key))).id
            message = f"Created Stripe Price {price_id} ({fingerprint}) for Plan {name}"
            logger.info(message)
            kopf.info(r.body, reason="StripePriceCreated", message=message)
            if prior is not None:
                await _deactivate(api, r, prior.price_id)
        assert price_id is not None
        ids = StripePlanStatus(
            product_id=product_id, price_id=price_id, price_fingerprint=fingerprint
        )
        r.set(stripe=ids.to_wire())
        synced(r, in_step_message(ids))
    return step.retry


async def _deactivate(api: Stripe, r: Reconcile, price_id: str) -> None:
    """The old Price sells no more; Subscriptions still on it keep it until they move."""
    params: PriceUpdateParams = {"active": False}
    uid = r.body.metadata.uid or ""
    key = idempotency_key(KIND, uid, r.generation, f"deactivate-{price_id}", params)
    async with api.calling(f"deactivate Stripe Price {price_id}"):
        await api.client.v1.prices.update_async(price_id, params, api.options(key))


def register(registry: kopf.OperatorRegistry) -> None:
    """The index Subscriptions find their Plan's Price in (the Plan handler is `plan.py`)."""
    plans = (GROUP, VERSION, PlanKind.plural)

    @kopf.index(*plans, id="stripe_plans_by_name", registry=registry)
    async def stripe_plans_by_name(
        name: str, body: kopf.Body, **_: Any
    ) -> dict[str, dict[str, Any]]:
        ids = body.status.get("stripe")
        return {name: copy.deepcopy(dict(ids))} if ids else {}
