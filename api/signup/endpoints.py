"""`POST /v1/signup` (public) and `GET /v1/signup/checkout` (its signed checkout link)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenantry.api.auth import RuntimeDep, utcnow
from tenantry.api.errors import (
    BadGateway,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
    Unprocessable,
    parse_body,
    responses,
)
from tenantry.api.runtime import Runtime
from tenantry.api.signup.service import Form, Signup, signup_off
from tenantry.api.stripe.session_endpoints import sessions_of
from tenantry.api.usage.endpoints import json_body, read_body
from tenantry.core.resources import NAME_PATTERN, BillingDetails

router = APIRouter(tags=["signup"])

MAX_BODY = 8 * 1024


class SignupIn(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        min_length=2,
        max_length=40,
        description="The account's name: lower case letters, digits and dashes. It names the "
        "Tenant and its instance (`tenant-<name>`).",
    )
    display_name: str = Field(min_length=1, max_length=200, description="The customer's name.")
    email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254, description="Where invoices go."
    )
    plan: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=63,
        description="A Plan offered at signup; default the first offered.",
    )
    billing: BillingDetails = Field(
        default_factory=BillingDetails, description="Legal name, address and tax id."
    )


class SignupOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    tenant: str = Field(description="`namespace/name` of the Tenant made.")
    subscription: str = Field(description="`namespace/name` of its Subscription.")
    plan: str
    trial_days: int = Field(description="Days of the trial; 0 for none.")
    checkout_url: str | None = Field(
        default=None,
        description="With Stripe on: where the customer saves a payment method (Stripe "
        "Checkout, opened through a signed link that works for TENANTRY_SIGNUP_LINK_TTL).",
    )


def signup_of(rt: Runtime) -> Signup:
    if rt.signup is None:
        raise signup_off()
    return rt.signup


@router.post(
    "/v1/signup",
    status_code=201,
    response_model=SignupOut,
    summary="Sign up: a Tenant and its trialing Subscription (public, rate-limited)",
    responses=responses(
        NotFound, Conflict, PayloadTooLarge, Unprocessable, TooManyRequests, Unavailable
    ),
    openapi_extra=json_body(SignupIn),
)
async def sign_up(request: Request, rt: RuntimeDep) -> SignupOut:
    """No credentials: each client address may sign up a few times per window (429 past
    it). 404 while signup is off, 409 when the name is taken, 422 for a Plan not offered.
    The operator provisions the Tenant like any other; with Stripe on, `checkoutUrl`
    leads to Stripe Checkout."""
    signup = signup_of(rt)
    raw = await read_body(request, MAX_BODY, "A signup is a few fields.")
    form = parse_body(SignupIn, raw)
    # Counted once the form is valid: a typo costs no attempt; each try at Kubernetes does.
    now = utcnow()
    await signup.admit(request.client.host if request.client else "unknown", now)
    made = await signup.sign_up(
        Form(form.name, form.display_name, form.email, form.plan, form.billing)
    )
    checkout_url = None
    if rt.sessions is not None and rt.sessions.settings.checkout_success_url:
        token = signup.checkout_token(made, now)
        checkout_url = str(request.url_for("signup_checkout").include_query_params(token=token))
    key = f"{made.namespace}/{made.name}"
    return SignupOut(
        tenant=key,
        subscription=key,
        plan=made.plan,
        trial_days=made.trial_days,
        checkout_url=checkout_url,
    )


@router.get(
    "/v1/signup/checkout",
    name="signup_checkout",
    status_code=303,
    summary="Opens Stripe Checkout for a signup (the link its answer carries)",
    response_class=RedirectResponse,
    responses={
        303: {"description": "To Stripe Checkout."},
        **responses(Forbidden, NotFound, Unprocessable, BadGateway, Unavailable),
    },
)
async def signup_checkout(
    rt: RuntimeDep,
    token: str = Query(min_length=1, max_length=1024, description="The signed link's token."),
) -> RedirectResponse:
    """303 to Stripe Checkout once the operator has made the Tenant's Stripe Customer;
    until then 503 with `Retry-After` (and `Refresh`, so a browser waits by itself).
    403 for a link that is altered or expired."""
    signup = signup_of(rt)
    sessions = sessions_of(rt)
    namespace, name = signup.checkout_tenant(token, utcnow())
    try:
        customer = await sessions.customer(namespace, name)
    except Conflict as pending:
        raise Unavailable(
            "Your account is being prepared; this page opens checkout in a few seconds.",
            code="checkout_preparing",
            headers={"Retry-After": "2", "Refresh": "2"},
        ) from pending
    session = await sessions.checkout(customer, None, None)
    return RedirectResponse(session.url, status_code=303)
