"""Entitlements (what an instance may do) and the guards that enforce them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Final, NamedTuple

from ._claims import UNLIMITED, LicenseClaims
from ._errors import FeatureNotAvailable, LimitExceeded

__all__ = [
    "FEATURE_DATA_EXPORT",
    "FEATURE_JOBS",
    "FEATURE_OTA_UPDATES",
    "FEATURE_SCHEDULED_JOBS",
    "LIMIT_DEVICES",
    "UNLICENSED_ENTITLEMENTS",
    "UNLICENSED_EVALUATION_PERIOD",
    "Entitlements",
]

# Well-known feature and limit names, shared by the operator, the API and instances.
FEATURE_JOBS: Final = "jobs"
FEATURE_SCHEDULED_JOBS: Final = "scheduled_jobs"
FEATURE_OTA_UPDATES: Final = "ota_updates"
FEATURE_DATA_EXPORT: Final = "data_export"
LIMIT_DEVICES: Final = "devices"

#: How long an unlicensed instance is meant to run as an evaluation. The library
#: cannot know when an instance started; the instance tracks that itself.
UNLICENSED_EVALUATION_PERIOD: Final = timedelta(days=7)


class _Unit(NamedTuple):
    one: str  # "a maximum of 1 device"
    many: str  # "a maximum of 50 devices"
    current_one: str  # "you currently have 1 active device"
    current_many: str  # "you currently have 50 active devices"


# Nouns for limits users see often; any other limit name is shown as-is (underscores as spaces).
_LIMIT_UNITS: Final[Mapping[str, _Unit]] = {
    LIMIT_DEVICES: _Unit("device", "devices", "active device", "active devices"),
    "users": _Unit("user", "users", "user", "users"),
    "api_keys": _Unit("API key", "API keys", "API key", "API keys"),
    "scheduled_jobs": _Unit("scheduled job", "scheduled jobs", "scheduled job", "scheduled jobs"),
}

_FEATURE_NOUNS: Final[Mapping[str, str]] = {
    FEATURE_JOBS: "jobs",
    FEATURE_SCHEDULED_JOBS: "scheduled jobs",
    FEATURE_OTA_UPDATES: "OTA updates",
    FEATURE_DATA_EXPORT: "data export",
}

_UNLICENSED_SUBJECT: Final = "This unlicensed instance (evaluation mode)"


def _unit(name: str) -> _Unit:
    if name in _LIMIT_UNITS:
        return _LIMIT_UNITS[name]
    noun = name.replace("_", " ")
    return _Unit(noun, noun, noun, noun)


@dataclass(frozen=True, slots=True)
class Entitlements:
    """Features and limits in force, and the plan they come from.

    Unknown features are off and unknown limits are 0: what a license does not
    grant is denied. ``plan_name`` is ``None`` for the unlicensed fallback.
    """

    features: Mapping[str, bool] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)
    plan_code: str | None = None
    plan_name: str | None = None
    #: Set only on the unlicensed fallback: how long the evaluation is meant to last.
    evaluation_period: timedelta | None = None

    def __post_init__(self) -> None:
        # Read-only views, so a shared instance (the fallback) cannot be altered by a caller.
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))
        object.__setattr__(self, "limits", MappingProxyType(dict(self.limits)))

    @classmethod
    def from_claims(cls, claims: LicenseClaims) -> Entitlements:
        """The entitlements a verified license grants."""
        return cls(
            features=claims.features,
            limits=claims.limits,
            plan_code=claims.plan.code,
            plan_name=claims.plan.name,
        )

    @property
    def licensed(self) -> bool:
        """False for the unlicensed fallback."""
        return self.plan_name is not None

    def feature(self, name: str) -> bool:
        """Whether feature ``name`` is enabled (unknown features are off)."""
        return self.features.get(name, False)

    def limit(self, name: str) -> int:
        """The maximum for ``name``: a count, or :data:`UNLIMITED` (-1). Unknown limits are 0."""
        return self.limits.get(name, 0)

    def is_unlimited(self, name: str) -> bool:
        """True if ``name`` has no maximum."""
        return self.limit(name) == UNLIMITED

    def remaining(self, name: str, current: int) -> int | None:
        """How many more ``name`` may be added given ``current``; ``None`` if unlimited."""
        limit = self.limit(name)
        return None if limit == UNLIMITED else max(0, limit - current)

    def require_feature(self, name: str) -> None:
        """Raise :class:`FeatureNotAvailable` unless feature ``name`` is enabled."""
        if self.feature(name):
            return
        noun = _FEATURE_NOUNS.get(name, name.replace("_", " "))
        if self.licensed:
            message = (
                f"Your {self.plan_name} plan does not include {noun}. "
                "Upgrade your plan to use this feature."
            )
        else:
            message = (
                f"{_UNLICENSED_SUBJECT} does not include {noun}. "
                "Install a license to use this feature."
            )
        raise FeatureNotAvailable(
            message,
            feature=name,
            plan=self.plan_name,
            plan_code=self.plan_code,
            licensed=self.licensed,
        )

    def check_limit(self, name: str, current: int) -> None:
        """Raise :class:`LimitExceeded` if one more ``name`` beyond ``current`` exceeds the limit.

        ``current`` is how many exist now, so the check passes while ``current < limit``.
        """
        if current < 0:
            raise ValueError(f"current must be >= 0, not {current}")
        limit = self.limit(name)
        if limit == UNLIMITED or current < limit:
            return
        unit = _unit(name)
        allowed = f"a maximum of {limit} {unit.one if limit == 1 else unit.many}"
        have = f"{current} {unit.current_one if current == 1 else unit.current_many}"
        if self.licensed:
            message = (
                f"Your {self.plan_name} plan allows {allowed}. "
                f"You currently have {have}. Upgrade your plan to add more."
            )
        else:
            message = (
                f"{_UNLICENSED_SUBJECT} allows {allowed}. "
                f"You currently have {have}. Install a license to add more."
            )
        raise LimitExceeded(
            message,
            limit_name=name,
            limit=limit,
            current=current,
            plan=self.plan_name,
            plan_code=self.plan_code,
            licensed=self.licensed,
        )


UNLICENSED_ENTITLEMENTS: Final = Entitlements(
    features={
        FEATURE_JOBS: True,
        FEATURE_SCHEDULED_JOBS: False,
        FEATURE_OTA_UPDATES: False,
        FEATURE_DATA_EXPORT: False,
    },
    limits={LIMIT_DEVICES: 2},
    evaluation_period=UNLICENSED_EVALUATION_PERIOD,
)
"""What an instance may do without a usable license (no token, or one that is
invalid, expired past its grace, or revoked): 2 devices, jobs allowed, no
scheduled jobs, no OTA updates, no data export, meant as a 7-day evaluation
(:data:`UNLICENSED_EVALUATION_PERIOD`)."""
