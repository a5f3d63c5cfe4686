"""License material the operator publishes: public keys, licenses, the revocation list.

The public keys come from a ConfigMap the operator writes beside the signing
keys, so this service never reads a private key.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from lightkube.core.exceptions import ApiError as KubeApiError
from lightkube.resources.core_v1 import ConfigMap

from tenantry import license as lic
from tenantry.api.errors import Forbidden, NotFound
from tenantry.api.licenses.schemas import LicenseDocument
from tenantry.api.settings import ApiSettings
from tenantry.api.tenants.catalog import SubscriptionEnd, Tenant, TtlCache
from tenantry.api.tenants.kube import Kube
from tenantry.core.names import (
    ACTIVE_KID_ENTRY,
    EXPIRES_AT_ANNOTATION,
    ISSUED_AT_ANNOTATION,
    JWKS_ENTRY,
    LICENSE_ENTRY,
    LICENSE_ID_ANNOTATION,
    PLAN_ANNOTATION,
    REVOCATIONS_JWT_ENTRY,
    REVOKED_LICENSE_ANNOTATION,
)

REVOCATIONS_URL = "/v1/license/revocations"


@dataclass(frozen=True)
class PublicKeys:
    keys: lic.KeySet
    active_kid: str


class LicenseService:
    def __init__(
        self, kube: Kube, settings: ApiSettings, ttl: float = 30.0, document_ttl: float = 2.0
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._keys: TtlCache[str, PublicKeys | None] = TtlCache(ttl, self._read_keys, "public keys")
        # Short caches: a re-issued license or a new revocation shows within
        # seconds, and instances polling cannot flood the Kubernetes API.
        self._revocations: TtlCache[str, str | None] = TtlCache(
            document_ttl, self._read_revocations, "revocation list"
        )
        self._licenses: TtlCache[str, tuple[dict[str, str], dict[str, str]] | None] = TtlCache(
            document_ttl, self._read_license, "license of"
        )

    async def _read_keys(self, _: str) -> PublicKeys | None:
        settings = self.settings
        try:
            config_map = await self.kube.client.get(
                ConfigMap, settings.public_keys_configmap, namespace=settings.namespace
            )
        except KubeApiError as error:
            if error.status.code == 404:
                return None
            raise
        data = config_map.data or {}
        if JWKS_ENTRY not in data or ACTIVE_KID_ENTRY not in data:
            return None
        return PublicKeys(
            lic.KeySet.from_jwks(json.loads(data[JWKS_ENTRY])), data[ACTIVE_KID_ENTRY]
        )

    async def _read_revocations(self, _: str) -> str | None:
        data = await self.kube.secret_data(self.settings.namespace, self.settings.revocation_secret)
        return (data or {}).get(REVOCATIONS_JWT_ENTRY)

    async def _read_license(self, namespace: str) -> tuple[dict[str, str], dict[str, str]] | None:
        return await self.kube.secret(namespace, self.settings.license_secret)

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
        token = await self._revocations.get("list")
        if not token:
            raise NotFound(
                "No revocation list has been published yet, so no license is revoked. Keep "
                "checking licenses against their signature and expiry, and retry later.",
                code="revocation_list_not_found",
            )
        return token.strip()

    async def license_for(self, tenant: Tenant, now: dt.datetime) -> LicenseDocument:
        """The license in the tenant's Secret; 403 `license_revoked` once its subscription
        has ended (at once, before the operator has cleared the Secret) or the operator
        has revoked it without issuing another."""
        found = None
        if tenant.instance_namespace:
            found = await self._licenses.get(tenant.instance_namespace)
        data, annotations = found or ({}, {})
        token = data.get(LICENSE_ENTRY)
        end = tenant.ended(now)
        revoked_id = annotations.get(REVOKED_LICENSE_ANNOTATION)
        if end is not None or (revoked_id and not token):
            raise license_revoked(tenant, annotations.get(LICENSE_ID_ANNOTATION) or revoked_id, end)
        if not token:
            raise NotFound(
                f"No license has been issued to tenant {tenant.key} yet; the operator issues "
                "one once the tenant is provisioned (see `kubectl get tenant`). Retry later.",
                code="license_not_found",
            )
        return LicenseDocument(
            license=token.strip(),
            license_id=annotations.get(LICENSE_ID_ANNOTATION),
            plan=annotations.get(PLAN_ANNOTATION),
            issued_at=_time(annotations.get(ISSUED_AT_ANNOTATION)),
            expires_at=_time(annotations.get(EXPIRES_AT_ANNOTATION)),
        )


def license_revoked(
    tenant: Tenant, license_id: str | None, end: SubscriptionEnd | None
) -> Forbidden:
    """403 with the state `tenantry.license.verify` gives a revoked license: `revoked`."""
    which = f"license {license_id}" if license_id else "license"
    why = (
        f"{end.describe()}, so the tenant's {which} is revoked"
        if end is not None
        else f"The {which} of tenant {tenant.key} was revoked and no other has been issued"
    )
    return Forbidden(
        f"{why}. Its instance falls back to unlicensed; the signed revocation list at "
        f"{REVOCATIONS_URL} lists it once the operator has published it. A new Subscription "
        "brings a new license.",
        code="license_revoked",
        details={
            "state": lic.LicenseState.REVOKED.value,
            "tenant": tenant.key,
            "license_id": license_id,
            "reason": "subscription_ended" if end is not None else "revoked",
            "subscription": end.subscription if end is not None else None,
            "ended_at": end.at.isoformat() if end is not None else None,
            "revocation_list_url": REVOCATIONS_URL,
        },
    )


def _time(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
