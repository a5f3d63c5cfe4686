"""Entitlement guards, their messages, and the unlicensed fallback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from tenantry.license import (
    FEATURE_DATA_EXPORT,
    FEATURE_JOBS,
    FEATURE_OTA_UPDATES,
    FEATURE_SCHEDULED_JOBS,
    LIMIT_DEVICES,
    UNLICENSED_ENTITLEMENTS,
    UNLIMITED,
    EntitlementError,
    Entitlements,
    FeatureNotAvailable,
    KeySet,
    LicenseClaims,
    LicenseError,
    LicenseState,
    LicenseStatus,
    LimitExceeded,
    SigningKey,
    is_unlimited,
    issue,
)

Check = Callable[..., LicenseStatus]
ClaimsFactory = Callable[..., LicenseClaims]

PRO = Entitlements(
    features={"jobs": True, "ota_updates": False},
    limits={"devices": 50, "users": UNLIMITED, "api_keys": 1, "projects": 3},
    plan_code="pro",
    plan_name="professional",
)


def test_limit_message_names_plan_limit_and_usage() -> None:
    PRO.check_limit("devices", 49)  # one more still fits
    with pytest.raises(LimitExceeded) as caught:
        PRO.check_limit("devices", 50)
    assert str(caught.value) == (
        "Your professional plan allows a maximum of 50 devices. "
        "You currently have 50 active devices. Upgrade your plan to add more."
    )
    assert caught.value.details == {
        "code": "limit_exceeded",
        "message": str(caught.value),
        "limit_name": "devices",
        "limit": 50,
        "current": 50,
        "plan": "professional",
        "plan_code": "pro",
        "licensed": True,
    }


def test_limit_message_singular_and_unknown_units() -> None:
    with pytest.raises(LimitExceeded) as caught:
        PRO.check_limit("api_keys", 1)
    assert str(caught.value) == (
        "Your professional plan allows a maximum of 1 API key. "
        "You currently have 1 API key. Upgrade your plan to add more."
    )
    with pytest.raises(LimitExceeded) as caught:
        PRO.check_limit("projects", 7)
    assert str(caught.value) == (
        "Your professional plan allows a maximum of 3 projects. "
        "You currently have 7 projects. Upgrade your plan to add more."
    )


def test_unlimited_and_unknown_limits() -> None:
    assert UNLIMITED == -1
    assert is_unlimited(UNLIMITED)
    assert PRO.is_unlimited("users")
    PRO.check_limit("users", 10**9)
    assert PRO.remaining("users", 10**9) is None
    assert PRO.remaining("devices", 45) == 5

    # What the license does not mention is not granted.
    assert PRO.limit("gpus") == 0
    assert not PRO.is_unlimited("gpus")
    with pytest.raises(LimitExceeded, match="a maximum of 0 gpus"):
        PRO.check_limit("gpus", 0)
    with pytest.raises(ValueError, match="current must be >= 0"):
        PRO.check_limit("devices", -1)


def test_feature_guard() -> None:
    PRO.require_feature("jobs")
    with pytest.raises(FeatureNotAvailable) as caught:
        PRO.require_feature("ota_updates")
    assert str(caught.value) == (
        "Your professional plan does not include OTA updates. "
        "Upgrade your plan to use this feature."
    )
    assert caught.value.details == {
        "code": "feature_not_available",
        "message": str(caught.value),
        "feature": "ota_updates",
        "plan": "professional",
        "plan_code": "pro",
        "licensed": True,
    }
    assert not PRO.feature("teleportation")
    with pytest.raises(FeatureNotAvailable, match="does not include teleportation"):
        PRO.require_feature("teleportation")


def test_guard_errors_share_the_base_class() -> None:
    for error in (FeatureNotAvailable, LimitExceeded):
        assert issubclass(error, EntitlementError)
        assert issubclass(error, LicenseError)


def test_unlicensed_fallback_values() -> None:
    fallback = UNLICENSED_ENTITLEMENTS
    assert not fallback.licensed
    assert fallback.limit(LIMIT_DEVICES) == 2
    assert fallback.feature(FEATURE_JOBS)
    assert not fallback.feature(FEATURE_SCHEDULED_JOBS)
    assert not fallback.feature(FEATURE_OTA_UPDATES)
    assert not fallback.feature(FEATURE_DATA_EXPORT)
    assert fallback.evaluation_period == timedelta(days=7)


def test_unlicensed_fallback_messages() -> None:
    UNLICENSED_ENTITLEMENTS.check_limit("devices", 1)
    with pytest.raises(LimitExceeded) as caught:
        UNLICENSED_ENTITLEMENTS.check_limit("devices", 2)
    assert str(caught.value) == (
        "This unlicensed instance (evaluation mode) allows a maximum of 2 devices. "
        "You currently have 2 active devices. Install a license to add more."
    )
    assert caught.value.details["plan"] is None
    assert caught.value.details["licensed"] is False

    with pytest.raises(FeatureNotAvailable) as feature:
        UNLICENSED_ENTITLEMENTS.require_feature("data_export")
    assert str(feature.value) == (
        "This unlicensed instance (evaluation mode) does not include data export. "
        "Install a license to use this feature."
    )


def test_fallback_cannot_be_modified_by_a_caller() -> None:
    with pytest.raises(TypeError):
        UNLICENSED_ENTITLEMENTS.limits["devices"] = 1000  # type: ignore[index]
    with pytest.raises(AttributeError):
        UNLICENSED_ENTITLEMENTS.plan_name = "enterprise"  # type: ignore[misc]


def test_guards_on_a_verified_license(
    rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    status = check(issue(make_claims(), rsa_key), KeySet([rsa_key]))
    assert status.state is LicenseState.VALID
    with pytest.raises(LimitExceeded, match="Your professional plan allows a maximum of 50"):
        status.entitlements.check_limit("devices", 50)
    status.entitlements.require_feature("scheduled_jobs")
    # A license is not mutated by guarding on it: the claims still hold the plan.
    assert status.claims is not None
    assert status.claims.limits["devices"] == 50


def test_invalid_license_falls_back_to_unlicensed(
    rsa_key: SigningKey, other_rsa_key: SigningKey, make_claims: ClaimsFactory, check: Check
) -> None:
    status = check(issue(make_claims(), other_rsa_key), KeySet([rsa_key]))
    assert status.state is LicenseState.INVALID
    with pytest.raises(LimitExceeded, match="This unlicensed instance"):
        status.entitlements.check_limit("devices", 2)
