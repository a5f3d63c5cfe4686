"""Signing and checking compact JWS tokens with already-loaded keys (via PyJWT).

Only the signature and header are checked here; time, issuer and audience
checks belong to the callers, which know ``now`` (PyJWT's own time checks would
read the wall clock, so they are switched off).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any, Final

import jwt

from ._keys import ALLOWED_ALGORITHMS, KeySet, SigningKey, VerificationKey

__all__ = ["InvalidReason", "Rejected", "audience_matches", "decode_verified", "sign"]

LICENSE_TYP: Final = "tenantry-license+jwt"
REVOCATION_TYP: Final = "tenantry-revocation+jwt"

# Real licenses are a few hundred bytes; refuse to parse megabytes of attacker input.
_MAX_TOKEN_CHARS: Final = 64 * 1024

# Signature only: claims are checked by the caller against an injected clock.
_jwt: Final = jwt.PyJWT(
    options={
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
        "verify_iss": False,
        "verify_sub": False,
        "verify_jti": False,
        "require": [],
    }
)


class InvalidReason(StrEnum):
    """Machine-readable cause of an INVALID verdict (``LicenseStatus.reason_code``)."""

    MALFORMED = "malformed"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    WRONG_TYPE = "wrong_type"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    NOT_YET_VALID = "not_yet_valid"


class Rejected(Exception):
    """Internal: why a token was refused. Callers turn it into a status or a public error."""

    def __init__(self, code: InvalidReason, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sign(payload: Mapping[str, Any], key: SigningKey, *, typ: str) -> str:
    """A compact JWS of ``payload`` with ``alg``, ``kid`` and ``typ`` headers."""
    return jwt.encode(
        dict(payload),
        key.private_key,
        algorithm=key.algorithm,
        headers={"kid": key.kid, "typ": typ},
    )


def _header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Rejected(InvalidReason.MALFORMED, f"malformed token: {exc}") from None


def _key_for(header: Mapping[str, Any], keys: KeySet) -> VerificationKey:
    alg = header.get("alg")
    # isinstance first: an unhashable header value (a list) must not raise on `in`.
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise Rejected(
            InvalidReason.ALGORITHM_NOT_ALLOWED,
            f"algorithm {alg!r} is not allowed (only {', '.join(sorted(ALLOWED_ALGORITHMS))})",
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Rejected(InvalidReason.UNKNOWN_KID, "token has no kid header")
    key = keys.get(kid)
    if key is None:
        raise Rejected(InvalidReason.UNKNOWN_KID, f"unknown signing key (kid {kid!r})")
    # The key decides the algorithm, never the token: this blocks algorithm confusion.
    if alg != key.algorithm:
        raise Rejected(
            InvalidReason.ALGORITHM_NOT_ALLOWED,
            f"algorithm {alg!r} does not match key {kid!r}, which is {key.algorithm}",
        )
    return key


def decode_verified(
    token: str, keys: KeySet, *, accepted_types: Collection[str | None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a token whose signature verifies with a key of ``keys``.

    Raises :class:`Rejected`. ``accepted_types`` lists the allowed ``typ`` headers
    (``None`` meaning absent), so a revocation list cannot pass for a license or
    the reverse.
    """
    if len(token) > _MAX_TOKEN_CHARS:
        raise Rejected(InvalidReason.MALFORMED, "malformed token: too large")
    header = _header(token)
    key = _key_for(header, keys)
    typ = header.get("typ")
    if not (typ is None or isinstance(typ, str)) or typ not in accepted_types:
        raise Rejected(InvalidReason.WRONG_TYPE, f"wrong token type {typ!r}")
    try:
        decoded = _jwt.decode_complete(token, key.public_key, algorithms=[key.algorithm])
    except jwt.InvalidSignatureError:
        raise Rejected(InvalidReason.BAD_SIGNATURE, "bad signature") from None
    except jwt.InvalidAlgorithmError as exc:
        raise Rejected(
            InvalidReason.ALGORITHM_NOT_ALLOWED, f"algorithm not allowed: {exc}"
        ) from None
    except jwt.PyJWTError as exc:
        raise Rejected(InvalidReason.MALFORMED, f"malformed token: {exc}") from None
    payload: dict[str, Any] = decoded["payload"]
    return header, payload


def audience_matches(aud: object, audience: str) -> bool:
    """RFC 7519 §4.1.3: ``aud`` is a string or a list of strings containing ours."""
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and all(isinstance(a, str) for a in aud) and audience in aud
