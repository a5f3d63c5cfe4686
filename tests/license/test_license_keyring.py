"""Key rotation, pruning, and the Kubernetes Secret round trip."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import jwt
import pytest

from tenantry.license import (
    InvalidReason,
    KeyRecord,
    KeyRing,
    KeyRingError,
    KeySet,
    LicenseClaims,
    LicenseState,
    LicenseStatus,
    SigningKey,
)

Check = Callable[..., LicenseStatus]
ClaimsFactory = Callable[..., LicenseClaims]
DAY = timedelta(days=1)


def _kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _published(ring: KeyRing) -> KeySet:
    """What an instance sees: the JWKS document, as served."""
    return KeySet.from_jwks(ring.public_keys().to_jwks())


def test_rotation_keeps_old_licenses_verifiable(
    make_claims: ClaimsFactory, now: datetime, check: Check
) -> None:
    ring = KeyRing.create(now, "RS256")
    old_kid = ring.active.kid
    old_license = ring.issue(make_claims())

    new_key = ring.rotate(now + DAY, algorithm="EdDSA")
    new_license = ring.issue(make_claims(now=now + DAY))

    assert ring.active == new_key
    assert new_key.kid != old_kid
    assert new_key.algorithm == "EdDSA"
    assert set(_published(ring).kids) == {old_kid, new_key.kid}

    old_status = check(old_license, _published(ring), now=now + 2 * DAY)
    new_status = check(new_license, _published(ring), now=now + 2 * DAY)
    assert old_status.state is LicenseState.VALID
    assert new_status.state is LicenseState.VALID
    assert _kid_of(old_license) == old_kid
    assert _kid_of(new_license) == new_key.kid


def test_rotation_records_lifecycle(now: datetime) -> None:
    ring = KeyRing.create(now, "EdDSA")
    first = ring.active_record
    ring.rotate(now + DAY)

    retired = ring.get(first.kid)
    assert retired is not None
    assert retired.retired_at == now + DAY
    assert not retired.active
    assert ring.active_record.created_at == now + DAY
    assert ring.active.algorithm == "EdDSA"  # rotation keeps the algorithm unless told
    assert [r.active for r in ring.records] == [False, True]


def test_note_signed_keeps_the_latest_expiry(now: datetime) -> None:
    ring = KeyRing.create(now, "EdDSA")
    kid = ring.active.kid
    ring.note_signed(kid, now + 30 * DAY)
    ring.note_signed(kid, now + 10 * DAY)
    record = ring.get(kid)
    assert record is not None
    assert record.signed_until == now + 30 * DAY
    with pytest.raises(KeyRingError, match="unknown key"):
        ring.note_signed("nope", now)


def test_prune_drops_the_old_key_only_after_its_licenses_expire(
    make_claims: ClaimsFactory, now: datetime, check: Check
) -> None:
    ring = KeyRing.create(now, "EdDSA")
    old_kid = ring.active.kid
    old_license = ring.issue(make_claims())  # exp = now + 30 days
    expires = now + 30 * DAY
    ring.rotate(now + DAY)
    grace = 7 * DAY

    # Still in use (or within grace): kept.
    assert ring.prune(expires, grace=grace) == []
    assert ring.prune(expires + grace, grace=grace) == []
    assert check(old_license, _published(ring), now=expires + grace, grace=grace).state is (
        LicenseState.GRACE
    )

    # One second after the last license's grace ends: dropped, and only that key.
    assert ring.prune(expires + grace + timedelta(seconds=1), grace=grace) == [old_kid]
    assert old_kid not in _published(ring)
    assert len(ring.records) == 1
    status = check(old_license, _published(ring), now=now)
    assert status.reason_code is InvalidReason.UNKNOWN_KID


def test_prune_never_drops_the_active_key(now: datetime) -> None:
    ring = KeyRing.create(now, "EdDSA")
    ring.note_signed(ring.active.kid, now)
    assert ring.prune(now + 1000 * DAY) == []
    assert len(ring.records) == 1


def test_prune_drops_a_retired_key_that_never_signed(now: datetime) -> None:
    ring = KeyRing.create(now, "EdDSA")
    unused = ring.active.kid
    ring.rotate(now)
    assert ring.prune(now) == [unused]


def test_exactly_one_active_key(ed_key: SigningKey, rsa_key: SigningKey, now: datetime) -> None:
    with pytest.raises(KeyRingError, match="exactly one active key, found 2"):
        KeyRing([KeyRecord(ed_key, created_at=now), KeyRecord(rsa_key, created_at=now)])
    with pytest.raises(KeyRingError, match="found 0"):
        KeyRing([KeyRecord(ed_key, created_at=now, retired_at=now)])


def test_secret_data_round_trip_is_exact(
    make_claims: ClaimsFactory, now: datetime, check: Check
) -> None:
    ring = KeyRing.create(now, "RS256")
    ring.issue(make_claims())
    ring.rotate(now + DAY, algorithm="EdDSA")
    # Sub-second precision must survive too.
    ring.note_signed(ring.active.kid, now + 40 * DAY + timedelta(microseconds=123456))

    data = ring.to_secret_data()
    assert all(isinstance(value, str) for value in data.values())
    # Valid Kubernetes Secret keys.
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", name) for name in data)
    assert set(data) == {"keyring.json"} | {f"{r.kid}.pem" for r in ring.records}

    restored = KeyRing.from_secret_data(data)
    assert restored == ring
    assert restored.to_secret_data() == data
    assert restored.active.kid == ring.active.kid
    assert [r.signed_until for r in restored.records] == [r.signed_until for r in ring.records]

    # The restored ring signs licenses that the original's published keys accept.
    token = restored.issue(make_claims(now=now + DAY))
    assert check(token, _published(ring), now=now + DAY).state is LicenseState.VALID


def test_secret_data_inconsistencies_are_reported(now: datetime) -> None:
    ring = KeyRing.create(now, "EdDSA")
    ring.rotate(now)
    data = ring.to_secret_data()
    first, second = (f"{r.kid}.pem" for r in ring.records)

    swapped = {**data, first: data[second], second: data[first]}
    with pytest.raises(KeyRingError, match="different key"):
        KeyRing.from_secret_data(swapped)

    missing = {k: v for k, v in data.items() if k != first}
    with pytest.raises(KeyRingError, match=r"has no .*\.pem"):
        KeyRing.from_secret_data(missing)

    with pytest.raises(KeyRingError, match="not in the index"):
        KeyRing.from_secret_data({**data, "stray.pem": data[first]})

    with pytest.raises(KeyRingError, match=r"no 'keyring\.json' entry"):
        KeyRing.from_secret_data({first: data[first]})

    with pytest.raises(KeyRingError, match="not JSON"):
        KeyRing.from_secret_data({**data, "keyring.json": "{"})


def test_secret_data_never_logs_in_repr(now: datetime) -> None:
    ring = KeyRing.create(now, "EdDSA")
    assert "PRIVATE" not in repr(ring)
    assert "PRIVATE" not in repr(ring.active_record)
