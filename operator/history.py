"""License history in PostgreSQL: what was issued or revoked, when, and the token's hash."""

from __future__ import annotations

import kopf

from tenantry.db.licenses import LicenseAction, record_license
from tenantry.operator import errors
from tenantry.operator.context import Context
from tenantry.operator.provisioning import IssuedLicense, LicenseTerms


async def record(
    ctx: Context,
    body: kopf.Body,
    action: LicenseAction,
    license_: IssuedLicense,
    terms: LicenseTerms | None,
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
        )
