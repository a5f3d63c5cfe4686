"""Offline license issuing and verification for Tenantry.

A customer instance needs only this package (stdlib, PyJWT, cryptography,
pydantic). See ``README.md`` next to this file for a walk-through.

Issuer side: :class:`SigningKey` / :class:`KeyRing`, :func:`new_license_claims`,
:func:`issue`, :func:`issue_revocation_list`.
Instance side: :class:`KeySet`, :func:`verify` -> :class:`LicenseStatus`, and the
guards on :class:`Entitlements`.
"""

from ._claims import (
    UNLIMITED,
    EpochDateTime,
    LicenseClaims,
    Plan,
    Subscription,
    SubscriptionStatus,
    Tenant,
    Trial,
    is_unlimited,
    new_jti,
    new_license_claims,
)
from ._errors import (
    EntitlementError,
    FeatureNotAvailable,
    KeyLoadError,
    KeyRingError,
    LicenseError,
    LimitExceeded,
    RevocationListError,
)
from ._guards import (
    FEATURE_DATA_EXPORT,
    FEATURE_JOBS,
    FEATURE_OTA_UPDATES,
    FEATURE_SCHEDULED_JOBS,
    LIMIT_DEVICES,
    UNLICENSED_ENTITLEMENTS,
    UNLICENSED_EVALUATION_PERIOD,
    Entitlements,
)
from ._jws import LICENSE_TYP, REVOCATION_TYP, InvalidReason
from ._keyring import KeyRecord, KeyRing
from ._keys import (
    ALLOWED_ALGORITHMS,
    Algorithm,
    KeySet,
    SigningKey,
    VerificationKey,
    jwk_thumbprint,
)
from ._revocation import RevocationList, issue_revocation_list
from ._verify import (
    DEFAULT_LEEWAY,
    LicenseState,
    LicenseStatus,
    issue,
    sha256_token,
    verify,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_LEEWAY",
    "FEATURE_DATA_EXPORT",
    "FEATURE_JOBS",
    "FEATURE_OTA_UPDATES",
    "FEATURE_SCHEDULED_JOBS",
    "LICENSE_TYP",
    "LIMIT_DEVICES",
    "REVOCATION_TYP",
    "UNLICENSED_ENTITLEMENTS",
    "UNLICENSED_EVALUATION_PERIOD",
    "UNLIMITED",
    "Algorithm",
    "EntitlementError",
    "Entitlements",
    "EpochDateTime",
    "FeatureNotAvailable",
    "InvalidReason",
    "KeyLoadError",
    "KeyRecord",
    "KeyRing",
    "KeyRingError",
    "KeySet",
    "LicenseClaims",
    "LicenseError",
    "LicenseState",
    "LicenseStatus",
    "LimitExceeded",
    "Plan",
    "RevocationList",
    "RevocationListError",
    "SigningKey",
    "Subscription",
    "SubscriptionStatus",
    "Tenant",
    "Trial",
    "VerificationKey",
    "is_unlimited",
    "issue",
    "issue_revocation_list",
    "jwk_thumbprint",
    "new_jti",
    "new_license_claims",
    "sha256_token",
    "verify",
]
