"""License claims: what a license token says, as frozen pydantic models.

In the token, custom claims use camelCase (``isTrialMode``, ``currentPeriodEnd``),
registered claims keep their RFC 7519 names, and every instant is an integer
number of seconds since the epoch. In Python, instants are UTC datetimes with
whole seconds, so a claims object survives a sign/verify round trip unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ._time import from_epoch, to_epoch, utc

__all__ = [
    "UNLIMITED",
    "EpochDateTime",
    "LicenseClaims",
    "Plan",
    "Subscription",
    "SubscriptionStatus",
    "Tenant",
    "Trial",
    "is_unlimited",
    "new_jti",
    "new_license_claims",
]

#: Limit value meaning "no limit". Any other limit is a maximum count (>= 0).
UNLIMITED: Final = -1


def is_unlimited(limit: int) -> bool:
    """True if ``limit`` is the :data:`UNLIMITED` marker."""
    return limit == UNLIMITED


def _to_datetime(value: Any) -> Any:
    if isinstance(value, bool):
        # ValueError, not TypeError: pydantic only turns ValueError into a ValidationError.
        raise ValueError("a timestamp cannot be a boolean")
    if isinstance(value, int | float):
        # Explicit seconds: pydantic's own int parsing would read large values as milliseconds.
        try:
            return from_epoch(int(value // 1))
        except (OverflowError, OSError) as exc:
            # Re-raised as ValueError so pydantic reports it instead of letting it escape.
            raise ValueError(f"timestamp out of range: {exc}") from None
    if isinstance(value, datetime):
        # Truncate to whole seconds: the token can only carry whole seconds.
        return utc(value, name="timestamp").replace(microsecond=0)
    raise ValueError("expected epoch seconds or a timezone-aware datetime")


EpochDateTime = Annotated[
    datetime,
    BeforeValidator(_to_datetime),
    PlainSerializer(to_epoch, return_type=int, when_used="json"),
]
"""A UTC datetime with whole seconds, written as integer epoch seconds in JSON."""


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        # Tokens from a newer issuer may carry claims this version does not know.
        extra="ignore",
    )


class Tenant(_Model):
    """The customer the license is for."""

    id: str = Field(min_length=1)
    name: str


class Plan(_Model):
    """The commercial plan; ``name`` is shown to users in guard messages."""

    code: str = Field(min_length=1)
    name: str


class Trial(_Model):
    """Trial state; ``is_trial_mode`` is ``isTrialMode`` in the token."""

    is_trial_mode: StrictBool = False
    ends_at: EpochDateTime | None = None


class SubscriptionStatus(StrEnum):
    """Billing subscription status (the usual payment-provider states)."""

    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    PAUSED = "paused"


class Subscription(_Model):
    """Billing state at issue time; ``current_period_end`` is ``currentPeriodEnd``.

    A status this version does not know stays a plain string: an instance that
    cannot be upgraded must not reject licenses because billing gained a state.
    """

    status: SubscriptionStatus | str
    current_period_end: EpochDateTime | None = None


class LicenseClaims(_Model):
    """Everything a license token asserts.

    ``limits`` maps a limit name to a maximum count, or :data:`UNLIMITED` (-1).
    Build one with :func:`new_license_claims` rather than by hand.
    """

    iss: str = Field(min_length=1)
    aud: str | tuple[str, ...]
    iat: EpochDateTime
    nbf: EpochDateTime
    exp: EpochDateTime
    jti: str = Field(min_length=1)
    tenant: Tenant
    plan: Plan
    # Strict: a license must not turn "yes" into True or "50" into 50 by coercion.
    features: dict[str, StrictBool] = Field(default_factory=dict)
    limits: dict[str, StrictInt] = Field(default_factory=dict)
    trial: Trial = Field(default_factory=Trial)
    subscription: Subscription

    @field_validator("limits")
    @classmethod
    def _limits_are_counts(cls, limits: dict[str, int]) -> dict[str, int]:
        for name, value in limits.items():
            if value < UNLIMITED:
                raise ValueError(f"limit {name!r} is {value}; use >= 0, or {UNLIMITED} (unlimited)")
        return limits

    @model_validator(mode="after")
    def _times_are_ordered(self) -> LicenseClaims:
        if self.exp <= self.nbf:
            raise ValueError("exp must be after nbf")
        if self.exp <= self.iat:
            raise ValueError("exp must be after iat")
        return self

    def to_payload(self) -> dict[str, Any]:
        """The JWT payload: camelCase custom claims, epoch-second instants."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> LicenseClaims:
        """Parse a JWT payload (raises ``pydantic.ValidationError`` if malformed)."""
        return cls.model_validate(payload, by_alias=True, by_name=False)


def new_jti() -> str:
    """A random token id (122 random bits, hex)."""
    return uuid.uuid4().hex


def new_license_claims(
    *,
    tenant: Tenant,
    plan: Plan,
    subscription: Subscription,
    now: datetime,
    ttl: timedelta,
    issuer: str,
    audience: str,
    features: Mapping[str, bool] | None = None,
    limits: Mapping[str, int] | None = None,
    trial: Trial | None = None,
    not_before: datetime | None = None,
    jti: str | None = None,
) -> LicenseClaims:
    """Claims valid from ``now`` (or ``not_before``) until ``now + ttl``, with a fresh ``jti``.

    ``now`` is injected so issuing is deterministic under test; it is truncated
    to whole seconds like every instant in a token.
    """
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    issued_at = utc(now, name="now").replace(microsecond=0)
    return LicenseClaims(
        iss=issuer,
        aud=audience,
        iat=issued_at,
        nbf=issued_at if not_before is None else not_before,
        exp=issued_at + ttl,
        jti=jti if jti is not None else new_jti(),
        tenant=tenant,
        plan=plan,
        features=dict(features or {}),
        limits=dict(limits or {}),
        trial=trial if trial is not None else Trial(),
        subscription=subscription,
    )
