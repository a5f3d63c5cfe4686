"""Signing and verification keys.

Keys are parsed once and kept as ``cryptography`` objects: PEM parsing (RSA in
particular, where loading validates the private key) costs far more than a
signature, so nothing here re-parses per call.

Key identifiers are RFC 7638 JWK thumbprints, so any JOSE library can recompute
and check them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal, TypeAlias, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ._errors import KeyLoadError

__all__ = [
    "ALLOWED_ALGORITHMS",
    "Algorithm",
    "KeySet",
    "SigningKey",
    "VerificationKey",
    "jwk_thumbprint",
]

Algorithm: TypeAlias = Literal["RS256", "EdDSA"]
#: The only JWS algorithms this package signs or accepts.
ALLOWED_ALGORITHMS: Final[frozenset[str]] = frozenset(get_args(Algorithm))

# RFC 7518 §3.3: RS256 keys must be at least 2048 bits.
_RSA_MIN_BITS: Final = 2048
_RSA_GENERATED_BITS: Final = 2048

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint_b64url(value: int) -> str:
    # RFC 7518 §6.3.1: big-endian, minimal length (at least one octet).
    return _b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


def _public_members(public_key: PublicKey) -> dict[str, str]:
    """The RFC 7638 required members of the public JWK."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {
            "e": _uint_b64url(numbers.e),
            "kty": "RSA",
            "n": _uint_b64url(numbers.n),
        }
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a JWK (only its required members count)."""
    kty = jwk.get("kty")
    required = {"RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}.get(str(kty))
    if required is None:
        raise KeyLoadError(f"unsupported JWK key type {kty!r}")
    try:
        members = {name: str(jwk[name]) for name in required}
    except KeyError as exc:
        raise KeyLoadError(f"JWK is missing member {exc.args[0]!r}") from None
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _algorithm_for(key: PublicKey | PrivateKey) -> Algorithm:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < _RSA_MIN_BITS:
            raise KeyLoadError(
                f"RSA key is {key.key_size} bits; RS256 needs at least {_RSA_MIN_BITS}"
            )
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise KeyLoadError(f"unsupported key type {type(key).__name__}; use RSA or Ed25519")


class VerificationKey:
    """A public key, its ``kid`` and the one algorithm it may verify."""

    __slots__ = ("_algorithm", "_kid", "_members", "_public_key")

    def __init__(
        self,
        public_key: PublicKey,
        *,
        kid: str | None = None,
        algorithm: str | None = None,
    ) -> None:
        detected = _algorithm_for(public_key)
        if algorithm is not None and algorithm != detected:
            raise KeyLoadError(f"algorithm {algorithm!r} does not fit a key for {detected}")
        self._public_key = public_key
        self._algorithm: Algorithm = detected
        self._members = _public_members(public_key)
        self._kid = kid if kid is not None else jwk_thumbprint(self._members)

    @classmethod
    def from_pem(cls, pem: bytes | str, *, kid: str | None = None) -> VerificationKey:
        """Load a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo); ``kid`` defaults to the thumbprint."""
        try:
            key = serialization.load_pem_public_key(_as_bytes(pem))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyLoadError(f"cannot load public key PEM: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise KeyLoadError(f"unsupported key type {type(key).__name__}; use RSA or Ed25519")
        return cls(key, kid=kid)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerificationKey:
        """Load a public JWK (RSA, or OKP/Ed25519); its ``kid`` is kept if present."""
        if "d" in jwk:
            raise KeyLoadError("refusing a private JWK where a public one is expected")
        if jwk.get("use", "sig") != "sig":
            raise KeyLoadError(f"JWK use {jwk.get('use')!r} is not 'sig'")
        kty = jwk.get("kty")
        try:
            key: PublicKey
            if kty == "RSA":
                n = int.from_bytes(_b64url_decode(str(jwk["n"])), "big")
                e = int.from_bytes(_b64url_decode(str(jwk["e"])), "big")
                key = rsa.RSAPublicNumbers(e, n).public_key()
            elif kty == "OKP" and jwk.get("crv") == "Ed25519":
                key = ed25519.Ed25519PublicKey.from_public_bytes(_b64url_decode(str(jwk["x"])))
            else:
                raise KeyLoadError(
                    f"unsupported JWK (kty={kty!r}, crv={jwk.get('crv')!r}); use RSA or OKP/Ed25519"
                )
        except KeyError as exc:
            raise KeyLoadError(f"JWK is missing member {exc.args[0]!r}") from None
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyLoadError(f"cannot load JWK: {exc}") from None
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise KeyLoadError("JWK kid must be a string")
        return cls(key, kid=kid, algorithm=jwk.get("alg"))

    @property
    def kid(self) -> str:
        """Key id put in token headers; the RFC 7638 thumbprint unless given explicitly."""
        return self._kid

    @property
    def algorithm(self) -> Algorithm:
        """The single JWS algorithm this key verifies."""
        return self._algorithm

    @property
    def public_key(self) -> PublicKey:
        """The loaded ``cryptography`` public key object."""
        return self._public_key

    def public_pem(self) -> bytes:
        """PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo)."""
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, str]:
        """Public JWK with ``kid``, ``alg`` and ``use="sig"``."""
        return {**self._members, "kid": self._kid, "alg": self._algorithm, "use": "sig"}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VerificationKey):
            return NotImplemented
        return (self._kid, self._members) == (other._kid, other._members)

    def __hash__(self) -> int:
        return hash(self._kid)

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self._kid!r}, algorithm={self._algorithm!r})"


class SigningKey:
    """A private key loaded once, with its thumbprint ``kid`` and algorithm.

    ``repr()`` never shows key material.
    """

    __slots__ = ("_private_key", "_verification_key")

    def __init__(self, private_key: PrivateKey) -> None:
        _algorithm_for(private_key)
        self._private_key = private_key
        self._verification_key = VerificationKey(private_key.public_key())

    @classmethod
    def generate(cls, algorithm: Algorithm = "RS256") -> SigningKey:
        """A fresh key: RSA 2048 (e=65537) for RS256, Ed25519 for EdDSA."""
        if algorithm == "RS256":
            return cls(
                rsa.generate_private_key(public_exponent=65537, key_size=_RSA_GENERATED_BITS)
            )
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        raise ValueError(
            f"algorithm must be one of {sorted(ALLOWED_ALGORITHMS)}, not {algorithm!r}"
        )

    @classmethod
    def from_pem(cls, pem: bytes | str) -> SigningKey:
        """Load an unencrypted private key PEM (PKCS#8 or traditional); its type sets the alg."""
        try:
            key = serialization.load_pem_private_key(_as_bytes(pem), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # The message of cryptography never includes key material.
            raise KeyLoadError(f"cannot load private key PEM: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyLoadError(f"unsupported key type {type(key).__name__}; use RSA or Ed25519")
        return cls(key)

    @property
    def kid(self) -> str:
        """RFC 7638 JWK thumbprint (base64url SHA-256) of the public key."""
        return self._verification_key.kid

    @property
    def algorithm(self) -> Algorithm:
        """``"RS256"`` for RSA keys, ``"EdDSA"`` for Ed25519 keys."""
        return self._verification_key.algorithm

    @property
    def private_key(self) -> PrivateKey:
        """The loaded ``cryptography`` private key object."""
        return self._private_key

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM. Treat as a secret: store it only in a Secret."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo)."""
        return self._verification_key.public_pem()

    def public_jwk(self) -> dict[str, str]:
        """Public JWK with ``kid``, ``alg`` and ``use="sig"``."""
        return self._verification_key.public_jwk()

    def verification_key(self) -> VerificationKey:
        """The matching public key, already loaded."""
        return self._verification_key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SigningKey):
            return NotImplemented
        # The thumbprint identifies the key pair.
        return self._verification_key == other._verification_key

    def __hash__(self) -> int:
        return hash(self.kid)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


class KeySet:
    """Verification keys indexed by ``kid`` (what a JWKS document publishes)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[VerificationKey | SigningKey] = ()) -> None:
        self._keys: dict[str, VerificationKey] = {}
        for key in keys:
            verification = key.verification_key() if isinstance(key, SigningKey) else key
            if verification.kid in self._keys:
                raise KeyLoadError(f"duplicate kid {verification.kid!r} in key set")
            self._keys[verification.kid] = verification

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Load a JWKS document (``{"keys": [...]}``); a key it cannot use raises KeyLoadError."""
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise KeyLoadError('JWKS must be an object with a "keys" list')
        return cls(VerificationKey.from_jwk(jwk) for jwk in keys)

    @classmethod
    def from_pems(cls, pems: Iterable[bytes | str]) -> KeySet:
        """Load public key PEMs; each ``kid`` is the key's thumbprint."""
        return cls(VerificationKey.from_pem(pem) for pem in pems)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document to publish for instances."""
        return {"keys": [key.public_jwk() for key in self._keys.values()]}

    def get(self, kid: str) -> VerificationKey | None:
        """The key with this ``kid``, or ``None``."""
        return self._keys.get(kid)

    @property
    def kids(self) -> tuple[str, ...]:
        """Key ids in insertion order."""
        return tuple(self._keys)

    def __iter__(self) -> Iterator[VerificationKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __repr__(self) -> str:
        return f"KeySet(kids={list(self._keys)!r})"
