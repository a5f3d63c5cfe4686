"""The operator's configuration: environment variables prefixed `TENANTRY_OPERATOR_`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.outbound import Endpoints

_REPO_CHART = Path(__file__).resolve().parent.parent / "charts" / "customer-instance"


class OperatorSettings(BaseSettings):
    # Errors do not repeat what was refused: it may be a secret (webhooks, Stripe).
    model_config = SettingsConfigDict(
        env_prefix="TENANTRY_OPERATOR_", frozen=True, hide_input_in_errors=True
    )

    namespace: str = Field(
        default="tenantry-system",
        description="Namespace of the operator's own objects (the signing-key Secret).",
    )
    signing_key_secret: str = Field(
        default="tenantry-signing-keys", description="Secret holding the license signing keys."
    )
    signing_algorithm: Literal["RS256", "EdDSA"] = "RS256"
    public_keys_configmap: str = Field(
        default="tenantry-public-keys",
        description="ConfigMap with the signing keys' public halves (what the API publishes).",
    )
    revocation_secret: str = Field(
        default="tenantry-revocations",
        description="Secret holding the signed list of revoked license ids.",
    )
    chart_path: Path = Field(
        default=_REPO_CHART, description="The customer-instance chart (a directory)."
    )
    helm: str = Field(default="helm", description="The helm executable.")
    helm_timeout: str = "2m"
    release_name: str = Field(default="instance", description="Helm release name per tenant.")
    license_secret: str = Field(
        default="tenantry-license", description="Secret in each tenant namespace for its license."
    )
    license_issuer: str = "tenantry"
    license_audience: str = "tenantry-instance"
    license_ttl: dt.timedelta = Field(default=dt.timedelta(days=30))
    license_renew_before: dt.timedelta = Field(
        default=dt.timedelta(days=7), description="Renew a license this long before it expires."
    )
    license_grace: dt.timedelta = Field(
        default=dt.timedelta(days=7),
        description="How long instances keep working past a license's expiry; retired "
        "signing keys stay published this much longer.",
    )
    drift_interval: float = Field(
        default=60.0, gt=0, description="Seconds between drift repairs of each Tenant."
    )
    subscription_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between passes over each Subscription: trials end, periods turn "
        "and invoices fall due with time alone.",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        description="Stripe secret key: with it, Plans, Tenants, Subscriptions, Coupons and "
        "TaxRates are kept in step with Stripe.",
    )
    stripe_api_base: str | None = Field(
        default=None, description="Stripe's API address; only for stripe-mock in tests."
    )
    stripe_customer_on_delete: Literal["keep", "delete"] = Field(
        default="keep",
        description="What a deleted Tenant does to its Stripe Customer: keep it (invoices and "
        "payments stay), or delete it (to erase personal data).",
    )
    webhooks: Endpoints = Field(
        default=(),
        validation_alias="TENANTRY_WEBHOOKS",
        description="Webhooks out (a JSON list, the API's TENANTRY_WEBHOOKS): subscription and "
        "tenant events are enqueued for the API to deliver (needs database_url).",
    )
    namespace_prefix: str = "tenant-"
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL (postgresql+psycopg://...) for API key hashes and license "
        "history; the API service owns and migrates the schema.",
    )
