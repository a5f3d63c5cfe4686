"""The license signing keys and the revocation list, each kept in a Secret.

Both are read-modify-write objects shared by every operator replica and by
`tenantry keys rotate`: writes carry the resourceVersion they read, and a
conflict is retried on fresh data rather than overwriting another writer.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret

from tenantry import license as lic
from tenantry.core.names import (
    ACTIVE_KID_ENTRY,
    JWKS_ENTRY,
    MANAGED_BY,
    PUBLIC_KEYS_LABEL,
    REVOCATIONS_INDEX_ENTRY,
    REVOCATIONS_JWT_ENTRY,
    REVOCATIONS_LABEL,
    SIGNING_KEYS_LABEL,
)

_ATTEMPTS = 5


def _decode(data: Mapping[str, str] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


async def _update_secret(
    client: AsyncClient,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    change: Callable[[dict[str, str] | None], Awaitable[dict[str, str]]],
) -> dict[str, str]:
    """Create or replace a Secret from its current (decoded) data, retrying on conflict."""
    for _ in range(_ATTEMPTS):
        try:
            current = await client.get(Secret, name, namespace=namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            current = None
        data = await change(_decode(current.data) if current else None)
        secret = Secret(
            metadata=ObjectMeta(
                name=name,
                namespace=namespace,
                labels={**MANAGED_BY, **labels},
                resourceVersion=current.metadata.resourceVersion
                if current and current.metadata
                else None,
            ),
            type="Opaque",
            stringData=data,
        )
        try:
            if current is None:
                await client.create(secret)
            else:
                await client.replace(secret)
        except ApiError as error:
            if error.status.code == 409:
                continue  # someone else wrote first: redo the change on their data
            raise
        return data
    raise kopf.TemporaryError(f"Secret {namespace}/{name} kept changing under us", delay=1)


async def ensure_namespace(client: AsyncClient, name: str) -> None:
    try:
        await client.create(Namespace(metadata=ObjectMeta(name=name)))
    except ApiError as error:
        if error.status.code != 409:
            raise


@dataclass
class SigningKeys:
    """The key ring in its Secret, re-read only when the Secret changed.

    Its public halves are published in a ConfigMap of their own, so that
    whatever serves them (the API) never needs to read the private keys.
    """

    client: AsyncClient
    namespace: str
    name: str
    algorithm: lic.Algorithm = "RS256"
    public_name: str = "tenantry-public-keys"
    _ring: lic.KeyRing | None = None
    _version: str | None = None

    async def current(self) -> lic.KeyRing:
        """The ring as stored now; created (by exactly one writer) when missing."""
        try:
            secret = await self.client.get(Secret, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            await ensure_namespace(self.client, self.namespace)
            await self._write(self._create_if_missing)
            return await self.current()
        version = secret.metadata.resourceVersion if secret.metadata else None
        if self._ring is None or version != self._version:
            ring = lic.KeyRing.from_secret_data(_decode(secret.data))
            await self.publish(ring)
            self._ring, self._version = ring, version
        return self._ring

    async def publish(self, ring: lic.KeyRing) -> None:
        """Write the public keys (a JWKS) and the active kid to their ConfigMap."""
        config_map = ConfigMap(
            metadata=ObjectMeta(
                name=self.public_name,
                namespace=self.namespace,
                labels={**MANAGED_BY, **PUBLIC_KEYS_LABEL},
            ),
            data={
                JWKS_ENTRY: json.dumps(ring.public_keys().to_jwks(), sort_keys=True),
                ACTIVE_KID_ENTRY: ring.active.kid,
            },
        )
        await self.client.apply(config_map, field_manager="tenantry-operator", force=True)

    async def rotate(
        self, now: dt.datetime, *, license_ttl: dt.timedelta, grace: dt.timedelta
    ) -> tuple[str, list[str]]:
        """Make a new key the signer; drop retired keys no live license can need.

        A key retired at T signed nothing after T, so no license it signed
        outlives T + license_ttl: past that (plus the instances' grace) it goes.
        """
        outcome: dict[str, object] = {}

        async def change(data: dict[str, str] | None) -> dict[str, str]:
            ring = (
                lic.KeyRing.from_secret_data(data)
                if data
                else lic.KeyRing.create(now, self.algorithm)
            )
            outcome["kid"] = ring.rotate(now, self.algorithm).kid
            for record in ring.records:
                if record.retired_at is not None:
                    ring.note_signed(record.kid, record.retired_at + license_ttl)
            outcome["dropped"] = ring.prune(now, grace)
            outcome["ring"] = ring
            return ring.to_secret_data()

        await self._write(change)
        await self.publish(outcome["ring"])  # type: ignore[arg-type]
        return str(outcome["kid"]), list(outcome["dropped"])  # type: ignore[call-overload]

    async def _create_if_missing(self, data: dict[str, str] | None) -> dict[str, str]:
        if data:
            return data
        return lic.KeyRing.create(dt.datetime.now(dt.UTC), self.algorithm).to_secret_data()

    async def _write(
        self, change: Callable[[dict[str, str] | None], Awaitable[dict[str, str]]]
    ) -> None:
        await _update_secret(self.client, self.namespace, self.name, SIGNING_KEYS_LABEL, change)


@dataclass(frozen=True)
class Revocation:
    jti: str
    expires_at: dt.datetime
    tenant: str
    reason: str


def revoked_after(
    entries: list[Revocation], new: Revocation, now: dt.datetime, retention: dt.timedelta
) -> list[Revocation]:
    """The list with `new` added, minus licenses long past their own expiry."""
    kept = [e for e in entries if e.jti != new.jti and e.expires_at + retention >= now]
    return [*kept, new]


@dataclass
class RevocationList:
    """The signed list of revoked license ids instances fetch (via the API)."""

    client: AsyncClient
    namespace: str
    name: str
    issuer: str
    retention: dt.timedelta

    async def ensure_published(self, keys: SigningKeys, now: dt.datetime) -> None:
        """Publish an empty signed list on first start, so instances always find one."""
        ring = await keys.current()

        async def change(data: dict[str, str] | None) -> dict[str, str]:
            if data and REVOCATIONS_JWT_ENTRY in data:
                return data
            token = lic.issue_revocation_list([], ring.active, now, self.issuer)
            return {REVOCATIONS_JWT_ENTRY: token, REVOCATIONS_INDEX_ENTRY: "[]"}

        await ensure_namespace(self.client, self.namespace)
        await _update_secret(self.client, self.namespace, self.name, REVOCATIONS_LABEL, change)

    async def revoke(self, revocation: Revocation, keys: SigningKeys, now: dt.datetime) -> None:
        ring = await keys.current()

        async def change(data: dict[str, str] | None) -> dict[str, str]:
            entries = [
                Revocation(
                    jti=e["jti"],
                    expires_at=dt.datetime.fromisoformat(e["expiresAt"]),
                    tenant=e["tenant"],
                    reason=e["reason"],
                )
                for e in json.loads((data or {}).get(REVOCATIONS_INDEX_ENTRY, "[]"))
            ]
            entries = revoked_after(entries, revocation, now, self.retention)
            token = lic.issue_revocation_list(
                [e.jti for e in entries], ring.active, now, self.issuer
            )
            index = [
                {
                    "jti": e.jti,
                    "expiresAt": e.expires_at.isoformat(),
                    "tenant": e.tenant,
                    "reason": e.reason,
                }
                for e in entries
            ]
            return {REVOCATIONS_JWT_ENTRY: token, REVOCATIONS_INDEX_ENTRY: json.dumps(index)}

        await ensure_namespace(self.client, self.namespace)
        await _update_secret(self.client, self.namespace, self.name, REVOCATIONS_LABEL, change)
