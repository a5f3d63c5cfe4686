"""Wire shapes of quotas."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tenantry.api.usage.schemas import TransactionId, Value
from tenantry.core.resources import METRIC_PATTERN


class QuotaState(BaseModel):
    limit: int = Field(description="The plan's limit for the period.")
    used: int = Field(description="Counted so far in the period.")
    remaining: int = Field(description="Left before the limit (0 when over it).")
    period: str = Field(
        description="The tenant's billing period, an ISO 8601 interval in UTC "
        "(`2026-11-15T00:00:00Z/2026-12-15T00:00:00Z`)."
    )


class Quotas(BaseModel):
    tenant: str
    plan: str | None
    quotas: dict[str, QuotaState] = Field(description="Per limited metric of the plan.")
    source: Literal["redis", "database"] = Field(
        description="Where the figures came from: `database` while Redis is unreachable."
    )


class ConsumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(
        max_length=63, pattern=METRIC_PATTERN, description="A count or sum metric of the plan."
    )
    amount: Value = Field(default=1, description="Units this request uses (1 for count metrics).")
    transaction_id: TransactionId | None = Field(
        default=None,
        description="Idempotency key: a retried call with the same id is admitted again "
        "without being counted twice. Recorded as the usage event's transaction id.",
    )


class ConsumeResult(BaseModel):
    admitted: Literal[True] = True
    duplicate: bool = Field(description="True when this transaction id was counted before.")
    metric: str
    limit: int = Field(description="-1 when the plan sets no limit.")
    used: int | None = Field(description="Counted so far in the period, this request included.")
    remaining: int | None = Field(description="Left in the period; null when unlimited.")
    period: str = Field(
        description="The tenant's billing period, an ISO 8601 interval in UTC "
        "(`2026-11-15T00:00:00Z/2026-12-15T00:00:00Z`)."
    )
