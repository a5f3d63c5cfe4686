"""Webhooks out in the API service: the endpoints (`TENANTRY_WEBHOOKS`) and how
deliveries are retried (`TENANTRY_WEBHOOKS_*`). Off without endpoints."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.outbound import Endpoints


class WebhookSettings(BaseSettings):
    # Errors do not repeat what was refused: it may hold the endpoints' secrets.
    model_config = SettingsConfigDict(
        env_prefix="TENANTRY_WEBHOOKS_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    endpoints: Endpoints = Field(
        default=(),
        validation_alias="TENANTRY_WEBHOOKS",
        description='A JSON list: [{"name": "crm", "url": "https://...", "secret": "whsec_...", '
        '"events": ["invoice.*", "subscription.state_changed"]}]; the operator reads the same.',
    )
    timeout: float = Field(default=5.0, gt=0, le=60, description="Seconds one POST may take.")
    retry_base: float = Field(
        default=10.0, gt=0, description="Seconds before the first retry; each one doubles it."
    )
    retry_cap: float = Field(default=21_600.0, gt=0, description="Longest wait between attempts.")
    max_attempts: int = Field(
        default=18, ge=1, le=100, description="Attempts before a delivery is marked failed."
    )
    poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between looks for due deliveries."
    )
    batch: int = Field(default=20, ge=1, le=500, description="Deliveries sent at once.")
