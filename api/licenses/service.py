"""License material from the operator's Secrets; public keys only ever leave here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tenantry import license as lic
from tenantry.api.errors import NotFound
from tenantry.api.licenses.schemas import LicenseDocument
from tenantry.api.settings import ApiSettings
from tenantry.api.tenants.catalog import Tenant, TtlCache
from tenantry.api.tenants.kube import Kube

LICENSE_KEY = "license.jwt"
REVOCATIONS_KEY = "revocations.jwt"
_A = "tenantry.io/"


@dataclass(frozen=True)
class PublicKeys:
    keys: lic.KeySet
    active_kid: str


class LicenseService:
    def __init__(self, kube: Kube, settings: ApiSettings, ttl: float = 30.0) -> None:
        self.kube = kube
        self.settings = settings
        self._keys: TtlCache[str, PublicKeys | None] = TtlCache(
            ttl, self._read_keys, "signing keys"
        )

    async def _read_keys(self, _: str) -> PublicKeys | None:
        settings = self.settings
        data = await self.kube.secret_data(settings.namespace, settings.signing_key_secret)
        if data is None:
            return None
        ring = lic.KeyRing.from_secret_data(data)
        # Keep the public halves only; the ring with its private keys is dropped here.
        return PublicKeys(ring.public_keys(), ring.active.kid)

    async def public_keys(self) -> PublicKeys:
        keys = await self._keys.get("ring")
        if keys is None:
            raise NotFound(
                "No signing keys are published yet: the operator creates them when it first "
                "starts. Retry once the operator is running.",
                code="signing_keys_not_found",
            )
        return keys

    async def public_pem(self, kid: str | None) -> tuple[str, bytes]:
        keys = await self.public_keys()
        wanted = kid or keys.active_kid
        key = keys.keys.get(wanted)
        if key is None:
            raise NotFound(
                f"No published key has kid {wanted!r}; known: {', '.join(keys.keys.kids)}.",
                code="key_not_found",
            )
        return wanted, key.public_pem()

    async def revocation_list(self) -> str:
        data = await self.kube.secret_data(self.settings.namespace, self.settings.revocation_secret)
        token = (data or {}).get(REVOCATIONS_KEY)
        if not token:
            raise NotFound(
                "No revocation list has been published yet, so no license is revoked. Keep "
                "checking licenses against their signature and expiry, and retry later.",
                code="revocation_list_not_found",
            )
        return token.strip()

    async def license_for(self, tenant: Tenant) -> LicenseDocument:
        found = None
        if tenant.instance_namespace:
            found = await self.kube.secret(tenant.instance_namespace, self.settings.license_secret)
        data, annotations = found or ({}, {})
        token = data.get(LICENSE_KEY)
        if not token:
            raise NotFound(
                f"No license has been issued to tenant {tenant.key} yet; the operator issues "
                "one once the tenant is provisioned (see `kubectl get tenant`). Retry later.",
                code="license_not_found",
            )
        return LicenseDocument(
            license=token.strip(),
            license_id=annotations.get(_A + "license-id"),
            plan=annotations.get(_A + "plan"),
            issued_at=_time(annotations.get(_A + "issued-at")),
            expires_at=_time(annotations.get(_A + "expires-at")),
        )


def _time(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
