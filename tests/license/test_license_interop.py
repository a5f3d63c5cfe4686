"""Licenses checked by a second, independent JOSE implementation (jwcrypto), both ways."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from jwcrypto import jwk, jws, jwt  # type: ignore[import-untyped]

from tenantry.license import KeySet, LicenseClaims, LicenseState, SigningKey, issue, verify

ClaimsFactory = Callable[..., LicenseClaims]


def test_jwcrypto_verifies_our_license_with_our_jwks(
    signing_key: SigningKey, make_claims: ClaimsFactory, issuer: str, audience: str
) -> None:
    # Wall-clock times, because jwcrypto checks exp/nbf against the real clock.
    claims = make_claims(now=datetime.now(UTC))
    token = issue(claims, signing_key)
    published = json.dumps(KeySet([signing_key]).to_jwks())

    checked = jwt.JWT(
        jwt=token,
        key=jwk.JWKSet.from_json(published),
        algs=[signing_key.algorithm],
        check_claims={"iss": issuer, "aud": audience, "exp": None, "nbf": None},
    )
    header = json.loads(checked.header)
    assert header["kid"] == signing_key.kid
    assert header["alg"] == signing_key.algorithm
    assert json.loads(checked.claims) == claims.to_payload()


def test_we_verify_a_license_signed_by_jwcrypto(
    signing_key: SigningKey, make_claims: ClaimsFactory, issuer: str, audience: str
) -> None:
    claims = make_claims(now=datetime.now(UTC))
    private = jwk.JWK.from_pem(signing_key.private_pem())
    token = jws.JWS(json.dumps(claims.to_payload()).encode())
    token.add_signature(
        private,
        alg=signing_key.algorithm,
        protected=json.dumps({"alg": signing_key.algorithm, "kid": private.thumbprint()}),
    )
    compact = token.serialize(compact=True)

    # jwcrypto's public JWK has no kid: ours must compute the same thumbprint.
    keys = KeySet.from_jwks({"keys": [json.loads(private.export_public())]})
    status = verify(compact, keys, issuer=issuer, audience=audience)
    assert status.state is LicenseState.VALID
    assert status.claims == claims
