"""Issuing and verifying licenses: round trips, rejections, and time edges."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from support import b64url, unb64url

from tenantry.license import (
    LICENSE_TYP,
    UNLICENSED_ENTITLEMENTS,
    InvalidReason,
    KeySet,
    LicenseClaims,
    LicenseState,
    LicenseStatus,
    SigningKey,
    SubscriptionStatus,
    issue,
    issue_revocation_list,
    sha256_token,
    verify,
)

Check = Callable[..., LicenseStatus]
ClaimsFactory = Callable[..., LicenseClaims]


def _forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def _ed25519_signer(key: SigningKey) -> Callable[[bytes], bytes]:
    private = key.private_key
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    return private.sign


def _assert_invalid(status: LicenseStatus, code: InvalidReason, words: str) -> None:
    assert status.state is LicenseState.INVALID
    assert status.reason_code is code
    assert status.reason is not None
    assert words in status.reason
    assert not status.usable
    assert status.entitlements == UNLICENSED_ENTITLEMENTS


# --- round trips -------------------------------------------------------------------------


def test_round_trip(signing_key: SigningKey, make_claims: ClaimsFactory, check: Check) -> None:
    claims = make_claims()
    token = issue(claims, signing_key)

    header = jwt.get_unverified_header(token)
    assert header == {"alg": signing_key.algorithm, "kid": signing_key.kid, "typ": LICENSE_TYP}

    status = check(token, KeySet([signing_key]))
    assert status.state is LicenseState.VALID
    assert status.reason is None
    assert status.usable
    assert status.claims == claims
    assert status.entitlements.plan_name == "professional"
    assert status.entitlements.limit("devices") == 50
    assert status.entitlements.is_unlimited("users")
    assert status.entitlements.feature("scheduled_jobs")
    assert not status.entitlements.feature("ota_updates")


def test_token_payload_uses_camel_case_and_epoch_seconds(
    rsa_key: SigningKey, make_claims: ClaimsFactory, now: datetime
) -> None:
    token = issue(make_claims(trial={"is_trial_mode": True, "ends_at": now}), rsa_key)
    payload = json.loads(unb64url(token.split(".")[1]))
    assert payload["trial"] == {"isTrialMode": True, "endsAt": int(now.timestamp())}
    assert payload["subscription"]["status"] == "active"
    assert isinstance(payload["subscription"]["currentPeriodEnd"], int)
    assert payload["iat"] == payload["nbf"] == int(now.timestamp())
    assert payload["exp"] == int(now.timestamp()) + 30 * 24 * 3600
    assert len(payload["jti"]) == 32
    assert payload["tenant"] == {"id": "tnt_42", "name": "Acme Robotics"}


def test_each_license_gets_a_fresh_jti(make_claims: ClaimsFactory) -> None:
    assert make_claims().jti != make_claims().jti


def test_sub_second_now_is_truncated_so_claims_survive_the_round_trip(
    ed_key: SigningKey, make_claims: ClaimsFactory, now: datetime, check: Check
) -> None:
    claims = make_claims(now=now + timedelta(microseconds=999_999))
    assert claims.iat == now
    assert check(issue(claims, ed_key), KeySet([ed_key])).claims == claims


def test_token_surrounded_by_whitespace_verifies(
    ed_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    token = issue(make_claims(), ed_key)
    assert check(f"  {token}\n", KeySet([ed_key])).state is LicenseState.VALID


def test_verification_ignores_the_wall_clock(
    rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    # Issued long ago and far in the future: only the injected `now` matters.
    old = datetime(2001, 1, 1, tzinfo=UTC)
    future = datetime(2200, 1, 1, tzinfo=UTC)
    for moment in (old, future):
        status = check(issue(make_claims(now=moment), rsa_key), KeySet([rsa_key]), now=moment)
        assert status.state is LicenseState.VALID


# --- rejections --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "   \n"])
def test_no_token_is_unlicensed(token: str | None, rsa_key: SigningKey, check: Check) -> None:
    status = check(token, KeySet([rsa_key]))
    assert status.state is LicenseState.UNLICENSED
    assert status.claims is None
    assert status.entitlements == UNLICENSED_ENTITLEMENTS


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "....", "e30.e30."])
def test_malformed_tokens(token: str, rsa_key: SigningKey, check: Check) -> None:
    status = check(token, KeySet([rsa_key]))
    assert status.state is LicenseState.INVALID
    assert status.reason_code in {InvalidReason.MALFORMED, InvalidReason.ALGORITHM_NOT_ALLOWED}


def test_tampered_payload_is_rejected(
    signing_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    header, payload, signature = issue(make_claims(), signing_key).split(".")
    claims = json.loads(unb64url(payload))
    claims["limits"]["devices"] = 5000
    tampered = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    status = check(tampered, KeySet([signing_key]))
    _assert_invalid(status, InvalidReason.BAD_SIGNATURE, "bad signature")
    assert status.claims is None


def test_signature_from_a_different_key_under_a_trusted_kid(
    rsa_key: SigningKey, other_rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    forged = jwt.encode(
        make_claims().to_payload(),
        other_rsa_key.private_key,
        algorithm="RS256",
        headers={"kid": rsa_key.kid, "typ": LICENSE_TYP},
    )
    _assert_invalid(check(forged, KeySet([rsa_key])), InvalidReason.BAD_SIGNATURE, "signature")


def test_unknown_kid(
    rsa_key: SigningKey, other_rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    token = issue(make_claims(), other_rsa_key)
    status = check(token, KeySet([rsa_key]))
    _assert_invalid(status, InvalidReason.UNKNOWN_KID, other_rsa_key.kid)


def test_missing_kid(rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check) -> None:
    token = jwt.encode(make_claims().to_payload(), rsa_key.private_key, algorithm="RS256")
    _assert_invalid(check(token, KeySet([rsa_key])), InvalidReason.UNKNOWN_KID, "no kid")


def test_wrong_audience(signing_key: SigningKey, make_claims: ClaimsFactory, check: Check) -> None:
    token = issue(make_claims(audience="another-product"), signing_key)
    status = check(token, KeySet([signing_key]))
    _assert_invalid(status, InvalidReason.WRONG_AUDIENCE, "wrong audience 'another-product'")


def test_audience_list_containing_ours_is_accepted(
    rsa_key: SigningKey, make_claims: ClaimsFactory, audience: str, check: Check
) -> None:
    claims = make_claims().model_copy(update={"aud": ("other", audience)})
    status = check(issue(claims, rsa_key), KeySet([rsa_key]))
    assert status.state is LicenseState.VALID
    assert status.claims is not None
    assert status.claims.aud == ("other", audience)


def test_wrong_issuer(signing_key: SigningKey, make_claims: ClaimsFactory, check: Check) -> None:
    token = issue(make_claims(issuer="https://evil.example"), signing_key)
    status = check(token, KeySet([signing_key]))
    _assert_invalid(status, InvalidReason.WRONG_ISSUER, "wrong issuer 'https://evil.example'")


def test_alg_none_is_rejected(
    signing_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    header = {"alg": "none", "kid": signing_key.kid, "typ": LICENSE_TYP}
    unsigned = _forge(header, make_claims().to_payload(), lambda _: b"")
    status = check(unsigned, KeySet([signing_key]))
    _assert_invalid(status, InvalidReason.ALGORITHM_NOT_ALLOWED, "'none' is not allowed")


def test_hs256_signed_with_the_public_pem_is_rejected(
    signing_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    # The classic algorithm confusion: the attacker knows the public PEM and uses it as an
    # HMAC secret, hoping the verifier feeds the same PEM to HS256.
    secret = signing_key.public_pem()
    header = {"alg": "HS256", "kid": signing_key.kid, "typ": LICENSE_TYP}
    forged = _forge(
        header,
        make_claims().to_payload(),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    status = check(forged, KeySet([signing_key]))
    _assert_invalid(status, InvalidReason.ALGORITHM_NOT_ALLOWED, "'HS256' is not allowed")


def test_algorithm_must_match_the_key_of_the_kid(
    rsa_key: SigningKey, ed_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    # A genuine EdDSA signature, but the header claims the kid of an RSA key.
    token = jwt.encode(
        make_claims().to_payload(),
        ed_key.private_key,
        algorithm="EdDSA",
        headers={"kid": rsa_key.kid, "typ": LICENSE_TYP},
    )
    status = check(token, KeySet([rsa_key, ed_key]))
    _assert_invalid(status, InvalidReason.ALGORITHM_NOT_ALLOWED, "does not match key")


def test_other_rsa_algorithms_are_not_accepted(
    rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    token = jwt.encode(
        make_claims().to_payload(),
        rsa_key.private_key,
        algorithm="RS512",
        headers={"kid": rsa_key.kid},
    )
    _assert_invalid(check(token, KeySet([rsa_key])), InvalidReason.ALGORITHM_NOT_ALLOWED, "'RS512'")


def test_signed_but_malformed_claims(
    rsa_key: SigningKey, issuer: str, audience: str, now: datetime, check: Check
) -> None:
    payload = {"iss": issuer, "aud": audience, "iat": 1, "exp": 2, "limits": {"devices": "50"}}
    token = jwt.encode(
        payload, rsa_key.private_key, algorithm="RS256", headers={"kid": rsa_key.kid}
    )
    status = check(token, KeySet([rsa_key]))
    _assert_invalid(status, InvalidReason.MALFORMED, "malformed license claims")
    assert "tenant" in (status.reason or "")
    assert "limits.devices" in (status.reason or "")


def test_a_revocation_list_is_not_a_license(
    rsa_key: SigningKey, issuer: str, now: datetime, check: Check
) -> None:
    token = issue_revocation_list(["x"], rsa_key, now, issuer)
    _assert_invalid(check(token, KeySet([rsa_key])), InvalidReason.WRONG_TYPE, "wrong token type")


def test_oversized_token_is_rejected_before_parsing(rsa_key: SigningKey, check: Check) -> None:
    status = check("a" * 100_000 + ".b.c", KeySet([rsa_key]))
    _assert_invalid(status, InvalidReason.MALFORMED, "too large")


def test_naive_now_is_a_programming_error(rsa_key: SigningKey, check: Check) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check("x.y.z", KeySet([rsa_key]), now=datetime(2030, 1, 1))  # noqa: DTZ001


# --- time edges --------------------------------------------------------------------------

SECOND = timedelta(seconds=1)
LEEWAY = timedelta(seconds=60)
GRACE = timedelta(days=7)


@pytest.mark.parametrize(
    ("offset", "state"),
    [
        (LEEWAY - SECOND, LicenseState.VALID),
        (LEEWAY, LicenseState.VALID),
        (LEEWAY + SECOND, LicenseState.GRACE),
        (LEEWAY + GRACE - SECOND, LicenseState.GRACE),
        (LEEWAY + GRACE, LicenseState.GRACE),
        (LEEWAY + GRACE + SECOND, LicenseState.EXPIRED),
    ],
    ids=lambda value: str(value),
)
def test_expiry_and_grace_edges(
    offset: timedelta,
    state: LicenseState,
    ed_key: SigningKey,
    make_claims: ClaimsFactory,
    check: Check,
) -> None:
    claims = make_claims()
    status = check(
        issue(claims, ed_key), KeySet([ed_key]), now=claims.exp + offset, leeway=LEEWAY, grace=GRACE
    )
    assert status.state is state
    assert status.claims == claims  # whose license it is stays visible even when expired
    if state is LicenseState.EXPIRED:
        assert status.entitlements == UNLICENSED_ENTITLEMENTS
        assert status.reason == "license expired at 2030-01-31T12:00:00Z"
    else:
        # VALID and GRACE both keep the plan's entitlements.
        assert status.usable
        assert status.entitlements.limit("devices") == 50
    if state is LicenseState.GRACE:
        assert status.reason == (
            "license expired at 2030-01-31T12:00:00Z; grace period ends at 2030-02-07T12:01:00Z"
        )


@pytest.mark.parametrize(
    ("offset", "state"),
    [
        (-SECOND, LicenseState.VALID),
        (timedelta(0), LicenseState.VALID),
        (SECOND, LicenseState.EXPIRED),
    ],
)
def test_expiry_edge_without_leeway_or_grace(
    offset: timedelta,
    state: LicenseState,
    rsa_key: SigningKey,
    make_claims: ClaimsFactory,
    check: Check,
) -> None:
    claims = make_claims()
    status = check(
        issue(claims, rsa_key), KeySet([rsa_key]), now=claims.exp + offset, leeway=timedelta(0)
    )
    assert status.state is state


@pytest.mark.parametrize(
    ("offset", "state"),
    [
        (-LEEWAY - SECOND, LicenseState.INVALID),
        (-LEEWAY, LicenseState.VALID),
        (-LEEWAY + SECOND, LicenseState.VALID),
    ],
)
def test_not_before_edges(
    offset: timedelta,
    state: LicenseState,
    rsa_key: SigningKey,
    make_claims: ClaimsFactory,
    now: datetime,
    check: Check,
) -> None:
    starts = now + timedelta(days=2)
    claims = make_claims(not_before=starts)
    status = check(issue(claims, rsa_key), KeySet([rsa_key]), now=starts + offset, leeway=LEEWAY)
    assert status.state is state
    if state is LicenseState.INVALID:
        assert status.reason_code is InvalidReason.NOT_YET_VALID
        assert status.reason == "license not yet valid (valid from 2030-01-03T12:00:00Z)"
        assert status.entitlements == UNLICENSED_ENTITLEMENTS


def test_license_issued_in_the_future_is_not_yet_valid(
    rsa_key: SigningKey, make_claims: ClaimsFactory, now: datetime, check: Check
) -> None:
    token = issue(make_claims(now=now + timedelta(hours=1)), rsa_key)
    status = check(token, KeySet([rsa_key]), now=now)
    assert status.state is LicenseState.INVALID
    assert status.reason_code is InvalidReason.NOT_YET_VALID


def test_default_clock_is_the_wall_clock(rsa_key: SigningKey, make_claims: ClaimsFactory) -> None:
    token = issue(make_claims(now=datetime.now(UTC)), rsa_key)
    status = verify(
        token,
        KeySet([rsa_key]),
        issuer="https://licenses.example.com",
        audience="tenantry-instance",
    )
    assert status.state is LicenseState.VALID


def test_claims_refuse_an_expiry_before_the_start(
    make_claims: ClaimsFactory, now: datetime
) -> None:
    with pytest.raises(ValueError, match="exp must be after nbf"):
        make_claims(not_before=now + timedelta(days=60))
    with pytest.raises(ValueError, match="ttl must be positive"):
        make_claims(ttl=timedelta(0))


def test_limits_must_be_counts_or_unlimited(make_claims: ClaimsFactory) -> None:
    with pytest.raises(ValueError, match="use >= 0"):
        make_claims(limits={"devices": -2})
    with pytest.raises(ValueError, match="valid integer"):
        make_claims(limits={"devices": "50"})
    with pytest.raises(ValueError, match="valid boolean"):
        make_claims(features={"jobs": "yes"})


def test_sha256_token() -> None:
    # FIPS 180-2 test vector.
    assert sha256_token("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- robustness: verify never raises for a bad token -------------------------------------


@pytest.mark.parametrize(
    "header_update",
    [{"alg": ["EdDSA"]}, {"typ": ["JWT"]}, {"kid": 7}, {"alg": None}, {"crit": ["exp"]}],
    ids=["alg-list", "typ-list", "kid-int", "alg-null", "crit"],
)
def test_odd_headers_are_invalid_not_errors(
    header_update: dict[str, Any], ed_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    header = {"alg": "EdDSA", "kid": ed_key.kid, **header_update}
    token = _forge(header, make_claims().to_payload(), _ed25519_signer(ed_key))
    assert check(token, KeySet([ed_key])).state is LicenseState.INVALID


@pytest.mark.parametrize("exp", [10**30, float("inf"), "tomorrow", None, True])
def test_odd_claim_values_are_invalid_not_errors(
    exp: object, ed_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    # Correctly signed, so only the claims parsing can catch these.
    payload = {**make_claims().to_payload(), "exp": exp}
    token = _forge({"alg": "EdDSA", "kid": ed_key.kid}, payload, _ed25519_signer(ed_key))
    status = check(token, KeySet([ed_key]))
    assert status.state is LicenseState.INVALID
    assert status.reason_code is InvalidReason.MALFORMED
    assert "exp" in (status.reason or "")


def test_unknown_subscription_status_does_not_break_old_instances(
    rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    payload = make_claims().to_payload()
    payload["subscription"]["status"] = "suspended"  # a state added after this release
    payload["newClaim"] = {"from": "a newer issuer"}
    token = jwt.encode(
        payload, rsa_key.private_key, algorithm="RS256", headers={"kid": rsa_key.kid}
    )
    status = check(token, KeySet([rsa_key]))
    assert status.state is LicenseState.VALID
    assert status.claims is not None
    assert status.claims.subscription.status == "suspended"
    assert make_claims().subscription.status is SubscriptionStatus.ACTIVE
