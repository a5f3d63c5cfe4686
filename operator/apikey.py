"""Handlers of the ApiKey kind: a key made once, its hash in PostgreSQL, its plaintext in a Secret.

The plaintext exists in one place only, a Secret in the tenant's namespace
that the instance mounts; the database keeps its SHA-256. A key is never
made twice for one ApiKey: the Secret is written first (create, never
replace) and the hash recorded after it, so an operator that stops between
the two finds the Secret on restart and records its hash then. Revoking
(`spec.revoked`) or deleting the ApiKey marks the row revoked; the API stops
honouring it within its key cache's lifetime (at most a second).
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

import kopf
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from tenantry.core import keyformat
from tenantry.core.conditions import READY, condition
from tenantry.core.names import APIKEY_ANNOTATION, APIKEY_ENTRY, APIKEY_UID_LABEL, MANAGED_BY
from tenantry.core.resources import GROUP, VERSION, ApiKeyKind, ApiKeySpec, ApiKeyStatus
from tenantry.db import apikeys as repo
from tenantry.db import audit
from tenantry.db.apikeys import KeyRow
from tenantry.operator import errors, sharding
from tenantry.operator.context import Context
from tenantry.operator.errors import InvalidSpec, NotReady, retry_later
from tenantry.operator.kube import FIELD_MANAGER, Tenant
from tenantry.operator.reconcile import Logger, Reconcile, prior_status, reconciling, utcnow

REFRESH_INTERVAL = 30.0
"""Seconds between refreshes of expiry and last use in each ApiKey's status."""


def readiness(
    row: KeyRow, spec: ApiKeySpec, secret_ref: str, secret_present: bool, now: dt.datetime
) -> tuple[bool, str, str]:
    """The Ready condition of an issued key (status, reason, message). Pure."""
    if row.revoked_at is not None:
        if not spec.revoked:
            return (
                False,
                "Revoked",
                (
                    f"Key {row.key_prefix}... was revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}Z "
                    "and revocation is permanent: create a new ApiKey for a new key."
                ),
            )
        return False, "Revoked", f"Key {row.key_prefix}... is revoked."
    if row.expires_at is not None and now >= row.expires_at:
        return (
            False,
            "Expired",
            (
                f"Key {row.key_prefix}... expired at {row.expires_at:%Y-%m-%d %H:%M:%S}Z; "
                "extend spec.expiresAt or create a new ApiKey."
            ),
        )
    if not secret_present:
        return (
            False,
            "SecretMissing",
            (
                f"Secret {secret_ref} holding key {row.key_prefix}... was deleted; the key still "
                "works for whoever holds it, and cannot be shown again. Set spec.revoked, or "
                "delete and re-create the ApiKey for a new key."
            ),
        )
    return True, "Active", f"Key {row.key_prefix}... is active; its plaintext is in {secret_ref}."


@dataclass(frozen=True)
class TenantIdentity:
    uid: str
    namespace: str  # of the instance, where the key's Secret goes


