"""What can go wrong in a reconcile, and the outside errors mapped onto it, in one place.

    NotReady        something the object needs does not exist yet; it recovers
                    by itself (a nudge or a retry reconciles it again)
    InvalidSpec     the spec is wrong; the message names the field and the fix,
                    and nothing changes until someone edits the object
    StripeRefused   (an InvalidSpec) Stripe refused a request: a parameter it
                    rejects, a declined card, a key it does not accept; the
                    message is Stripe's
    kopf.TemporaryError
                    the cluster, helm or the database failed for a moment;
                    kopf retries after its delay
    StripeUnavailable
                    (a kopf.TemporaryError) Stripe did not answer, failed, or
                    asked to slow down

Kubernetes API errors become temporary errors through `retry_later`, and
the client's transport errors (its pool exhausted, a timeout, a reset
connection) through `boundary`, which wraps every handler: each is retried
in `TRANSPORT_DELAY` seconds, never after kopf's default minute. SQLAlchemy
errors become temporary errors through `database`, Stripe's through
`Stripe.calling` (operator/stripe/client.py); pydantic validation errors
become InvalidSpec messages through `spec_error`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import httpx2
import kopf
from lightkube.core.exceptions import ApiError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tenantry.operator import metrics

TRANSPORT_DELAY = 3.0
"""Seconds before a pass that met a transport error runs again."""

P = ParamSpec("P")
R = TypeVar("R")


class NotReady(Exception):
    """Something the object needs does not exist yet; it recovers by itself."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidSpec(Exception):
    """The object's spec is wrong; the message names the field and the fix."""

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class StripeRefused(InvalidSpec):
    """Stripe refused a request; retrying it unchanged gets the same answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="StripeRefused")


class StripeUnavailable(kopf.TemporaryError):
    """Stripe did not answer, failed, or asked to slow down; retried after `delay`."""


def spec_error(error: ValidationError, prefix: str = "spec") -> str:
    """The first validation error as `spec.field.path: what is wrong`."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]))
    return f"{where}: {first['msg']}"


def not_found(error: ApiError) -> bool:
    return error.status.code == 404


def retry_later(error: ApiError, doing: str) -> kopf.TemporaryError:
    """A Kubernetes API error while `doing` something: retried in a moment."""
    return kopf.TemporaryError(f"{doing}: {error.status.code} {error.status.message}", delay=2)


def database_error(error: SQLAlchemyError) -> kopf.TemporaryError:
    """A database failure, named without its parameters (they may hold secrets)."""
    detail = str(error.orig if isinstance(error, DBAPIError) else error).splitlines()[0]
    if "does not exist" in detail and ("relation" in detail or "column" in detail):
        detail += ": run `tenantry api migrate` (the API migrates on start)"
    return kopf.TemporaryError(f"Database: {detail}", delay=5)


@asynccontextmanager
async def database() -> AsyncIterator[None]:
    """Map any SQLAlchemy error raised inside onto a temporary error."""
    try:
        yield
    except SQLAlchemyError as error:
        raise database_error(error) from error


def transport_error(error: httpx2.TransportError) -> kopf.TemporaryError:
    """The API server did not answer: no connection free in time, a timeout, a reset."""
    kind = type(error).__name__
    metrics.KUBE_TRANSPORT_ERRORS.labels(error=kind).inc()
    detail = str(error) or "no detail"
    return kopf.TemporaryError(
        f"Kubernetes API: {kind} ({detail}); retrying in {TRANSPORT_DELAY:g} s",
        delay=TRANSPORT_DELAY,
    )


@asynccontextmanager
async def kubernetes() -> AsyncIterator[None]:
    """Map the Kubernetes client's transport errors raised inside onto temporary errors."""
    try:
        yield
    except httpx2.TransportError as error:
        raise transport_error(error) from error


def boundary(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A kopf handler whose transport errors are retried in a few seconds."""

    @functools.wraps(handler)
    async def mapped(*args: P.args, **kwargs: P.kwargs) -> R:
        async with kubernetes():
            return await handler(*args, **kwargs)

    return mapped
