"""Issuing and verifying license tokens."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from pydantic import ValidationError

from ._claims import LicenseClaims
from ._guards import UNLICENSED_ENTITLEMENTS, Entitlements
from ._jws import (
    LICENSE_TYP,
    InvalidReason,
    Rejected,
    audience_matches,
    decode_verified,
    sign,
)
from ._keys import KeySet, SigningKey
from ._revocation import RevocationList
from ._time import now_utc, utc

__all__ = [
    "DEFAULT_LEEWAY",
    "LicenseState",
    "LicenseStatus",
    "issue",
    "sha256_token",
    "verify",
]

#: Allowed clock skew between issuer and instance.
DEFAULT_LEEWAY: Final = timedelta(seconds=60)

# A plain "JWT" (or no typ) is accepted for interoperability; a revocation list is not.
_LICENSE_TYPES: Final = frozenset({None, "JWT", LICENSE_TYP})


class LicenseState(StrEnum):
    """Outcome of :func:`verify`. Only VALID and GRACE grant the license's entitlements."""

    VALID = "valid"
    GRACE = "grace"  # expired, but within the grace period: keep working, warn the user
    EXPIRED = "expired"
    REVOKED = "revoked"
    INVALID = "invalid"
    UNLICENSED = "unlicensed"  # no token at all


@dataclass(frozen=True, slots=True)
class LicenseStatus:
    """What :func:`verify` concluded.

    ``claims`` is set only when the signature verified and the claims parsed (it is
    also set for EXPIRED, REVOKED and a not-yet-valid INVALID, to show whose license
    it is). Gate features with ``entitlements``, never with ``claims``.
    """

    state: LicenseState
    entitlements: Entitlements
    claims: LicenseClaims | None = None
    #: Human-readable explanation; ``None`` when VALID.
    reason: str | None = None
    #: Machine-readable cause, set when INVALID.
    reason_code: InvalidReason | None = None

    @property
    def usable(self) -> bool:
        """True when the license's entitlements apply (VALID or GRACE)."""
        return self.state in (LicenseState.VALID, LicenseState.GRACE)

    @property
    def expires_at(self) -> datetime | None:
        """The license's ``exp``, when claims are known."""
        return self.claims.exp if self.claims is not None else None


def issue(claims: LicenseClaims, signing_key: SigningKey) -> str:
    """Sign ``claims`` into a license token (header: ``alg``, ``kid``, ``typ``)."""
    return sign(claims.to_payload(), signing_key, typ=LICENSE_TYP)


def sha256_token(token: str) -> str:
    """Hex SHA-256 of a token, for history records that must not hold the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _fallback(
    state: LicenseState,
    reason: str,
    *,
    claims: LicenseClaims | None = None,
    code: InvalidReason | None = None,
) -> LicenseStatus:
    return LicenseStatus(
        state=state,
        entitlements=UNLICENSED_ENTITLEMENTS,
        claims=claims,
        reason=reason,
        reason_code=code,
    )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _summarise(error: ValidationError) -> str:
    # Field paths and messages only: never echo input values into logs.
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or 'payload'}: {err['msg']}"
        for err in error.errors()
    )


def verify(
    token: str | None,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    now: datetime | None = None,
    leeway: timedelta = DEFAULT_LEEWAY,
    grace: timedelta = timedelta(0),
    revocations: RevocationList | None = None,
) -> LicenseStatus:
    """Verify a license token offline and say what the instance may do.

    Never raises for a bad token. The signature must verify with the key named by
    the token's ``kid`` and with that key's own algorithm (RS256 or EdDSA); ``iss``
    and ``aud`` must match. Time is judged against ``now`` (default: wall clock)
    with ``leeway`` for clock skew:

    * INVALID while ``now < nbf - leeway`` (or ``now < iat - leeway``);
    * VALID while ``now <= exp + leeway``;
    * GRACE while ``now <= exp + leeway + grace``;
    * EXPIRED after that.

    A license whose ``jti`` is in ``revocations`` is REVOKED. Anything but VALID and
    GRACE gets :data:`UNLICENSED_ENTITLEMENTS`.

    Raises ``ValueError`` only for programming errors: naive ``now``, negative
    ``leeway`` or ``grace``.
    """
    if leeway < timedelta(0) or grace < timedelta(0):
        raise ValueError("leeway and grace must not be negative")
    at = utc(now, name="now") if now is not None else now_utc()
    token = token.strip() if token is not None else ""
    if not token:
        return _fallback(LicenseState.UNLICENSED, "no license installed")

    try:
        _, payload = decode_verified(token, keys, accepted_types=_LICENSE_TYPES)
    except Rejected as rejected:
        return _fallback(LicenseState.INVALID, rejected.message, code=rejected.code)

    # Issuer and audience first, on the raw payload: a token meant for another
    # product should be reported as such, not as malformed.
    if payload.get("iss") != issuer:
        return _fallback(
            LicenseState.INVALID,
            f"wrong issuer {payload.get('iss')!r} (expected {issuer!r})",
            code=InvalidReason.WRONG_ISSUER,
        )
    if not audience_matches(payload.get("aud"), audience):
        return _fallback(
            LicenseState.INVALID,
            f"wrong audience {payload.get('aud')!r} (expected {audience!r})",
            code=InvalidReason.WRONG_AUDIENCE,
        )
    try:
        claims = LicenseClaims.from_payload(payload)
    except ValidationError as error:
        return _fallback(
            LicenseState.INVALID,
            f"malformed license claims: {_summarise(error)}",
            code=InvalidReason.MALFORMED,
        )

    if at < claims.nbf - leeway:
        return _fallback(
            LicenseState.INVALID,
            f"license not yet valid (valid from {_iso(claims.nbf)})",
            claims=claims,
            code=InvalidReason.NOT_YET_VALID,
        )
    if at < claims.iat - leeway:
        return _fallback(
            LicenseState.INVALID,
            f"license issued in the future ({_iso(claims.iat)}); check the clock",
            claims=claims,
            code=InvalidReason.NOT_YET_VALID,
        )
    # Revocation wins over expiry: it is the more useful thing to tell the user.
    if revocations is not None and revocations.is_revoked(claims.jti):
        return _fallback(LicenseState.REVOKED, "license has been revoked", claims=claims)

    expiry = claims.exp + leeway
    if at <= expiry:
        return LicenseStatus(
            state=LicenseState.VALID,
            entitlements=Entitlements.from_claims(claims),
            claims=claims,
        )
    if at <= expiry + grace:
        return LicenseStatus(
            state=LicenseState.GRACE,
            entitlements=Entitlements.from_claims(claims),
            claims=claims,
            reason=(
                f"license expired at {_iso(claims.exp)}; "
                f"grace period ends at {_iso(expiry + grace)}"
            ),
        )
    return _fallback(LicenseState.EXPIRED, f"license expired at {_iso(claims.exp)}", claims=claims)
