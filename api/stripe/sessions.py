"""Checkout and the customer portal: Stripe's own pages, opened for one Tenant's Customer.

The operator makes each Tenant's Stripe Customer (status `stripeCustomerId`);
these sessions only open Stripe's pages on it:

- Checkout, in `setup` mode: the customer saves a payment method. The Stripe
  Subscription exists already (the operator made it on the Plan's price), so
  nothing is bought here; `checkout.session.completed` makes the method the
  customer's default for invoices (api/stripe/handlers.py), and the next
  invoice is charged to it.
- The portal: payment methods, invoices, a plan change among the Plans that
  have a Stripe price, and cancellation at the period's end. Stripe never
  prorates there (Tenantry prices the change); the change comes back as
  `customer.subscription.updated` and moves the Subscription's `planRef`.

Stripe's refusals are a 502 carrying Stripe's message; an outage a 503.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from tenantry.api.errors import BadGateway, Conflict, NotFound, Unavailable, Unprocessable
from tenantry.api.stripe.settings import StripeSettings
from tenantry.api.tenants.kube import Kube

TENANT_KEY = "tenantry_tenant_uid"  # the same metadata the operator puts on the Customer


@dataclass(frozen=True)
class Session:
    id: str
    url: str
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Customer:
    """A Tenant as Stripe knows it."""

    namespace: str
    name: str
    uid: str
    customer_id: str
    currency: str | None  # of its Plan, when the Plan is known


def portal_products(plans: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the portal may switch between: each Plan's Product at its Price now in force,
    in name order (a stable configuration for the same Plans). Pure."""
    offered = []
    for plan in sorted(plans, key=lambda p: p["metadata"]["name"]):
        synced = (plan.get("status") or {}).get("stripe") or {}
        if synced.get("productId") and synced.get("priceId"):
            offered.append({"product": synced["productId"], "prices": [synced["priceId"]]})
    return offered


def portal_features(products: list[dict[str, Any]]) -> dict[str, Any]:
    """Stripe never prorates and never touches what the Tenant's spec owns. Pure."""
    return {
        # Billing details come from the Tenant's spec (the operator keeps the Customer in step).
        "customer_update": {"enabled": False},
        "invoice_history": {"enabled": True},
        "payment_method_update": {"enabled": True},
        "subscription_cancel": {
            "enabled": True,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "subscription_update": (
            {
                "enabled": True,
                "default_allowed_updates": ["price"],
                "products": products,
                "proration_behavior": "none",
            }
            if products
            else {"enabled": False}
        ),
    }


def _stripe_failed(error: stripe.StripeError) -> BadGateway | Unavailable:
    message = error.user_message or str(error) or type(error).__name__
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or (
        error.http_status is not None and error.http_status >= 500
    ):
        return Unavailable(
            f"Stripe is unavailable ({message}); retry shortly.",
            code="stripe_unavailable",
            headers={"Retry-After": "5"},
        )
    return BadGateway(
        f"Stripe refused the request: {message}",
        code="stripe_refused",
        details={"stripe_code": error.code} if error.code else {},
    )


class Sessions:
    def __init__(self, client: stripe.StripeClient, kube: Kube, settings: StripeSettings) -> None:
        self.client = client
        self.kube = kube
        self.settings = settings
        self._configurations: dict[str, str] = {}  # fingerprint -> bpc_...

    async def customer(self, namespace: str, name: str) -> Customer:
        """The Tenant's Stripe Customer; 404 without the Tenant, 409 until the operator
        has made the Customer."""
        tenant = await self.kube.tenant(namespace, name)
        if tenant is None:
            raise NotFound(
                f"There is no Tenant {name} in namespace {namespace}.",
                code="tenant_not_found",
                details={"namespace": namespace, "name": name},
            )
        status = tenant.get("status") or {}
        customer_id = status.get("stripeCustomerId")
        if not customer_id:
            raise Conflict(
                f"Tenant {namespace}/{name} has no Stripe Customer yet: the operator makes it "
                "shortly after the Tenant is created (see its StripeSynced condition). Retry "
                "in a few seconds.",
                code="stripe_customer_pending",
                headers={"Retry-After": "2"},
            )
        currency = None
        if status.get("plan"):
            plan = await self.kube.plan(status["plan"])
            currency = (((plan or {}).get("spec") or {}).get("price") or {}).get("currency")
        return Customer(
            namespace, name, tenant["metadata"]["uid"], customer_id, currency and currency.lower()
        )

    async def checkout(
        self, customer: Customer, success_url: str | None, cancel_url: str | None
    ) -> Session:
        success = success_url or self.settings.checkout_success_url
        cancel = cancel_url or self.settings.checkout_cancel_url or success
        if not success:
            raise Unprocessable(
                "Give successUrl (where Checkout sends the customer afterwards), or set "
                "TENANTRY_STRIPE_CHECKOUT_SUCCESS_URL.",
                code="missing_return_url",
            )
        tags = {
            TENANT_KEY: customer.uid,
            "tenantry_tenant": f"{customer.namespace}/{customer.name}",
        }
        params: dict[str, Any] = {
            "mode": "setup",
            "customer": customer.customer_id,
            "success_url": success,
            "cancel_url": cancel,
            "metadata": tags,
            "setup_intent_data": {"metadata": tags},
        }
        if customer.currency:
            params["currency"] = customer.currency
        else:
            params["payment_method_types"] = ["card"]
        try:
            made = await self.client.v1.checkout.sessions.create_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as error:
            raise _stripe_failed(error) from error
        expires = dt.datetime.fromtimestamp(made.expires_at, dt.UTC) if made.expires_at else None
        return Session(made.id, made.url or "", expires)

    async def portal(self, customer: Customer, return_url: str | None) -> Session:
        back = return_url or self.settings.portal_return_url
        params: dict[str, Any] = {"customer": customer.customer_id}
        if back:
            params["return_url"] = back
        try:
            params["configuration"] = (
                self.settings.portal_configuration or await self._configuration()
            )
            made = await self.client.v1.billing_portal.sessions.create_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as error:
            raise _stripe_failed(error) from error
        return Session(made.id, made.url, None)

    async def _configuration(self) -> str:
        """Tenantry's portal configuration for the Plans as they are now: made once per
        distinct set of Plans and prices (an idempotency key from their fingerprint)."""
        features = portal_features(portal_products(await self.kube.plans()))
        fingerprint = hashlib.sha256(json.dumps(features, sort_keys=True).encode()).hexdigest()
        found = self._configurations.get(fingerprint)
        if found is None:
            made = await self.client.v1.billing_portal.configurations.create_async(
                {"features": features, "metadata": {"tenantry_portal": fingerprint[:32]}},  # type: ignore[typeddict-item]
                {"idempotency_key": f"tenantry-portal-{fingerprint[:40]}"},
            )
            found = self._configurations[fingerprint] = made.id
        return found
