"""The instance SDK: what a customer instance does with Tenantry, beside `tenantry.license`.

Installs alone (`pip install tenantry[sdk]`: the license library's dependencies
and httpx, nothing of the server). See ``README.md`` next to this file.

- :class:`Client` ties it together: ``license()`` (fetched, verified, cached,
  renewed), ``record()`` (usage through a durable SQLite queue, sent in the
  background, counted once), ``consume()`` and ``quotas()``, ``heartbeat()``.
- The exceptions are one tree under :class:`TenantryError` (see ``_errors.py``).
"""

from tenantry.sdk._client import Client, Consumed, Figure, Health
from tenantry.sdk._errors import (
    ApiKeyRejected,
    ApiUnavailable,
    AuthError,
    InvalidRequest,
    LicenseUnavailable,
    PermissionDenied,
    QuotaExceeded,
    TenantryError,
)
from tenantry.sdk._queue import Parked
from tenantry.sdk._sender import backoff

__all__ = [
    "ApiKeyRejected",
    "ApiUnavailable",
    "AuthError",
    "Client",
    "Consumed",
    "Figure",
    "Health",
    "InvalidRequest",
    "LicenseUnavailable",
    "Parked",
    "PermissionDenied",
    "QuotaExceeded",
    "TenantryError",
    "backoff",
]
