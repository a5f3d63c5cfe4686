"""Wire shapes of usage ingestion and reports."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from tenantry.core.resources import METRIC_PATTERN

MAX_BATCH: Final = 1000
MAX_VALUE: Final = 10**12
"""Largest value one event may carry: a trillion, far above any honest report.

Hourly rows and period totals are 64-bit (PostgreSQL bigint, Redis integers):
at 10^15 about 9,200 events of one tenant's hour overflowed them. At 10^12 it
takes some 9.2 million; one that still does fails only that tenant's request,
refused readably (the writer isolates it, see `writer.py`)."""


# Strict: in JSON only an RFC 3339 string with a zone, never a number (which lax
# validation would read as Unix time); in Python only a datetime. Validate JSON
# with `model_validate_json`.
Timestamp = Annotated[AwareDatetime, Strict()]
TransactionId = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[!-~]+$",
        description="Idempotency key, unique per tenant: printable ASCII without spaces.",
    ),
]
Value = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_VALUE, description="A whole number of units, 0 to 10^12; never a float."),
]
PropertyValue = StrictStr | StrictInt | StrictBool | None


def _no_nul(properties: dict[str, PropertyValue]) -> dict[str, PropertyValue]:
    # PostgreSQL's jsonb cannot hold U+0000: one such event would fail the
    # whole group commit it shares with other tenants' requests.
    for name, value in properties.items():
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            raise ValueError(
                f"property {name!r} contains a NUL character (\\u0000), which cannot be stored"
            )
    return properties


class UsageEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: TransactionId
    metric: StrictStr = Field(
        max_length=63, pattern=METRIC_PATTERN, description="A metric of the tenant's plan."
    )
    value: Value
    timestamp: Timestamp = Field(description="When the usage happened (RFC 3339, with zone).")
    properties: dict[StrictStr, PropertyValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Scalar properties (no NUL characters); a unique_count metric counts the "
        "distinct values of its `field` property.",
    )

    _properties_storable = field_validator("properties")(_no_nul)


class UsageBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[UsageEvent] = Field(min_length=1, max_length=MAX_BATCH)


class UsageAccepted(BaseModel):
    accepted: int = Field(description="Events counted now.")
    duplicates: int = Field(description="Events already counted before (replays): not again.")


class RejectedEvent(BaseModel):
    index: int = Field(description="Position of the event in the batch, from 0.")
    transaction_id: str | None = None
    code: str
    message: str


class Snapshot(BaseModel):
    """What an instance observes now, mapped onto plan metrics.

    Gauges (`active_devices`, `storage_bytes`) are the value now; counters
    (`messages`, `bytes`) are the amounts since the previous snapshot.
    """

    model_config = ConfigDict(extra="forbid")

    snapshot_id: StrictStr = Field(
        min_length=1,
        max_length=96,
        pattern=r"^[!-~]+$",
        description="Unique per snapshot (printable ASCII): replays are no-ops.",
    )
    timestamp: Timestamp
    active_devices: Value | None = Field(default=None, description="-> metric `devices`.")
    messages: Value | None = Field(default=None, description="-> metric `messages`.")
    bytes: Value | None = Field(default=None, description="-> metric `bytes`.")
    storage_bytes: Value | None = Field(default=None, description="-> metric `storage_bytes`.")


SNAPSHOT_METRICS: Final = {
    "active_devices": "devices",
    "messages": "messages",
    "bytes": "bytes",
    "storage_bytes": "storage_bytes",
}


class SnapshotAccepted(UsageAccepted):
    ignored: list[str] = Field(
        default_factory=list,
        description="Snapshot fields not counted: the tenant's plan does not meter their "
        "metric, or meters it as unique_count (which counts distinct values, not figures).",
    )


class HourlyUsage(BaseModel):
    hour: dt.datetime
    value: int
    events: int


class MetricUsage(BaseModel):
    aggregation: str
    value: int = Field(description="The period's figure, by the metric's aggregation.")
    hours: list[HourlyUsage] = Field(default_factory=list)


class UsageReport(BaseModel):
    tenant: str
    period: str = Field(description="The billing period, an ISO 8601 interval in UTC.")
    period_start: dt.datetime
    period_end: dt.datetime
    metrics: dict[str, MetricUsage]
