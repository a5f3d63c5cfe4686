"""License history in PostgreSQL: what was issued or revoked, when, and the token's hash."""

from __future__ import annotations

from typing import Any

import kopf

from tenantry.db import audit
from tenantry.db.licenses import LicenseAction, record_license
from tenantry.operator import errors
from tenantry.operator.context import Context
from tenantry.operator.provisioning import IssuedLicense, LicenseTerms


async def audited(
    ctx: Context, by: audit.Actor, action: str, target: str, details: dict[str, Any]
) -> None:
    """A change asked for through Kubernetes, in the audit trail (db/audit.py)."""
    if ctx.database is None:
        return
    async with errors.database(), ctx.database.begin() as conn:
        await audit.record(conn, by, action, target, details)


_CONFIRMED: set[str] = set()
"""Licenses this process knows to be in the history: checked once each, not per pass."""


async def confirm(
    ctx: Context, body: kopf.Body, license_: IssuedLicense, terms: LicenseTerms
) -> None:
    """A license found in its Secret is in the history: an operator killed between
    writing the Secret and recording it leaves it to the next (checked once per process)."""
    if license_.license_id in _CONFIRMED:
        return
    await record(ctx, body, "issued", license_, terms, unknown_only=True)
    _CONFIRMED.add(license_.license_id)


async def record(
    ctx: Context,
    body: kopf.Body,
    action: LicenseAction,
    license_: IssuedLicense,
    terms: LicenseTerms | None,
    *,
    unknown_only: bool = False,
) -> None:
    """One row per license and action (idempotent). A revocation row names the license;
    its plan terms are on the row that issued it."""
    if ctx.database is None:
        return
    async with errors.database(), ctx.database.begin() as conn:
        await record_license(
            conn,
            tenant_namespace=body.metadata.namespace or "",
            tenant_name=body.metadata.name or "",
            tenant_uid=body.metadata.uid or "",
            license_id=license_.license_id,
            action=action,
            plan=license_.plan,
            features=terms.features if terms else {},
            limits=terms.limits if terms else {},
            token_sha256=license_.token_sha256,
            issued_at=license_.issued_at,
            expires_at=license_.expires_at,
            unknown_only=unknown_only,
        )
    _CONFIRMED.add(license_.license_id)
