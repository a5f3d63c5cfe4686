"""The dashboard's configuration: environment variables prefixed `TENANTRY_DASHBOARD_`."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_DASHBOARD_", frozen=True, extra="ignore")

    session_ttl: int = Field(
        default=8 * 3600, ge=60, le=7 * 86400, description="Seconds a team sign-in lasts."
    )
    link_ttl: int = Field(
        default=7 * 86400,
        ge=60,
        le=90 * 86400,
        description="Seconds a customer link lasts (at most 90 days).",
    )
    secure_cookie: bool = Field(
        default=True,
        description="Mark the session cookie `Secure` (sent over HTTPS only; browsers also "
        "send it to http://localhost). Turn off only behind plain HTTP on a private network.",
    )
    public_url: str = Field(
        default="",
        description="Base URL customer links are built on (e.g. https://billing.example.com); "
        "default: the URL the request came in on.",
    )
    fleet_ttl: float = Field(
        default=5.0,
        gt=0,
        description="Seconds the fleet list (every Tenant and Subscription, one LIST each) is "
        "reused; an older one is still shown while one background read refreshes it.",
    )
    page_size: int = Field(default=50, ge=10, le=500, description="Tenants per fleet page.")
