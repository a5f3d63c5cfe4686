"""`POST /webhooks/stripe`: Stripe's events in, verified, stored once, answered at once.

Invariant: an event is acknowledged only after the commit that stores it, and
stored only when its signature is Stripe's: a delivery that fails the check
(signature, secret, age) or is not an event gets a 400 and leaves nothing.
The event is stored under its id, so Stripe's retries and replays count as
deliveries of one event; the worker (worker.py) processes it, not this request.

The route is on Stripe's clock: `StripeWebhooks`, an ASGI middleware, answers
its requests ahead of FastAPI's routing, dependency resolution and exception
middleware, reading them from the ASGI scope: those layers, and Starlette's
request and response objects, would cost as much again as verifying the event.
The route stays declared, for the API's description, and answers the same.
"""

from __future__ import annotations

import json
from typing import Any

import stripe
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from tenantry.api import metrics
from tenantry.api.errors import (
    ApiError,
    BadRequest,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    responses,
    unexpected,
)
from tenantry.api.runtime import Runtime
from tenantry.api.stripe import repository as repo

router = APIRouter(tags=["stripe"])
WEBHOOK_PATH = "/webhooks/stripe"


class WebhookReceived(BaseModel):
    received: bool = Field(default=True, description="The event is stored.")
    id: str = Field(description="The event's id (`evt_...`).")
    duplicate: bool = Field(
        description="The event was stored before: this delivery is counted, nothing else."
    )


def _refused(code: str, message: str, **details: Any) -> BadRequest:
    return BadRequest(message, code=code, details=details)


