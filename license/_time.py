"""Time helpers: every instant in this package is a timezone-aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(moment: datetime, *, name: str = "datetime") -> datetime:
    """Return ``moment`` in UTC; naive datetimes are refused because their zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {moment!r})")
    return moment.astimezone(UTC)


def to_epoch(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded down (JWT NumericDate)."""
    return int(utc(moment).timestamp() // 1)


def from_epoch(seconds: int) -> datetime:
    """The UTC datetime of a JWT NumericDate."""
    return datetime.fromtimestamp(seconds, UTC)


def now_utc() -> datetime:
    """Wall-clock time; only used when the caller did not inject ``now``."""
    return datetime.now(UTC)
