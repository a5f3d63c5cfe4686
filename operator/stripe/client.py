"""The operator's one door to Stripe: the client, its errors mapped once, idempotency keys.

Every request runs inside `Stripe.calling(doing)`, which maps Stripe's
errors onto the operator's, the most specific first:

    Stripe raises                               becomes
    CardError, InvalidRequestError,             StripeRefused: Stripe's message in a
    IdempotencyError, AuthenticationError,      condition; the same request would get
    PermissionError                             the same answer
    RateLimitError, APIConnectionError,         StripeUnavailable (a kopf.TemporaryError):
    APIError (5xx, 409) and any other           "Stripe is unavailable", retried after a
    StripeError                                 delay that doubles while Stripe keeps failing

Every POST carries an idempotency key made of the object's kind, uid and
generation, the operation, and a digest of the parameters
(`idempotency_key`). A pass retried after a failure (of Stripe, of the
status patch, of the operator) sends the same request under the same key,
and Stripe answers with the object it made the first time: a retried
reconcile never makes a second Customer. A new generation, or other
parameters, is another request. Keys live 24 hours at Stripe, so creations
also look for an object made earlier before they make one.

Requests are not retried here (`max_network_retries=0`): a handler never
sleeps, kopf or the next pass retries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import stripe

from tenantry.operator.errors import StripeRefused, StripeUnavailable
from tenantry.operator.settings import OperatorSettings

BACKOFF_FIRST = 5.0
"""Seconds before the first retry after Stripe failed."""
BACKOFF_MAX = 300.0
"""The longest wait between retries while Stripe keeps failing."""

_REFUSED: tuple[type[stripe.StripeError], ...] = (
    stripe.CardError,
    stripe.InvalidRequestError,
    stripe.IdempotencyError,
    stripe.AuthenticationError,
    stripe.PermissionError,
)


def enabled(settings: OperatorSettings) -> bool:
    key = settings.stripe_api_key
    return key is not None and bool(key.get_secret_value())


def idempotency_key(
    kind: str, uid: str, generation: int | None, operation: str, params: Mapping[str, Any]
) -> str:
    """`tenantry:<kind>:<uid>:<generation>:<operation>:<digest of params>`: the same for
    the same request of the same object at the same generation, and only then."""
    digest = hashlib.sha256(
        json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()[:16]
    return f"tenantry:{kind}:{uid}:{generation or 0}:{operation}:{digest}"


def _detail(error: stripe.StripeError) -> str:
    text = " ".join((error.user_message or type(error).__name__).split())
    param = getattr(error, "param", None)
    return f"{text} (parameter {param})" if param else text


class Stripe:
    """The Stripe client the operator builds once at start-up (kept in its Context)."""

    def __init__(
        self,
        client: stripe.StripeClient,
        http_client: stripe.HTTPClient,
        *,
        customer_on_delete: Literal["keep", "delete"] = "keep",
    ) -> None:
        self.client = client
        self.http_client = http_client
        self.customer_on_delete = customer_on_delete
        self._failures = 0  # consecutive temporary failures, for the backoff

    @classmethod
    def from_settings(
        cls, settings: OperatorSettings, http_client: stripe.HTTPClient | None = None
    ) -> Stripe | None:
        """The client the settings ask for; None without a Stripe key (Stripe is off)."""
        if not enabled(settings):
            return None
        assert settings.stripe_api_key is not None
        http = http_client or stripe.AIOHTTPClient()
        client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            http_client=http,
            base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
            max_network_retries=0,
        )
        return cls(client, http, customer_on_delete=settings.stripe_customer_on_delete)

    async def close(self) -> None:
        await self.http_client.close_async()  # type: ignore[no-untyped-call]

    def backoff(self) -> float:
        """Seconds to wait before the next try: doubling while Stripe keeps failing."""
        return min(BACKOFF_MAX, BACKOFF_FIRST * (1 << min(max(self._failures - 1, 0), 16)))

    @asynccontextmanager
    async def calling(self, doing: str) -> AsyncIterator[None]:
        """Map a Stripe error raised inside onto StripeRefused or StripeUnavailable.
        `doing` completes "Stripe refused to ...", e.g. "create the Customer of Tenant a/b"."""
        try:
            yield
        except _REFUSED as error:
            raise StripeRefused(f"Stripe refused to {doing}: {_detail(error)}") from error
        except stripe.StripeError as error:
            self._failures += 1
            raise StripeUnavailable(
                f"Stripe is unavailable ({doing}): {_detail(error)}", delay=self.backoff()
            ) from error
        self._failures = 0

    @staticmethod
    def options(key: str) -> stripe.RequestOptions:
        return {"idempotency_key": key}


def missing(error: StripeRefused) -> bool:
    """Stripe refused because the object is gone (deleted in the dashboard, or before)."""
    cause = error.__cause__
    return isinstance(cause, stripe.InvalidRequestError) and (
        cause.code == "resource_missing" or cause.http_status == 404
    )
