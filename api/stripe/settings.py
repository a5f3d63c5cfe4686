"""Stripe's configuration in the API service: `TENANTRY_STRIPE_*`. Off without a key."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StripeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_STRIPE_", frozen=True, extra="ignore")

    api_key: SecretStr | None = Field(
        default=None, description="Secret key (sk_...). Without it Tenantry bills on its own."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret of the webhook endpoint (whsec_...)."
    )
    api_base: str | None = Field(
        default=None,
        description="Stripe's API address; only for stripe-mock in tests (http://127.0.0.1:12111).",
    )
    webhook_tolerance: int = Field(
        default=300, ge=1, le=3600, description="Seconds a signed webhook stays acceptable."
    )
    checkout_success_url: str | None = Field(
        default=None,
        description="Where Checkout sends the customer once a payment method is set up "
        "(default of `checkout-session` and the URL signup answers with).",
    )
    checkout_cancel_url: str | None = Field(
        default=None, description="Where Checkout sends a customer who gives up."
    )
    portal_return_url: str | None = Field(
        default=None, description="Where the customer portal's back link goes."
    )
    portal_configuration: str | None = Field(
        default=None,
        description="A customer portal configuration of your own (bpc_...). Default: one "
        "Tenantry makes, offering every Plan and never prorating (Tenantry prorates).",
    )

    @property
    def enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())
