"""`POST /v1/admin/tenants/{namespace}/{name}/checkout-session` and `.../portal-session`."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenantry.api.auth import RuntimeDep, admin_token
from tenantry.api.errors import (
    BadGateway,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    parse_body,
    responses,
)
from tenantry.api.paths import Name, Namespace
from tenantry.api.runtime import Runtime
from tenantry.api.stripe.sessions import Session, Sessions
from tenantry.api.usage.endpoints import json_body, read_body

router = APIRouter(tags=["stripe"])

MAX_BODY = 8 * 1024


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CheckoutSessionIn(Wire):
    success_url: AnyHttpUrl | None = Field(
        default=None,
        description="Where Checkout sends the customer afterwards "
        "(default: TENANTRY_STRIPE_CHECKOUT_SUCCESS_URL).",
    )
    cancel_url: AnyHttpUrl | None = Field(
        default=None,
        description="Where a customer who gives up goes (default: "
        "TENANTRY_STRIPE_CHECKOUT_CANCEL_URL, else successUrl).",
    )


class PortalSessionIn(Wire):
    return_url: AnyHttpUrl | None = Field(
        default=None,
        description="The portal's back link (default: TENANTRY_STRIPE_PORTAL_RETURN_URL).",
    )


class SessionOut(Wire):
    id: str = Field(description="Stripe's session id (`cs_...` or `bps_...`).")
    url: str = Field(description="Send the customer here.")
    expires_at: dt.datetime | None = Field(default=None, description="When the URL stops working.")


def session_out(session: Session) -> SessionOut:
    return SessionOut(id=session.id, url=session.url, expires_at=session.expires_at)


def sessions_of(rt: Runtime) -> Sessions:
    if rt.sessions is None:
        raise Unavailable(
            "Stripe is not configured here: set TENANTRY_STRIPE_API_KEY and restart the API.",
            code="stripe_not_configured",
        )
    return rt.sessions


W = TypeVar("W", bound=Wire)


async def _body(request: Request, model: type[W]) -> W:
    """The optional JSON body: empty means every default."""
    raw = await read_body(request, MAX_BODY, "The body is a few URLs.")
    return parse_body(model, raw) if raw.strip() else model()


_ERRORS = (Unauthorized, NotFound, Conflict, PayloadTooLarge, Unprocessable, BadGateway,
           Unavailable)  # fmt: skip


@router.post(
    "/v1/admin/tenants/{namespace}/{name}/checkout-session",
    status_code=201,
    summary="A Stripe Checkout URL where the tenant's customer saves a payment method",
    dependencies=[Depends(admin_token)],
    responses=responses(*_ERRORS),
    openapi_extra=json_body(CheckoutSessionIn, required=False),
)
async def checkout_session(
    namespace: Namespace, name: Name, request: Request, rt: RuntimeDep
) -> SessionOut:
    """Checkout in setup mode on the Tenant's Stripe Customer: the method saved becomes the
    default its invoices are charged to. 409 `stripe_customer_pending` until the operator
    has made the Customer; 502 when Stripe refuses."""
    sessions = sessions_of(rt)
    body = await _body(request, CheckoutSessionIn)
    customer = await sessions.customer(namespace, name)
    made = await sessions.checkout(
        customer,
        str(body.success_url) if body.success_url else None,
        str(body.cancel_url) if body.cancel_url else None,
    )
    return session_out(made)


@router.post(
    "/v1/admin/tenants/{namespace}/{name}/portal-session",
    status_code=201,
    summary="A Stripe customer portal URL: payment methods, invoices, plan changes",
    dependencies=[Depends(admin_token)],
    responses=responses(*_ERRORS),
    openapi_extra=json_body(PortalSessionIn, required=False),
)
async def portal_session(
    namespace: Namespace, name: Name, request: Request, rt: RuntimeDep
) -> SessionOut:
    """The portal offers every Plan that has a Stripe price and never prorates (Tenantry
    does); a plan change there moves the Subscription's `planRef`."""
    sessions = sessions_of(rt)
    body = await _body(request, PortalSessionIn)
    customer = await sessions.customer(namespace, name)
    made = await sessions.portal(customer, str(body.return_url) if body.return_url else None)
    return session_out(made)
