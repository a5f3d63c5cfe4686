"""Signed, expiring links: a URL that is its own credential, for one purpose and one subject.

A token is `<payload>.<mac>`, both base64url: the payload is the purpose, the
subject (e.g. `namespace/name` of a Tenant) and the expiry; the MAC is
HMAC-SHA256 under a key derived from the admin token, so there is no new
secret to keep, and rotating the admin token withdraws every link. A token made
for one purpose never opens another.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json

from tenantry.api.errors import Forbidden

_DERIVATION = b"tenantry signed links v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Links:
    def __init__(self, admin_token: str) -> None:
        self._key = hmac.new(admin_token.encode(), _DERIVATION, hashlib.sha256).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, subject: str, expires_at: dt.datetime) -> str:
        claims = {"p": purpose, "s": subject, "e": int(expires_at.timestamp())}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def subject(self, purpose: str, token: str, now: dt.datetime) -> str:
        """The subject a valid, unexpired token for `purpose` names; Forbidden otherwise."""
        payload, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(payload)):
            raise Forbidden(
                "This link is not valid: it was changed, or made with another admin token. "
                "Ask for a new one.",
                code="invalid_link",
            )
        try:
            claims = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            raise Forbidden(
                "This link is not valid. Ask for a new one.", code="invalid_link"
            ) from None
        if claims.get("p") != purpose:
            raise Forbidden(
                "This link is for something else. Ask for a new one.", code="invalid_link"
            )
        expires = dt.datetime.fromtimestamp(int(claims["e"]), dt.UTC)
        if now >= expires:
            raise Forbidden(
                f"This link expired at {expires.isoformat()}. Ask for a new one.",
                code="link_expired",
                details={"expired_at": expires.isoformat()},
            )
        return str(claims["s"])
