"""Revoking an API key from the dashboard: the revocation `kubectl patch apikey` makes
(`spec.revoked: true`), with the key refused by the API at once.

Invariant: both or neither. The key's row is revoked, and the revocation audited,
in a transaction that commits only after the API server has taken the ApiKey's
patch. When Kubernetes refuses or cannot be reached the transaction rolls back:
the key still works, the ApiKey still reads as live, and the page says so; the
cluster and the database never disagree. The operator, seeing `spec.revoked`,
finds the row revoked already and changes nothing (the first revocation counts,
and is the only one in the audit trail); should the commit fail after the patch,
the operator revokes the row itself. A key revoked in the database alone (as the
dashboard once did) is patched all the same, so its ApiKey catches up.
"""

from __future__ import annotations

import datetime as dt

from tenantry.api.dashboard.cluster import FIELD_MANAGER, mark_revoked
from tenantry.api.errors import NotFound, Unavailable
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Tenant
from tenantry.db import apikeys as apikeys_repo
from tenantry.db import audit
from tenantry.db.apikeys import KeyRow
from tenantry.db.audit import Actor


async def revoke(rt: Runtime, tenant: Tenant, key_id: int, by: Actor, now: dt.datetime) -> KeyRow:
    """Revoke the tenant's key `key_id` (see the module's docstring); the key as it was.
    503 `kubernetes_unavailable`, with nothing changed, when its ApiKey cannot be patched."""
    async with rt.engine.begin() as conn:
        rows = await apikeys_repo.list_for_tenant(conn, tenant.namespace, tenant.name, tenant.uid)
        row = next((r for r in rows if r.id == key_id), None)
        if row is None or row.resource_uid is None:
            raise NotFound(
                f"Tenant {tenant.key} has no API key {key_id}.", code="api_key_not_found"
            )
        if await apikeys_repo.revoke_first(conn, row.resource_uid, now):
            await audit.record(conn, by, "api_key.revoked", tenant.key,
                               {"prefix": row.key_prefix, "api_key": row.resource_uid})  # fmt: skip
        try:
            await mark_revoked(
                rt.kube.client, row.resource_namespace, row.resource_name, row.resource_uid
            )
        except Unavailable as error:
            raise not_revoked(row, str(error.details.get("reason", ""))) from error
    return row


def not_revoked(row: KeyRow, reason: str) -> Unavailable:
    where = f"{row.resource_namespace}/{row.resource_name}"
    return Unavailable(
        f"Key {row.key_prefix}… was NOT revoked: its ApiKey {where} could not be marked revoked "
        f"in Kubernetes ({reason}). The key still works. Try again once Kubernetes answers, or "
        f"run: kubectl patch apikey {row.resource_name} -n {row.resource_namespace} "
        """--type merge -p '{"spec":{"revoked":true}}'""",
        code="kubernetes_unavailable",
        details={"reason": reason, "apiKey": where, "fieldManager": FIELD_MANAGER},
        headers={"Retry-After": "5"},
    )
