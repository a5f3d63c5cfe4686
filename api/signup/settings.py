"""Signup's configuration: `TENANTRY_SIGNUP_*`. Off until a namespace is set."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.resources import NAME_PATTERN


class SignupSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_SIGNUP_", frozen=True, extra="ignore")

    namespace: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Namespace the Tenants and Subscriptions of signups are made in. Unset: "
        "signup is off (404).",
    )
    plans: str = Field(
        default="",
        description="Comma-separated names of the Plans a signup may choose; the first is "
        "the default. Required with a namespace.",
    )
    trial_days: int | None = Field(
        default=None, ge=0, le=730, description="Trial length of a signup; default the Plan's."
    )
    rate_limit: int = Field(
        default=5, ge=1, description="Signups accepted per client address per window."
    )
    rate_window: int = Field(default=3600, ge=1, description="The window, in seconds.")
    link_ttl: int = Field(
        default=86_400, ge=60, description="Seconds the checkout link of a signup works."
    )

    @field_validator("plans")
    @classmethod
    def _names(cls, value: str) -> str:
        for name in filter(None, (p.strip() for p in value.split(","))):
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a Plan name (lower case, digits, dashes)")
        return value

    @model_validator(mode="after")
    def _plans_with_namespace(self) -> SignupSettings:
        if self.namespace and not self.offered:
            raise ValueError(
                "TENANTRY_SIGNUP_PLANS is empty: list the Plans a signup may choose "
                "(comma-separated), or unset TENANTRY_SIGNUP_NAMESPACE to turn signup off"
            )
        return self

    @property
    def offered(self) -> list[str]:
        return [p.strip() for p in self.plans.split(",") if p.strip()]

    @property
    def enabled(self) -> bool:
        return self.namespace is not None
