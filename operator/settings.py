"""The operator's configuration: environment variables prefixed `TENANTRY_OPERATOR_`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_CHART = Path(__file__).resolve().parent.parent / "charts" / "customer-instance"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_OPERATOR_", frozen=True)

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
    namespace_prefix: str = "tenant-"
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL (postgresql+psycopg://...) for API key hashes and license "
        "history; the API service owns and migrates the schema.",
    )
