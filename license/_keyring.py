"""Key rotation: one active signing key, retired keys kept published until unused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from ._claims import LicenseClaims
from ._errors import KeyLoadError, KeyRingError
from ._keys import Algorithm, KeySet, SigningKey
from ._time import utc
from ._verify import issue

__all__ = ["KeyRecord", "KeyRing"]

#: Name of the Secret entry holding the key ring's metadata; each key is ``<kid>.pem``.
INDEX_ENTRY: Final = "keyring.json"
_INDEX_VERSION: Final = 1
_PEM_SUFFIX: Final = ".pem"
# Kubernetes Secret keys: [-._a-zA-Z0-9]+. Thumbprints are base64url, so they fit.
_SECRET_KEY_RE: Final = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A signing key and its life cycle."""

    key: SigningKey
    created_at: datetime
    #: ``None`` while the key is the active signer.
    retired_at: datetime | None = None
    #: Latest ``exp`` of any license signed with this key (``None``: none signed yet).
    signed_until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("created_at", "retired_at", "signed_until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value, name=name))

    @property
    def kid(self) -> str:
        return self.key.kid

    @property
    def active(self) -> bool:
        return self.retired_at is None


def _dt(value: datetime | None) -> str | None:
    # ISO 8601 keeps microseconds, so the Secret round trip is exact.
    return None if value is None else utc(value).isoformat()


def _parse_dt(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise KeyRingError(f"{what} must be an ISO 8601 string")
    try:
        return utc(datetime.fromisoformat(value), name=what)
    except ValueError as exc:
        raise KeyRingError(f"{what}: {exc}") from None


class KeyRing:
    """Signing keys with exactly one active signer.

    Mutable and not thread-safe: load it, change it, save it (the operator keeps it
    in a Kubernetes Secret via :meth:`to_secret_data` / :meth:`from_secret_data`).
    Retired keys stay in :meth:`public_keys` until :meth:`prune` finds that every
    license they signed has expired.
    """

    def __init__(self, records: Iterable[KeyRecord]) -> None:
        self._records: dict[str, KeyRecord] = {}
        for record in records:
            if record.kid in self._records:
                raise KeyRingError(f"duplicate key {record.kid!r} in key ring")
            self._records[record.kid] = record
        active = [r for r in self._records.values() if r.active]
        if len(active) != 1:
            raise KeyRingError(f"a key ring needs exactly one active key, found {len(active)}")

    @classmethod
    def create(cls, now: datetime, algorithm: Algorithm = "RS256") -> KeyRing:
        """A ring with one freshly generated active key."""
        return cls([KeyRecord(SigningKey.generate(algorithm), created_at=utc(now, name="now"))])

    @property
    def active(self) -> SigningKey:
        """The key that signs new licenses."""
        return self.active_record.key

    @property
    def active_record(self) -> KeyRecord:
        return next(r for r in self._records.values() if r.active)

    @property
    def records(self) -> tuple[KeyRecord, ...]:
        """All keys, oldest first."""
        return tuple(self._records.values())

    def get(self, kid: str) -> KeyRecord | None:
        return self._records.get(kid)

    def rotate(self, now: datetime, algorithm: Algorithm | None = None) -> SigningKey:
        """Generate a new active key (default: same algorithm) and retire the current one.

        The retired key stays published so licenses it signed keep verifying.
        """
        now = utc(now, name="now")
        old = self.active_record
        new = SigningKey.generate(algorithm or old.key.algorithm)
        self._records[old.kid] = replace(old, retired_at=now)
        self._records[new.kid] = KeyRecord(new, created_at=now)
        return new

    def note_signed(self, kid: str, exp: datetime) -> None:
        """Record that ``kid`` signed a license expiring at ``exp`` (keeps the latest)."""
        record = self._records.get(kid)
        if record is None:
            raise KeyRingError(f"unknown key {kid!r}")
        exp = utc(exp, name="exp")
        if record.signed_until is None or exp > record.signed_until:
            self._records[kid] = replace(record, signed_until=exp)

    def issue(self, claims: LicenseClaims) -> str:
        """Sign with the active key and record the license's expiry for :meth:`prune`."""
        key = self.active
        token = issue(claims, key)
        self.note_signed(key.kid, claims.exp)
        return token

    def prune(self, now: datetime, grace: timedelta = timedelta(0)) -> list[str]:
        """Drop retired keys whose licenses are all past ``exp + grace``; return their kids.

        Pass the grace period (plus leeway) that instances apply, so a license in
        GRACE can still be verified. A retired key that never signed is dropped.
        """
        now = utc(now, name="now")
        dropped = [
            r.kid
            for r in self._records.values()
            if not r.active and (r.signed_until is None or r.signed_until + grace < now)
        ]
        for kid in dropped:
            del self._records[kid]
        return dropped

    def public_keys(self) -> KeySet:
        """Every key still published (active and retired), for the JWKS."""
        return KeySet(r.key.verification_key() for r in self._records.values())

    def to_secret_data(self) -> dict[str, str]:
        """String entries for a Secret's ``stringData``: ``<kid>.pem`` per key and an index.

        Base64-encode the values yourself if you write ``data`` instead.
        """
        index = {
            "version": _INDEX_VERSION,
            "keys": [
                {
                    "kid": r.kid,
                    "algorithm": r.key.algorithm,
                    "createdAt": _dt(r.created_at),
                    "retiredAt": _dt(r.retired_at),
                    "signedUntil": _dt(r.signed_until),
                }
                for r in self._records.values()
            ],
        }
        data = {INDEX_ENTRY: json.dumps(index, separators=(",", ":"), sort_keys=True)}
        for record in self._records.values():
            data[record.kid + _PEM_SUFFIX] = record.key.private_pem().decode("ascii")
        return data

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> KeyRing:
        """Read back :meth:`to_secret_data`; raises :class:`KeyRingError` if inconsistent."""
        try:
            index = json.loads(data[INDEX_ENTRY])
        except KeyError:
            raise KeyRingError(f"Secret data has no {INDEX_ENTRY!r} entry") from None
        except ValueError as exc:
            raise KeyRingError(f"{INDEX_ENTRY} is not JSON: {exc}") from None
        if not isinstance(index, dict) or index.get("version") != _INDEX_VERSION:
            raise KeyRingError(f"{INDEX_ENTRY} has an unsupported format or version")
        entries = index.get("keys")
        if not isinstance(entries, list):
            raise KeyRingError(f"{INDEX_ENTRY} has no key list")

        records = [cls._record(entry, data) for entry in entries]
        expected = {INDEX_ENTRY} | {r.kid + _PEM_SUFFIX for r in records}
        unexpected = sorted(set(data) - expected)
        if unexpected:
            # Strict, so that a stray key is noticed instead of silently dropped on save.
            raise KeyRingError(f"Secret data has entries not in the index: {unexpected}")
        return cls(records)

    @staticmethod
    def _record(entry: Any, data: Mapping[str, str]) -> KeyRecord:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            raise KeyRingError(f"{INDEX_ENTRY}: every key needs a kid")
        kid: str = entry["kid"]
        if not _SECRET_KEY_RE.fullmatch(kid):
            raise KeyRingError(f"{INDEX_ENTRY}: invalid kid {kid!r}")
        pem = data.get(kid + _PEM_SUFFIX)
        if pem is None:
            raise KeyRingError(f"Secret data has no {kid + _PEM_SUFFIX!r} entry")
        try:
            key = SigningKey.from_pem(pem)
        except KeyLoadError as exc:
            raise KeyRingError(f"{kid + _PEM_SUFFIX}: {exc}") from None
        # Catches PEMs swapped between entries, which would publish the wrong kid.
        if key.kid != kid or key.algorithm != entry.get("algorithm"):
            raise KeyRingError(f"{kid + _PEM_SUFFIX} holds a different key than the index says")
        created_at = _parse_dt(entry.get("createdAt"), f"{kid} createdAt")
        if created_at is None:
            raise KeyRingError(f"{INDEX_ENTRY}: {kid} has no createdAt")
        return KeyRecord(
            key=key,
            created_at=created_at,
            retired_at=_parse_dt(entry.get("retiredAt"), f"{kid} retiredAt"),
            signed_until=_parse_dt(entry.get("signedUntil"), f"{kid} signedUntil"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyRing):
            return NotImplemented
        return self.records == other.records

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"KeyRing(active={self.active.kid!r}, kids={list(self._records)!r})"
