"""Wire shapes of introspection and key listings."""

from __future__ import annotations

import datetime as dt

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from tenantry.api.quotas.schemas import QuotaState


class IntrospectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(
        max_length=256,
        validation_alias=AliasChoices("apiKey", "api_key"),
        description="The key a client presented (`apiKey`; `api_key` is accepted too).",
    )


class TenantRef(BaseModel):
    namespace: str
    name: str
    uid: str
    instance_namespace: str | None = Field(description="Namespace of the tenant's instance.")


class PlanRef(BaseModel):
    name: str
    display_name: str


class Introspection(BaseModel):
    """`active: false` and nothing else for any key that is not usable (RFC 7662 style)."""

    active: bool
    tenant: TenantRef | None = None
    key_prefix: str | None = None
    scopes: list[str] | None = None
    expires_at: dt.datetime | None = None
    plan: PlanRef | None = None
    quotas: dict[str, QuotaState] | None = Field(
        default=None, description="Per limited metric of the plan, this period."
    )
    quota_source: str | None = Field(
        default=None, description="`redis`, or `database` while Redis is unreachable."
    )


class ApiKeyInfo(BaseModel):
    resource: str = Field(description="The ApiKey object, `namespace/name`.")
    prefix: str
    scopes: list[str]
    active: bool
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class ApiKeyList(BaseModel):
    tenant: str
    keys: list[ApiKeyInfo]