class Keys:
    """The cluster and database calls of this module (the adapter)."""

    def __init__(self, ctx: Context) -> None:
        self.client = ctx.cluster.client
        self.database = ctx.database

    async def tenant(self, namespace: str, tenant: str) -> TenantIdentity:
        """The Tenant's uid and the namespace of its instance."""
        try:
            body = await self.client.get(Tenant, tenant, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                raise NotReady(
                    "TenantNotFound",
                    f"Tenant {namespace}/{tenant} does not exist (spec.tenantRef); the key is "
                    "issued once it does.",
                ) from error
            raise retry_later(error, f"Reading Tenant {namespace}/{tenant}") from error
        target = (dict(body).get("status") or {}).get("namespace")
        if not target:
            raise NotReady(
                "TenantNotReady",
                f"Tenant {namespace}/{tenant} has no namespace yet; the key is issued once the "
                "tenant is provisioned.",
            )
        uid = (body.metadata and body.metadata.uid) or ""
        return TenantIdentity(uid=uid, namespace=str(target))

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        try:
            return await self.client.get(Secret, name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise retry_later(error, f"Reading Secret {namespace}/{name}") from error

    async def create_secret(
        self, namespace: str, name: str, key: str, owner: tuple[str, str, str]
    ) -> None:
        """Create (never replace) the Secret holding a key's plaintext."""
        owner_namespace, owner_name, uid = owner
        secret = Secret(
            metadata=ObjectMeta(
                name=name,
                namespace=namespace,
                labels={**MANAGED_BY, APIKEY_UID_LABEL: uid},
                annotations={APIKEY_ANNOTATION: f"{owner_namespace}/{owner_name}"},
            ),
            type="Opaque",
            stringData={APIKEY_ENTRY: key},
        )
        try:
            await self.client.create(secret, field_manager=FIELD_MANAGER)
        except ApiError as error:
            # 409: written meanwhile (another replica); the next attempt reads it back.
            raise retry_later(error, f"Creating Secret {namespace}/{name}") from error

    async def delete_secrets_of(self, uid: str) -> list[str]:
        """Delete every Secret labelled as this ApiKey's; their `namespace/name`s.

        Found by label rather than by status: an operator stopped between
        writing the Secret and recording it leaves no `status.secretRef`.
        """
        deleted = []
        try:
            async for secret in self.client.list(
                Secret, namespace="*", labels={APIKEY_UID_LABEL: uid}
            ):
                assert secret.metadata is not None
                namespace, name = secret.metadata.namespace or "", secret.metadata.name or ""
                if await self.delete_secret(namespace, name, uid):
                    deleted.append(f"{namespace}/{name}")
        except ApiError as error:
            raise retry_later(error, f"Listing the Secrets of ApiKey {uid}") from error
        return deleted

    async def delete_secret(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the key's Secret if it is this ApiKey's; True if one was deleted."""
        secret = await self.read_secret(namespace, name)
        if (
            secret is None
            or ((secret.metadata and secret.metadata.labels) or {}).get(APIKEY_UID_LABEL) != uid
        ):
            return False
        try:
            await self.client.delete(Secret, name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return False
            raise retry_later(error, f"Deleting Secret {namespace}/{name}") from error
        return True


def _owned_key(secret: Secret, uid: str) -> str | None:
    """The plaintext in a Secret this ApiKey wrote, or None if the Secret is someone else's."""
    labels = (secret.metadata and secret.metadata.labels) or {}
    if labels.get(APIKEY_UID_LABEL) != uid:
        return None
    encoded = (secret.data or {}).get(APIKEY_ENTRY)
    key = base64.b64decode(encoded).decode() if encoded else None
    return key if key and keyformat.is_well_formed(key) else None


async def reconcile(
    ctx: Context, body: kopf.Body, logger: Logger
) -> tuple[dict[str, Any], str | None]:
    """Issue the key once, keep its row in step with the spec; return the status and,
    when the key cannot be issued yet, why (to retry)."""
    prior = prior_status(body, ApiKeyStatus)
    async with reconciling(body, prior.conditions, logger, transient_as_condition=True) as r:
        await keep(ctx, r, prior, logger)
    return r.status(), r.retry


async def keep(ctx: Context, r: Reconcile, prior: ApiKeyStatus, logger: Logger) -> None:
    body = r.body
    name, namespace, uid = body.metadata.name, body.metadata.namespace, body.metadata.uid
    assert name
    assert namespace
    assert uid
    spec = r.spec(ApiKeySpec)
    if ctx.database is None:
        raise InvalidSpec(
            "The operator has no database (TENANTRY_OPERATOR_DATABASE_URL), so it cannot "
            "issue API keys.",
            reason="DatabaseNotConfigured",
        )
    keys = Keys(ctx)
    issued_ref = None
    async with errors.database(), ctx.database.connect() as conn:
        row = await repo.find_by_resource(conn, uid)
    if row is None:
        if spec.revoked:
            raise InvalidSpec("Revoked before a key was issued; no key exists.", "Revoked")
        row, issued_ref = await _issue(ctx, keys, body, spec, logger)
    # Revocation first: it must land whatever else is wrong.
    row = await _follow_spec(ctx, body, row, spec, uid, r.now, logger)
    if row.tenant_name != spec.tenant_ref.name:
        raise InvalidSpec(
            f"spec.tenantRef cannot change once the key is issued (it acts for "
            f"{row.tenant_name}); create a new ApiKey for tenant {spec.tenant_ref.name}.",
            reason="TenantChanged",
        )
    secret_ref = issued_ref or prior.secret_ref
    if secret_ref is None or row.tenant_uid is None:
        tenant = await keys.tenant(namespace, row.tenant_name)
        if row.tenant_uid is None:
            # A key issued before keys named their Tenant's uid: this one is its Tenant.
            async with errors.database(), ctx.database.begin() as conn:
                await repo.adopt_tenant_uid(conn, uid, tenant.uid)
        secret_ref = secret_ref or f"{tenant.namespace}/{spec.secret_name or name}"
    secret_namespace, secret_name = secret_ref.split("/", 1)
    secret = await keys.read_secret(secret_namespace, secret_name)
    ok, reason, message = readiness(row, spec, secret_ref, secret is not None, r.now)
    r.observe(condition(READY, ok, reason, message))
    r.set(
        prefix=row.key_prefix,
        secretRef=secret_ref,
        expiresAt=row.expires_at.isoformat() if row.expires_at else None,
        lastUsedAt=row.last_used_at.isoformat() if row.last_used_at else None,
    )


async def _issue(
    ctx: Context, keys: Keys, body: kopf.Body, spec: ApiKeySpec, logger: Logger
) -> tuple[KeyRow, str]:
    """Write the Secret with a new key (or find the one written before a crash); record its hash."""
    name, namespace, uid = body.metadata.name, body.metadata.namespace, body.metadata.uid
    assert name
    assert namespace
    assert uid
    assert ctx.database is not None
    tenant = await keys.tenant(namespace, spec.tenant_ref.name)
    target = tenant.namespace
    secret_name = spec.secret_name or name
    existing = await keys.read_secret(target, secret_name)
    if existing is not None:
        key = _owned_key(existing, uid)
        if key is None:
            raise InvalidSpec(
                f"Secret {target}/{secret_name} already exists and is not this ApiKey's; set "
                "spec.secretName to a free name.",
                reason="SecretConflict",
            )
    else:
        key = keyformat.generate()
        await keys.create_secret(target, secret_name, key, (namespace, name, uid))
    async with errors.database(), ctx.database.begin() as conn:
        await repo.insert_key(
            conn,
            resource_uid=uid,
            resource_namespace=namespace,
            resource_name=name,
            tenant_namespace=namespace,
            tenant_name=spec.tenant_ref.name,
            tenant_uid=tenant.uid,
            key_prefix=keyformat.display_prefix(key),
            key_hash=keyformat.hash_key(key),
            scopes=spec.scopes,
            expires_at=spec.expires_at,
        )
        row = await repo.find_by_resource(conn, uid)
    assert row is not None
    message = f"Issued key {row.key_prefix}... in Secret {target}/{secret_name}"
    logger.info(message)
    kopf.info(body, reason="KeyIssued", message=message)
    return row, f"{target}/{secret_name}"


async def _follow_spec(
    ctx: Context,
    body: kopf.Body,
    row: KeyRow,
    spec: ApiKeySpec,
    uid: str,
    now: dt.datetime,
    logger: Logger,
) -> KeyRow:
    """Scopes, expiry and revocation of the row as the spec says; the row as it is now."""
    assert ctx.database is not None
    async with errors.database(), ctx.database.begin() as conn:
        await repo.update_terms(conn, uid, spec.scopes, spec.expires_at)
        # Only the revocation that changed the row is audited: the dashboard's, patching
        # spec.revoked in its own transaction, may have revoked it since `row` was read.
        if spec.revoked and row.revoked_at is None and await repo.revoke_first(conn, uid, now):
            by = audit.kubernetes(body.metadata.get("managedFields"), "f:revoked")
            tenant = f"{row.tenant_namespace}/{row.tenant_name}"
            about = {"prefix": row.key_prefix, "api_key": uid}
            await audit.record(conn, by, "api_key.revoked", tenant, about)
            message = f"Revoked key {row.key_prefix}..."
            logger.info(message)
            kopf.info(body, reason="KeyRevoked", message=message)
        fresh = await repo.find_by_resource(conn, uid)
    assert fresh is not None
    return fresh


async def finalize(ctx: Context, body: kopf.Body, logger: Logger) -> None:
    """Revoke the key and delete its Secret; the ApiKey goes only once both are done."""
    uid = body.metadata.uid
    assert uid
    if ctx.database is not None:
        async with errors.database(), ctx.database.begin() as conn:
            row = await repo.find_by_resource(conn, uid)
            if row is not None:
                await repo.revoke(conn, uid, utcnow())
        if row is not None and row.revoked_at is None:
            logger.info(f"Revoked key {row.key_prefix}... of deleted ApiKey")
    for secret_ref in await Keys(ctx).delete_secrets_of(uid):
        logger.info(f"Deleted Secret {secret_ref}")


def register(registry: kopf.OperatorRegistry, ctx_of: Any) -> None:
    """Register the ApiKey handlers. `ctx_of(memo)` returns the operator's Context."""
    apikeys = (GROUP, VERSION, ApiKeyKind.plural)

    async def run(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any) -> None:
        if body.metadata.get("deletionTimestamp"):
            return
        ctx = ctx_of(memo)
        async with ctx.lock(("ApiKey", body.metadata.namespace, body.metadata.name)):
            status, retry = await reconcile(ctx, body, logger)
        patch.status.update(status)
        if retry:
            raise kopf.TemporaryError(retry, delay=2)

    @kopf.on.resume(*apikeys, id="reconcile", when=sharding.tenant_parts, registry=registry)
    @kopf.on.create(*apikeys, id="reconcile", when=sharding.tenant_parts, registry=registry)
    @kopf.on.update(*apikeys, id="reconcile", when=sharding.tenant_parts, registry=registry)
    @errors.boundary
    async def reconcile_apikey(
        body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any, **_: Any
    ) -> None:
        await run(body, memo, patch, logger)

    @kopf.timer(*apikeys, id="refresh", interval=REFRESH_INTERVAL, initial_delay=REFRESH_INTERVAL,
                when=sharding.tenant_parts, registry=registry)  # fmt: skip
    @errors.boundary
    async def refresh_apikey(
        body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any, **_: Any
    ) -> None:
        # Expiry passes and last use moves without any change to the object.
        await run(body, memo, patch, logger)

    @kopf.on.delete(*apikeys, id="finalize", when=sharding.tenant_parts, registry=registry)
    @errors.boundary
    async def delete_apikey(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        ctx = ctx_of(memo)
        async with ctx.lock(("ApiKey", body.metadata.namespace, body.metadata.name)):
            await finalize(ctx, body, logger)
