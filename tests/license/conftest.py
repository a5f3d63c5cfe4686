"""Shared fixtures for the tenantry.license tests.

RSA key generation is the slow part, so keys are generated once per session.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenantry.license import (
    KeySet,
    LicenseClaims,
    LicenseStatus,
    Plan,
    SigningKey,
    Subscription,
    SubscriptionStatus,
    Tenant,
    Trial,
    new_license_claims,
    verify,
)

ISSUER = "https://licenses.example.com"
AUDIENCE = "tenantry-instance"
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
TTL = timedelta(days=30)

ClaimsFactory = Callable[..., LicenseClaims]


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return SigningKey.generate("RS256")


@pytest.fixture(scope="session")
def ed_key() -> SigningKey:
    return SigningKey.generate("EdDSA")


@pytest.fixture(scope="session")
def other_rsa_key() -> SigningKey:
    return SigningKey.generate("RS256")


@pytest.fixture(params=["RS256", "EdDSA"])
def signing_key(
    request: pytest.FixtureRequest, rsa_key: SigningKey, ed_key: SigningKey
) -> SigningKey:
    return rsa_key if request.param == "RS256" else ed_key


@pytest.fixture
def make_claims() -> ClaimsFactory:
    def factory(**overrides: Any) -> LicenseClaims:
        arguments: dict[str, Any] = {
            "tenant": Tenant(id="tnt_42", name="Acme Robotics"),
            "plan": Plan(code="pro", name="professional"),
            "subscription": Subscription(
                status=SubscriptionStatus.ACTIVE, current_period_end=NOW + TTL
            ),
            "now": NOW,
            "ttl": TTL,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "features": {"jobs": True, "scheduled_jobs": True, "ota_updates": False},
            "limits": {"devices": 50, "users": -1},
            "trial": Trial(is_trial_mode=False),
        }
        arguments.update(overrides)
        return new_license_claims(**arguments)

    return factory


@pytest.fixture
def now() -> datetime:
    """The injected clock: the instant licenses built by ``make_claims`` are issued."""
    return NOW


@pytest.fixture
def issuer() -> str:
    return ISSUER


@pytest.fixture
def audience() -> str:
    return AUDIENCE


@pytest.fixture
def check() -> Callable[..., LicenseStatus]:
    """``verify`` with the test issuer, audience and clock filled in."""

    def run(token: str | None, keys: KeySet, **overrides: Any) -> LicenseStatus:
        arguments: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": NOW}
        arguments.update(overrides)
        return verify(token, keys, **arguments)

    return run
