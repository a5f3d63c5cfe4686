"""The instance's license: fetched from the API, verified, cached on disk, renewed early.

The cache holds only a token that verified; a token the API serves that does
not verify is refused, and the cached one kept. Renewal starts once two thirds
of the license's lifetime have passed (and at least once per `refresh_interval`,
so a plan change shows), and a failed renewal is not retried more often than
every `retry_interval`: offline, the cached license keeps working through its
grace period, and `status()` never waits on a network that is away for long.

Keys: pass `keys` (a `KeySet` shipped with the instance) to trust only those.
Without them the SDK trusts the API's published JWKS on first use (fetched over
the same HTTPS as the license, cached beside it, fetched again for an unknown
`kid` after a key rotation).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tenantry import license as lic
from tenantry.sdk._errors import (
    ApiUnavailable,
    LicenseUnavailable,
    PermissionDenied,
    TenantryError,
)
from tenantry.sdk._transport import Transport

log = logging.getLogger("tenantry.sdk")

LICENSE_FILE = "license.jwt"
JWKS_FILE = "jwks.json"


def renewal_due(status: lic.LicenseStatus, now: dt.datetime) -> bool:
    """Whether a license should be fetched again: none, not valid, or in the last third of
    its lifetime."""
    if status.state is not lic.LicenseState.VALID or status.claims is None:
        return True
    claims = status.claims
    return now >= claims.iat + (claims.exp - claims.iat) * 2 / 3


def write_private(path: Path, content: str) -> None:
    """Replace a file atomically, readable by its owner only."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


class LicenseKeeper:
    def __init__(
        self,
        transport: Transport,
        directory: Path,
        *,
        keys: lic.KeySet | None,
        issuer: str,
        audience: str,
        grace: dt.timedelta,
        refresh_interval: float = 3600.0,
        retry_interval: float = 30.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.transport = transport
        self.directory = directory
        self.pinned = keys
        self.issuer = issuer
        self.audience = audience
        self.grace = grace
        self.refresh_interval = refresh_interval
        self.retry_interval = retry_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._token = self._read(LICENSE_FILE)
        self._keys = keys or self._cached_keys()
        self._fetched = float("-inf")  # monotonic time of the last fetch that worked
        self._tried = float("-inf")  # ... of the last try

    def status(self) -> lic.LicenseStatus:
        """The license's status now, renewed first when due and the API answers."""
        with self._lock:
            current = self._verify(self._token)
            since = time.monotonic()
            due = renewal_due(current, self.clock()) or (
                since - self._fetched >= self.refresh_interval
            )
            if not due or since - self._tried < self.retry_interval:
                return current
            try:
                return self._fetch()
            except ApiUnavailable as error:
                log.warning("License not renewed (%s); using the cached one: %s",
                            error.message, current.state.value)  # fmt: skip
            except LicenseUnavailable as error:
                log.error("License not renewed: %s", error.message)
            except PermissionDenied as error:
                if error.code == "license_revoked":
                    log.error("The license was revoked: %s", error.message)
                    self._forget()
                    return self._verify(None)
                raise
            return current

    def refresh(self) -> lic.LicenseStatus:
        """Fetch the license now, whatever the cache holds; raises what went wrong."""
        with self._lock:
            return self._fetch()

    def _fetch(self) -> lic.LicenseStatus:
        self._tried = time.monotonic()
        try:
            document = self.transport.call("GET", "/v1/license")
        except TenantryError as error:
            if error.status == 404:
                raise LicenseUnavailable(error.message, status=404, code=error.code) from error
            raise
        token = str(document["license"])
        status = self._verify(token)
        if status.reason_code is lic.InvalidReason.UNKNOWN_KID and self.pinned is None:
            self._keys = self._fetch_keys()  # the signing key was rotated
            status = self._verify(token)
        if not status.usable:
            raise LicenseUnavailable(
                f"The API served a license that is not usable ({status.state.value}: "
                f"{status.reason}); kept the cached one.",
                code=status.reason_code.value if status.reason_code else status.state.value,
            )
        write_private(self.directory / LICENSE_FILE, token)
        self._token = token
        self._fetched = time.monotonic()
        log.info("License %s fetched (%s, expires %s)", status.claims.jti if status.claims else "",
                 status.state.value, status.expires_at)  # fmt: skip
        return status

    def _verify(self, token: str | None) -> lic.LicenseStatus:
        keys = self._keys
        if keys is None:
            try:
                keys = self._keys = self._fetch_keys()
            except TenantryError as error:
                log.warning("No verification keys yet (%s)", error.message)
                keys = lic.KeySet([])  # nothing verifies: the unlicensed fallback, for now
        return lic.verify(token, keys, issuer=self.issuer, audience=self.audience,
                          now=self.clock(), grace=self.grace)  # fmt: skip

    def _fetch_keys(self) -> lic.KeySet:
        jwks = self.transport.call("GET", "/v1/license/jwks.json")
        try:
            keys = lic.KeySet.from_jwks(jwks)
        except lic.KeyLoadError as error:
            raise LicenseUnavailable(f"The API's JWKS cannot be used: {error}") from error
        write_private(self.directory / JWKS_FILE, json.dumps(jwks))
        return keys

    def _cached_keys(self) -> lic.KeySet | None:
        cached = self._read(JWKS_FILE)
        try:
            return lic.KeySet.from_jwks(json.loads(cached)) if cached else None
        except (ValueError, lic.KeyLoadError):
            return None

    def _read(self, name: str) -> str | None:
        try:
            return (self.directory / name).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def _forget(self) -> None:
        self._token = None
        (self.directory / LICENSE_FILE).unlink(missing_ok=True)
