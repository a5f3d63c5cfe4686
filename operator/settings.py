"""The operator's configuration: environment variables prefixed `TENANTRY_OPERATOR_`."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenantry.core.outbound import Endpoints
from tenantry.operator.sharding import Shard

# Shipped inside the package (in a checkout, a link to charts/customer-instance).
_PACKAGED_CHART = Path(__file__).resolve().parent / "charts" / "customer-instance"


def _helm_concurrency() -> int:
    # A helm install or upgrade costs about half a CPU-second and waits on the API
    # server for longer: four per core keeps the machine busy without thrashing it.
    return max(2, 4 * (os.cpu_count() or 1))


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
        default=_PACKAGED_CHART,
        description="The bundled customer-instance chart (a directory): what a Plan without "
        "a `chart` source runs.",
    )
    chart_cache: Path = Field(
        default=Path(tempfile.gettempdir()) / "tenantry" / "charts",
        description="Directory of the charts pulled from OCI registries and chart "
        "repositories, one per content digest (see operator/charts_source.py).",
    )
    chart_plain_http: tuple[str, ...] = Field(
        default=("localhost", "127.0.0.1", "[::1]"),
        description="OCI registries charts are pulled from over plain HTTP (a JSON list of "
        "hosts, or `host:port`s); every other one is reached over TLS. By default those on "
        "loopback.",
    )
    api_url: str = Field(
        default="",
        description="The API service's URL as instances reach it (e.g. "
        "`http://tenantry-api.tenantry-system.svc:8000`): `tenantry.api.url` in every "
        "instance's values.",
    )
    instance_key_secret: str = Field(
        default="tenantry-api-key",
        description="Secret in each tenant namespace the instance reads its API key from "
        "(`tenantry.api.keySecretName`): an ApiKey with this `spec.secretName` fills it.",
    )
    peering_lifetime: int = Field(
        default=15,
        ge=5,
        le=600,
        description="Seconds a replica's peering keep-alive counts: a replica killed without "
        "notice is taken over this long after its last keep-alive at most.",
    )
    shards: int = Field(
        default=1,
        ge=1,
        description="How many operators share the Tenants, each with its own `shard` and its "
        "own replicas (see operator/sharding.py).",
    )
    shard: int = Field(
        default=0,
        ge=0,
        description="This operator's shard, 0 to `shards - 1`: it handles the Tenants whose "
        "namespace/name hashes to it, with their Subscriptions and ApiKeys; shard 0 also "
        "handles Plans, Coupons and TaxRates.",
    )
    helm: str = Field(default="helm", description="The helm executable.")
    helm_timeout: str = "2m"
    helm_concurrency: int = Field(
        default_factory=_helm_concurrency,
        ge=1,
        description="Most helm processes at once (default: four per CPU, at least two). "
        "Creations, deletions and resumes get a free slot before periodic drift checks.",
    )
    kube_connections: int = Field(
        default=16,
        ge=1,
        description="Most requests to the Kubernetes API server at once, each on a connection "
        "of its own, for the operator's own client and as many for kopf's (beside kopf's watch "
        "streams); requests beyond them queue, the client's for up to `kube_timeout` seconds. "
        "Each connection costs about 0.3 MB: requests answer in milliseconds, so a few "
        "connections carry the bounded work.",
    )
    kube_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a Kubernetes API request may wait for a free connection, and "
        "then for the server (each); a transport error is retried in a few seconds.",
    )
    metrics_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics (`GET /metrics` on all interfaces); 0 "
        "turns them off. Reconciles by kind and result with durations, helm operations in "
        "flight and waiting, Tenants by readiness, helm failures.",
    )
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
        default=60.0,
        gt=0,
        description="Seconds between drift checks of each Tenant; the first waits a random "
        "part of one more interval, so the checks of many Tenants spread out. A check that "
        "finds nothing changed reads the API server only; helm runs when something differs.",
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

    @model_validator(mode="after")
    def _shard_exists(self) -> OperatorSettings:
        if self.shard >= self.shards:
            raise ValueError(
                f"TENANTRY_OPERATOR_SHARD is {self.shard}, but with TENANTRY_OPERATOR_SHARDS="
                f"{self.shards} the shards are numbered 0 to {self.shards - 1}"
            )
        return self

    @property
    def sharding(self) -> Shard:
        return Shard(self.shard, self.shards)
