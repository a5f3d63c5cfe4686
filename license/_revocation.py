"""Signed revocation lists: the license ids (``jti``) the issuer has withdrawn."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ._claims import new_jti
from ._errors import RevocationListError
from ._jws import REVOCATION_TYP, Rejected, decode_verified, sign
from ._keys import KeySet, SigningKey
from ._time import from_epoch, to_epoch

__all__ = ["RevocationList", "issue_revocation_list"]

_JTIS_CLAIM = "revokedJtis"


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A verified set of revoked license ids.

    Obtain one with :meth:`verify`; a token that does not verify raises
    :class:`RevocationListError`, so an instance never trusts an unsigned list.
    Lists carry ``issued_at``: keep the newest one seen and ignore older ones,
    so a replayed old list cannot un-revoke a license.
    """

    jtis: frozenset[str]
    issued_at: datetime
    issuer: str

    def is_revoked(self, jti: str) -> bool:
        """True if the license with this ``jti`` is revoked."""
        return jti in self.jtis

    @classmethod
    def verify(cls, token: str, keys: KeySet, issuer: str) -> RevocationList:
        """Check signature, type and issuer of a revocation list token and read it."""
        try:
            _, payload = decode_verified(token.strip(), keys, accepted_types={REVOCATION_TYP})
        except Rejected as exc:
            raise RevocationListError(f"revocation list rejected: {exc.message}") from None
        if payload.get("iss") != issuer:
            raise RevocationListError(
                f"revocation list rejected: wrong issuer {payload.get('iss')!r}"
            )
        jtis = payload.get(_JTIS_CLAIM)
        iat = payload.get("iat")
        if not isinstance(jtis, list) or not all(isinstance(j, str) for j in jtis):
            raise RevocationListError(f"revocation list rejected: {_JTIS_CLAIM} must list strings")
        if not isinstance(iat, int) or isinstance(iat, bool):
            raise RevocationListError("revocation list rejected: iat must be epoch seconds")
        return cls(jtis=frozenset(jtis), issued_at=from_epoch(iat), issuer=issuer)


def issue_revocation_list(
    jtis: Iterable[str], signing_key: SigningKey, now: datetime, issuer: str
) -> str:
    """Sign the full set of revoked license ids as of ``now``."""
    payload = {
        "iss": issuer,
        "iat": to_epoch(now),
        "jti": new_jti(),
        _JTIS_CLAIM: sorted(set(jtis)),
    }
    return sign(payload, signing_key, typ=REVOCATION_TYP)
