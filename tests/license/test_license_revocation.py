"""Signed revocation lists."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from support import b64url, unb64url

from tenantry.license import (
    UNLICENSED_ENTITLEMENTS,
    KeySet,
    LicenseClaims,
    LicenseState,
    LicenseStatus,
    RevocationList,
    RevocationListError,
    SigningKey,
    issue,
    issue_revocation_list,
)

Check = Callable[..., LicenseStatus]
ClaimsFactory = Callable[..., LicenseClaims]


def test_revoked_license_verifies_as_revoked(
    signing_key: SigningKey, make_claims: ClaimsFactory, now: datetime, issuer: str, check: Check
) -> None:
    keys = KeySet([signing_key])
    revoked, kept = make_claims(), make_claims()
    token = issue_revocation_list([revoked.jti, "unrelated"], signing_key, now, issuer)

    revocations = RevocationList.verify(token, keys, issuer)
    assert revocations.is_revoked(revoked.jti)
    assert not revocations.is_revoked(kept.jti)
    assert revocations.issued_at == now
    assert revocations.jtis == {revoked.jti, "unrelated"}

    status = check(issue(revoked, signing_key), keys, revocations=revocations)
    assert status.state is LicenseState.REVOKED
    assert status.reason == "license has been revoked"
    assert status.entitlements == UNLICENSED_ENTITLEMENTS
    assert status.claims == revoked

    assert check(issue(kept, signing_key), keys, revocations=revocations).state is (
        LicenseState.VALID
    )


def test_revocation_outranks_expiry(
    rsa_key: SigningKey, make_claims: ClaimsFactory, now: datetime, issuer: str, check: Check
) -> None:
    claims = make_claims()
    revocations = RevocationList.verify(
        issue_revocation_list([claims.jti], rsa_key, now, issuer), KeySet([rsa_key]), issuer
    )
    later = now + timedelta(days=365)
    status = check(issue(claims, rsa_key), KeySet([rsa_key]), now=later, revocations=revocations)
    assert status.state is LicenseState.REVOKED


def test_tampered_revocation_list_is_rejected(
    signing_key: SigningKey, now: datetime, issuer: str
) -> None:
    header, payload, signature = issue_revocation_list(
        ["abc", "def"], signing_key, now, issuer
    ).split(".")
    body = json.loads(unb64url(payload))
    body["revokedJtis"] = ["def"]  # try to un-revoke "abc"
    tampered = f"{header}.{b64url(json.dumps(body).encode())}.{signature}"
    with pytest.raises(RevocationListError, match="bad signature"):
        RevocationList.verify(tampered, KeySet([signing_key]), issuer)


def test_revocation_list_from_unknown_key_or_issuer_is_rejected(
    rsa_key: SigningKey, other_rsa_key: SigningKey, now: datetime, issuer: str
) -> None:
    foreign = issue_revocation_list(["abc"], other_rsa_key, now, issuer)
    with pytest.raises(RevocationListError, match="unknown signing key"):
        RevocationList.verify(foreign, KeySet([rsa_key]), issuer)

    other_issuer = issue_revocation_list(["abc"], rsa_key, now, "https://evil.example")
    with pytest.raises(RevocationListError, match="wrong issuer"):
        RevocationList.verify(other_issuer, KeySet([rsa_key]), issuer)

    with pytest.raises(RevocationListError, match="malformed"):
        RevocationList.verify("not a token", KeySet([rsa_key]), issuer)


def test_a_license_is_not_a_revocation_list(
    rsa_key: SigningKey, make_claims: ClaimsFactory, issuer: str
) -> None:
    with pytest.raises(RevocationListError, match="wrong token type"):
        RevocationList.verify(issue(make_claims(), rsa_key), KeySet([rsa_key]), issuer)
