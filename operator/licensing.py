"""License signing for the operator: terms in, token and its record out (no I/O)."""

from __future__ import annotations

import datetime as dt

from tenantry import license as lic
from tenantry.operator.provisioning import IssuedLicense, LicenseTerms


def sign(
    ring: lic.KeyRing,
    terms: LicenseTerms,
    *,
    now: dt.datetime,
    ttl: dt.timedelta,
    issuer: str,
    audience: str,
) -> tuple[str, IssuedLicense]:
    claims = lic.new_license_claims(
        tenant=lic.Tenant(id=terms.tenant_id, name=terms.tenant_name),
        plan=lic.Plan(code=terms.plan, name=terms.plan_display_name),
        subscription=lic.Subscription(
            status=lic.SubscriptionStatus(terms.subscription_status),
            current_period_end=terms.period_end,
        ),
        trial=lic.Trial(is_trial_mode=terms.is_trial, ends_at=terms.trial_end),
        features=terms.features,
        limits=terms.limits,
        now=now,
        ttl=ttl,
        issuer=issuer,
        audience=audience,
    )
    token = ring.issue(claims)
    return token, IssuedLicense(
        license_id=claims.jti,
        fingerprint=terms.fingerprint(),
        issued_at=claims.iat,
        expires_at=claims.exp,
        plan=terms.plan,
        token_sha256=lic.sha256_token(token),
    )
