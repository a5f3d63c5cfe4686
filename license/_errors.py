"""Exception hierarchy of :mod:`tenantry.license`.

Everything raised on purpose by this package derives from :class:`LicenseError`,
so a caller can catch one type at its boundary::

    LicenseError
    ├── KeyLoadError          a PEM/JWK could not be loaded, or the key type is unsupported
    ├── KeyRingError          a key ring is inconsistent (no active key, bad Secret data, ...)
    ├── RevocationListError   a revocation list token failed verification
    └── EntitlementError      a guard refused an action (carries ``.details``)
        ├── FeatureNotAvailable
        └── LimitExceeded

:func:`tenantry.license.verify` never raises for a bad license token: it returns a
:class:`~tenantry.license.LicenseStatus` instead.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EntitlementError",
    "FeatureNotAvailable",
    "KeyLoadError",
    "KeyRingError",
    "LicenseError",
    "LimitExceeded",
    "RevocationListError",
]


class LicenseError(Exception):
    """Base class of every error this package raises on purpose."""


class KeyLoadError(LicenseError):
    """A key could not be loaded: bad PEM or JWK, encrypted, or an unsupported type/size."""


class KeyRingError(LicenseError):
    """A key ring is inconsistent, or its serialised form cannot be read back."""


class RevocationListError(LicenseError):
    """A revocation list token is malformed, unsigned by a known key, or from the wrong issuer."""


class EntitlementError(LicenseError):
    """An action is not allowed by the current entitlements.

    ``str(error)`` is a sentence meant for the end user; ``details`` is a JSON-ready
    dict for APIs (always has ``code`` and ``message``).
    """

    code: str = "entitlement_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self._details = details

    @property
    def details(self) -> dict[str, Any]:
        """Structured, JSON-serialisable description of the refusal."""
        return {"code": self.code, "message": self.message, **self._details}


class FeatureNotAvailable(EntitlementError):
    """The feature is not part of the plan (or of the unlicensed fallback)."""

    code = "feature_not_available"


class LimitExceeded(EntitlementError):
    """Adding one more item would go over the plan's limit."""

    code = "limit_exceeded"