def _signed_at(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return None


def verified(body: bytes, header: str | None, secret: str, tolerance: int) -> repo.NewEvent:
    """The event in `body` if `header` is Stripe's signature of it under `secret`, made
    at most `tolerance` seconds ago; BadRequest saying what is wrong otherwise."""
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _refused(
            "malformed_event", "The body is not UTF-8 text: it is not from Stripe."
        ) from None
    if not header:
        raise _refused(
            "missing_signature",
            "There is no Stripe-Signature header: only Stripe's signed events are accepted here.",
        )
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
    except stripe.SignatureVerificationError:
        try:  # the same check without the age limit tells an old signature from a wrong one
            stripe.WebhookSignature.verify_header(payload, header, secret, None)
        except stripe.SignatureVerificationError:
            raise _refused(
                "invalid_signature",
                "The Stripe-Signature header does not match this body under the configured "
                "signing secret: check that TENANTRY_STRIPE_WEBHOOK_SECRET is the signing "
                "secret (whsec_...) of this endpoint in Stripe, and that nothing on the way "
                "rewrites the body.",
            ) from None
        signed = _signed_at(header) or 0
        raise _refused(
            "signature_expired",
            f"The signature was made at {signed}, more than {tolerance} s ago "
            "(TENANTRY_STRIPE_WEBHOOK_TOLERANCE): a delayed or replayed request. Stripe signs "
            "each retry anew; check this server's clock.",
            signed_at=signed,
            tolerance_seconds=tolerance,
        ) from None
    return _event(payload)


class _Object(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    id: str | None = None


class _Data(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    object: _Object


class _EventHead(BaseModel):
    """What is read of an event on its way in; the rest is stored as it came. Parsing
    only this is half the cost of a whole JSON parse, and still checks it is JSON."""

    model_config = ConfigDict(strict=True, frozen=True)

    id: str = Field(min_length=1)
    object: str
    type: str = Field(min_length=1)
    created: int
    data: _Data


def _event(payload: str) -> repo.NewEvent:
    try:
        head = _EventHead.model_validate_json(payload)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors(include_url=False)[:3]
        )
        raise _refused(
            "malformed_event",
            f"The body is not a Stripe event ({problems}).",
        ) from None
    if head.object != "event":
        thin = head.object.startswith("v2.")
        hint = " Thin events (v2) are not supported: send snapshot events." if thin else ""
        raise _refused(
            "malformed_event", f"The body is a {head.object!r}, not a Stripe event.{hint}"
        )
    return repo.NewEvent(
        id=head.id,
        type=head.type,
        created=head.created,
        object_id=head.data.object.id,
        payload=payload,
    )


NOT_CONFIGURED = (
    "Stripe is not configured here: set TENANTRY_STRIPE_API_KEY and "
    "TENANTRY_STRIPE_WEBHOOK_SECRET (the endpoint's signing secret, whsec_...) and "
    "restart the API."
)


@router.post(
    WEBHOOK_PATH,
    status_code=202,
    response_model=WebhookReceived,
    summary="Stripe's webhook events (signed by Stripe; no Tenantry credentials)",
    openapi_extra={
        "parameters": [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": True,
                "description": "Stripe's signature of the body.",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "A Stripe event (snapshot payload), exactly as Stripe sent it.",
        },
    },
    responses=responses(BadRequest, PayloadTooLarge, Unprocessable, Unavailable),
)
async def stripe_webhook(request: Request) -> Response:
    """Verified with the endpoint's signing secret, stored under the event's id, and
    answered 202 once stored; a worker then processes it. A replay of a stored event
    is counted and changes nothing. 400 for a delivery that is not Stripe's (bad,
    missing or expired signature, or not an event) and 422 for an event PostgreSQL
    cannot hold: nothing of either is stored. 503 while the database is away, or when
    Stripe is not configured here."""
    # Served by StripeWebhooks, ahead of the router; answered the same if reached here.
    answer = await _acknowledge(request.scope, request.receive)
    return Response(answer, status_code=202, media_type="application/json")


async def _acknowledge(scope: Scope, receive: Receive) -> bytes:
    """The delivery verified and its event stored: the body of its 202."""
    rt: Runtime = scope["app"].state.runtime
    worker = rt.stripe
    if worker is None or worker.settings.webhook_secret is None:
        raise Unavailable(NOT_CONFIGURED, code="stripe_not_configured")
    secret = worker.settings.webhook_secret.get_secret_value()
    body = await _read_body(receive, rt.settings.max_body_bytes)
    signature = _header(scope, b"stripe-signature")
    event = verified(body, signature, secret, worker.settings.webhook_tolerance)
    new = await worker.store(event)
    metrics.stripe_event_received(new)
    # Built by hand: a model validated and serialized per delivery costs more than the check.
    return b'{"received":true,"id":%s,"duplicate":%s}' % (
        json.dumps(event.id).encode(),
        b"false" if new else b"true",
    )


_ACCEPTED = [(b"content-type", b"application/json")]


class StripeWebhooks:
    """ASGI middleware: `POST /webhooks/stripe` answered here, as `stripe_webhook` answers
    it, its refusals (ApiError) and failures answered as the API answers them; anything
    else goes on to the application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != WEBHOOK_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # What the router would have written: metrics count the request under its route.
        scope["route"] = _ROUTE
        response: Response
        try:
            answer = await _acknowledge(scope, receive)
        except ApiError as error:
            response = JSONResponse(
                error.body(), status_code=error.status_code, headers=error.headers
            )
        except Exception as error:  # answered as every route's failures are
            response = unexpected(WEBHOOK_PATH, error)
        else:
            length = (b"content-length", b"%d" % len(answer))
            await send({"type": "http.response.start", "status": 202,
                        "headers": [*_ACCEPTED, length]})  # fmt: skip
            await send({"type": "http.response.body", "body": answer})
            return
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (the server gives their names in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The body, refused with 413 once it passes `limit` bytes (its declared length is
    checked before, by BodyLimit)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"The body is {size} bytes or more; the limit is {limit} "
                "(TENANTRY_MAX_BODY_BYTES).",
                details={"limit_bytes": limit},
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_ROUTE = next(route for route in router.routes if getattr(route, "path", None) == WEBHOOK_PATH)
