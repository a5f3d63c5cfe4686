"""All SQL of license history. The operator records; the admin surface reads."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

LicenseAction = Literal["issued", "renewed", "reissued", "revoked"]


@dataclass(frozen=True)
class LicenseRecord:
    id: int
    tenant_namespace: str
    tenant_name: str
    tenant_uid: str
    license_id: str
    action: str
    plan: str
    features: dict[str, Any]
    limits: dict[str, Any]
    token_sha256: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime
    recorded_at: dt.datetime


async def record_license(
    conn: AsyncConnection | AsyncSession,
    *,
    tenant_namespace: str,
    tenant_name: str,
    tenant_uid: str,
    license_id: str,
    action: LicenseAction,
    plan: str,
    features: Mapping[str, bool],
    limits: Mapping[str, int],
    token_sha256: str | None,
    issued_at: dt.datetime,
    expires_at: dt.datetime,
    unknown_only: bool = False,
) -> bool:
    """Record a license the operator signed (or revoked); never the token, only its hash.

    Idempotent per (license_id, action): a reconcile retried after a crash
    records nothing twice. With `unknown_only`, an `issued` row is added only for a
    license with no row at all (one delivered by an operator that died before it
    recorded it). True when a row was added. The caller commits.
    """
    result = await conn.execute(
        text(
            "INSERT INTO license_history (tenant_namespace, tenant_name, tenant_uid, license_id,"
            " action, plan, features, limits, token_sha256, issued_at, expires_at)"
            " SELECT :ns, :name, :uid, :jti, :action, :plan, CAST(:features AS jsonb),"
            " CAST(:limits AS jsonb), :sha, :issued, :expires"
            " WHERE NOT (CAST(:unknown_only AS boolean)"
            " AND EXISTS (SELECT 1 FROM license_history WHERE license_id = :jti))"
            " ON CONFLICT (license_id, action) DO NOTHING"
        ),
        {
            "ns": tenant_namespace,
            "name": tenant_name,
            "uid": tenant_uid,
            "jti": license_id,
            "action": action,
            "plan": plan,
            "features": json.dumps(dict(features), sort_keys=True),
            "limits": json.dumps(dict(limits), sort_keys=True),
            "sha": token_sha256,
            "issued": issued_at,
            "expires": expires_at,
            "unknown_only": unknown_only,
        },
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def history(conn: AsyncConnection, namespace: str, name: str) -> list[LicenseRecord]:
    rows = await conn.execute(
        text(
            "SELECT id, tenant_namespace, tenant_name, tenant_uid, license_id, action, plan,"
            " features, limits, token_sha256, issued_at, expires_at, recorded_at"
            " FROM license_history WHERE tenant_namespace = :ns AND tenant_name = :name"
            " ORDER BY recorded_at, id"
        ),
        {"ns": namespace, "name": name},
    )
    return [LicenseRecord(**r._asdict()) for r in rows]
