"""Events out: what Tenantry tells the SaaS team's systems, and how it signs it.

Pure: event names, the endpoints' model, which endpoint wants which event,
deterministic event ids, retry delays and the signature. Storing and sending
are elsewhere (`db/outbox.py`, `api/outbound/`).

The signature is Stripe's scheme with our header name. For each attempt:

    Tenantry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

A receiver recomputes it over the raw body, compares in constant time, and
refuses a `t` too far from its own clock (a replayed request). The event's
id (`Tenantry-Event-Id`) is the same on every attempt and every endpoint:
receivers deduplicate on it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

INVOICE_FINALIZED = "invoice.finalized"
INVOICE_PAID = "invoice.paid"
INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
SUBSCRIPTION_STATE_CHANGED = "subscription.state_changed"
TENANT_READY = "tenant.ready"
TENANT_SUSPENDED = "tenant.suspended"
USAGE_THRESHOLD_CROSSED = "usage.threshold_crossed"
EVENT_TYPES = (
    INVOICE_FINALIZED,
    INVOICE_PAID,
    INVOICE_PAYMENT_FAILED,
    SUBSCRIPTION_STATE_CHANGED,
    TENANT_READY,
    TENANT_SUSPENDED,
    USAGE_THRESHOLD_CROSSED,
)

THRESHOLDS = (80, 100)
"""Percentages of a limit whose crossing is an event, once per tenant, metric and period."""

SIGNATURE_HEADER = "Tenantry-Signature"
EVENT_ID_HEADER = "Tenantry-Event-Id"
DELIVERY_ID_HEADER = "Tenantry-Delivery-Id"
DEFAULT_TOLERANCE = 300
"""Seconds a signature's timestamp may lie from the receiver's clock."""

MIN_SECRET_LENGTH = 24

# Event ids derived from what the event is about (`event(key=...)`) live in this namespace.
_EVENT_NAMESPACE = uuid.UUID("6f1d3c2e-9b8a-4e57-a1c4-3d2b7e0f5a91")


def matches(pattern: str, event_type: str) -> bool:
    """Whether `event_type` matches `pattern`, where `*` stands for any characters:
    `invoice.*` matches `invoice.paid`, `*` matches every event."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), event_type) is not None


def _known_pattern(pattern: str) -> str:
    if not any(matches(pattern, event_type) for event_type in EVENT_TYPES):
        raise ValueError(
            f"{pattern!r} matches no event Tenantry sends (they are: {', '.join(EVENT_TYPES)}; "
            "`*` stands for any characters, e.g. `invoice.*`)"
        )
    return pattern


class Endpoint(BaseModel):
    """One receiver of events: where, with which secret, and which events."""

    # A wrong secret must not show up in the error that refuses it.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Names the endpoint in the delivery log; deliveries are kept under it.",
    )
    url: str = Field(description="Where events are POSTed (http or https).")
    secret: SecretStr = Field(
        description="Signs every request (HMAC-SHA256); the receiver holds the same secret."
    )
    events: tuple[Annotated[str, AfterValidator(_known_pattern)], ...] = Field(
        min_length=1, description="Event types this endpoint gets; `*` is a wildcard."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not repeated: a URL may carry a token.
            raise ValueError("the url must be http:// or https:// with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the secret needs at least {MIN_SECRET_LENGTH} characters: use a random one, "
                "e.g. `openssl rand -hex 32`"
            )
        return value

    def wants(self, event_type: str) -> bool:
        return any(matches(pattern, event_type) for pattern in self.events)


def _unique_names(endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    names = [e.name for e in endpoints]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"endpoint names must be unique; repeated: {', '.join(repeated)}")
    return endpoints


Endpoints = Annotated[tuple[Endpoint, ...], AfterValidator(_unique_names)]
"""The configured endpoints (`TENANTRY_WEBHOOKS`, a JSON list), names unique."""


def wanting(endpoints: Iterable[Endpoint], event_type: str) -> list[Endpoint]:
    return [e for e in endpoints if e.wants(event_type)]


@dataclass(frozen=True)
class Event:
    """One thing that happened, as every endpoint receives it."""

    id: str
    type: str
    created: dt.datetime
    data: Mapping[str, Any]

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created": iso(self.created), "data": self.data}


def event(
    event_type: str, data: Mapping[str, Any], created: dt.datetime, *, key: str | None = None
) -> Event:
    """An event; with `key` (what it is about, e.g. the invoice that turned paid) its id
    is derived from it, so whoever records the same happening again records one event."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event_id = uuid.uuid5(_EVENT_NAMESPACE, f"{event_type}\0{key}") if key else uuid.uuid4()
    return Event(str(event_id), event_type, created, data)


def iso(moment: dt.datetime) -> str:
    """RFC 3339 in UTC, as the rest of the API writes times."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ signing


class SignatureError(ValueError):
    """A request's signature is missing, malformed, wrong or too old."""


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """The `Tenantry-Signature` header of `payload` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, payload)}"


def _digest(secret: str, timestamp: int, payload: bytes) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    header: str,
    payload: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a `Tenantry-Signature` header against the raw body; its timestamp, or
    `SignatureError`. Any of several `v1` entries may match (a secret being rotated)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"the timestamp {value!r} is not a number") from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("the header needs t=<unix seconds> and at least one v1=<hex>")
    expected = _digest(secret, timestamp, payload)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise SignatureError("no v1 signature matches the body and the secret")
    age = abs((time.time() if now is None else now) - timestamp)
    if age > tolerance:
        raise SignatureError(f"the timestamp is {age:.0f} s away, more than {tolerance} s")
    return timestamp


# ------------------------------------------------------------------ retries


def retry_delay(attempts: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: `base × 2^(attempts-1)`,
    at most `cap`, less up to 20 % drawn from `jitter` (0 to 1) so that endpoints failing
    together are not retried together."""
    nominal = min(cap, base * (1 << max(0, attempts - 1)))
    return nominal * (1 - 0.2 * jitter)


# ------------------------------------------------------------------ usage


def crossed(limit: int, used: int) -> tuple[int, ...]:
    """The thresholds (percentages of `limit`) that `used` has reached; none for an
    unlimited (-1) or zero limit."""
    if limit <= 0:
        return ()
    return tuple(t for t in THRESHOLDS if used * 100 >= t * limit)


def threshold_data(
    *,
    tenant: Mapping[str, str],
    plan: str,
    metric: str,
    threshold: int,
    limit: int,
    used: int,
    period: tuple[dt.datetime, dt.datetime],
) -> dict[str, Any]:
    return {
        "tenant": dict(tenant),
        "plan": plan,
        "metric": metric,
        "threshold": threshold,
        "limit": limit,
        "used": used,
        "period": {"start": iso(period[0]), "end": iso(period[1])},
    }


def threshold_key(tenant_uid: str, metric: str, period_start: dt.datetime, threshold: int) -> str:
    """What makes a crossing one event: the tenant, metric, period and threshold."""
    return f"{tenant_uid}:{metric}:{iso(period_start)}:{threshold}"
