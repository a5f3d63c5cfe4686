"""The SDK's exceptions, one tree (each carries what the API said)::

TenantryError                 anything the SDK raises about the API
├── AuthError                 the API refuses the key: not retried, fix the key
│   ├── ApiKeyRejected        401: unknown, revoked, expired or malformed key
│   └── PermissionDenied      403: a scope is missing, the subscription ended,
│                             the license was revoked (`code` says which)
├── InvalidRequest            400, 413, 422: the request itself is wrong; retrying
│                             it unchanged fails the same way
├── QuotaExceeded             429 from a quota check: over the plan's limit
├── ApiUnavailable            no answer, a timeout, 5xx or a rate limit: retry later
│                             (`retry_after`, when the API said)
└── LicenseUnavailable        no usable license, online or cached
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TenantryError(Exception):
    """The API's answer as an exception: the HTTP `status` (None without an answer), its
    stable `code`, `message` for people and structured `details`."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = dict(details or {})


class AuthError(TenantryError):
    """The key is not accepted for this: retrying will not help until the key changes."""


class ApiKeyRejected(AuthError):
    pass


class PermissionDenied(AuthError):
    pass


class InvalidRequest(TenantryError):
    pass


class QuotaExceeded(TenantryError):
    pass


class ApiUnavailable(TenantryError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class LicenseUnavailable(TenantryError):
    pass
