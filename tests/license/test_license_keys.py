"""Keys: loading, kid thumbprints (checked against jwcrypto), JWKS round trips."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk  # type: ignore[import-untyped]

from tenantry.license import KeyLoadError, KeySet, SigningKey, VerificationKey


def test_kid_is_the_rfc7638_thumbprint_computed_by_jwcrypto(signing_key: SigningKey) -> None:
    independent = jwk.JWK.from_pem(signing_key.public_pem())
    assert signing_key.kid == independent.thumbprint()
    assert signing_key.public_jwk()["kid"] == independent.thumbprint()


def test_rfc7638_example_thumbprint() -> None:
    # The worked example of RFC 7638 §3.1.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
        "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
        "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    key = VerificationKey.from_jwk({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256"})
    assert key.kid == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(("algorithm", "kty"), [("RS256", "RSA"), ("EdDSA", "OKP")])
def test_generate_and_reload_from_pem(algorithm: str, kty: str) -> None:
    key = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    assert key.algorithm == algorithm
    assert key.private_pem().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert key.public_pem().startswith(b"-----BEGIN PUBLIC KEY-----")

    reloaded = SigningKey.from_pem(key.private_pem().decode())
    assert reloaded.kid == key.kid
    assert reloaded.algorithm == algorithm
    assert reloaded.public_jwk() == key.public_jwk()
    assert key.public_jwk()["kty"] == kty
    assert key.public_jwk()["use"] == "sig"
    assert key.public_jwk()["alg"] == algorithm
    assert "d" not in key.public_jwk()


def test_rsa_generated_keys_are_2048_bit(rsa_key: SigningKey) -> None:
    assert isinstance(rsa_key.private_key, rsa.RSAPrivateKey)
    assert rsa_key.private_key.key_size == 2048


def test_traditional_rsa_pem_is_accepted(rsa_key: SigningKey) -> None:
    traditional = rsa_key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert traditional.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert SigningKey.from_pem(traditional).kid == rsa_key.kid


def test_unsupported_and_weak_keys_are_refused() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyLoadError, match="unsupported key type"):
        SigningKey.from_pem(ec_pem)

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (must be refused)
    small_pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyLoadError, match="at least 2048"):
        SigningKey.from_pem(small_pem)

    with pytest.raises(KeyLoadError, match="cannot load private key"):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")


def test_encrypted_pem_is_refused(ed_key: SigningKey) -> None:
    encrypted = ed_key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(KeyLoadError):
        SigningKey.from_pem(encrypted)


def test_repr_does_not_leak_key_material(rsa_key: SigningKey) -> None:
    text = repr(rsa_key)
    assert rsa_key.kid in text
    assert "PRIVATE" not in text
    assert rsa_key.public_jwk()["n"][:16] not in text


def test_keyset_jwks_round_trip(rsa_key: SigningKey, ed_key: SigningKey) -> None:
    keys = KeySet([rsa_key, ed_key.verification_key()])
    jwks = keys.to_jwks()
    # A JWKS is meant to be published as JSON.
    reloaded = KeySet.from_jwks(json.loads(json.dumps(jwks)))
    assert reloaded.kids == (rsa_key.kid, ed_key.kid)
    assert reloaded.to_jwks() == jwks
    assert reloaded.get(ed_key.kid) == ed_key.verification_key()
    assert reloaded.get("nope") is None


def test_keyset_from_pems_uses_thumbprints(rsa_key: SigningKey, ed_key: SigningKey) -> None:
    keys = KeySet.from_pems([rsa_key.public_pem(), ed_key.public_pem().decode()])
    assert set(keys.kids) == {rsa_key.kid, ed_key.kid}
    rsa_entry = keys.get(rsa_key.kid)
    assert rsa_entry is not None
    assert rsa_entry.algorithm == "RS256"


def test_keyset_refuses_duplicates_and_bad_jwks(rsa_key: SigningKey) -> None:
    with pytest.raises(KeyLoadError, match="duplicate kid"):
        KeySet([rsa_key, rsa_key.verification_key()])
    with pytest.raises(KeyLoadError, match="keys"):
        KeySet.from_jwks({"nokeys": []})
    private_jwk = json.loads(jwk.JWK.from_pem(rsa_key.private_pem()).export_private())
    with pytest.raises(KeyLoadError, match="private"):
        KeySet.from_jwks({"keys": [private_jwk]})
    mismatched = {**rsa_key.public_jwk(), "alg": "EdDSA"}
    with pytest.raises(KeyLoadError, match="does not fit"):
        KeySet.from_jwks({"keys": [mismatched]})
