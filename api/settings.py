"""The API service's configuration: environment variables prefixed `TENANTRY_`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people leave in example files; refused outside development.
PLACEHOLDERS = frozenset(
    {"", "change-me", "changeme", "change_me", "secret", "token", "admin", "password",
     "placeholder", "dev", "development", "test", "example", "xxx"}
)  # fmt: skip
MIN_TOKEN_LENGTH = 24


class InsecureSettings(ValueError):
    """A secret setting is a placeholder where placeholders are refused."""


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTRY_", frozen=True, extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="production",
        description="`development` accepts placeholder tokens (with a warning); "
        "anything else refuses to start with them.",
    )
    database_url: str = Field(
        default="postgresql+psycopg://tenantry@127.0.0.1:5432/tenantry",
        description="PostgreSQL, as a SQLAlchemy URL with the psycopg driver.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    migrate_on_start: bool = Field(
        default=True, description="Apply pending migrations when the service starts."
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Quota counters.")
    redis_timeout: float = Field(
        default=0.5, gt=0, description="Seconds before a Redis call counts as a failure."
    )
    redis_failure_mode: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        description="When Redis is unreachable: `fail_open` keeps serving and counts quotas in "
        "PostgreSQL (slower, exact), logging the fault and showing it in /readyz and the metrics; "
        "`fail_closed` answers 503 to every request that needs quota counters.",
    )
    admin_token: SecretStr = Field(
        default=SecretStr("change-me"),
        description="Bearer token of the admin endpoints (/admin, /v1/admin).",
    )
    introspection_token: SecretStr = Field(
        default=SecretStr("change-me"),
        description="Bearer token gateways present to /internal/api-keys/introspect.",
    )
    namespace: str = Field(
        default="tenantry-system",
        description="The operator's namespace (signing keys and revocation list Secrets).",
    )
    public_keys_configmap: str = Field(
        default="tenantry-public-keys",
        description="ConfigMap with the public halves of the license signing keys.",
    )
    revocation_secret: str = Field(
        default="tenantry-revocations", description="Secret with the signed revocation list."
    )
    license_secret: str = Field(
        default="tenantry-license", description="Secret in each tenant namespace with its license."
    )
    key_cache_ttl: float = Field(
        default=0.5,
        gt=0,
        le=1.0,
        description="Seconds a key lookup is cached; at most 1 s, so a revoked key stops "
        "working within a second.",
    )
    introspection_cache_ttl: float = Field(
        default=0.25,
        ge=0,
        le=1.0,
        description="Seconds an introspection answer is reused for the same key (0: never). "
        "Its quota figures may be this old for writes made through other replicas; this "
        "replica's own writes show at once. With key_cache_ttl, at most 1 s.",
    )
    catalog_ttl: float = Field(
        default=5.0, gt=0, description="Seconds Tenants and Plans read from Kubernetes are reused."
    )
    subscription_cache_ttl: float = Field(
        default=1.0,
        gt=0,
        le=2.0,
        description="Seconds a tenant's subscription end, read from PostgreSQL, is reused; "
        "never served older, so a canceled or deleted subscription stops its keys' new work "
        "within this time (at most 2 s).",
    )
    status_write_interval: float = Field(
        default=15.0, gt=0, description="Least seconds between two usage summaries of a Tenant."
    )
    last_used_interval: float = Field(
        default=30.0, gt=0, description="Seconds between writes of keys' last-used times."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body.")
    future_tolerance: float = Field(
        default=300.0, ge=0, description="Seconds an event timestamp may lie in the future."
    )
    heartbeat_timeout: float = Field(
        default=180.0,
        gt=0,
        description="Seconds without a heartbeat after which a Tenant's InstanceHealthy "
        "condition turns False (`HeartbeatMissing`).",
    )
    heartbeat_status_interval: float = Field(
        default=60.0,
        gt=0,
        description="Least seconds between two status writes of a Tenant from its heartbeats "
        "while its instance's version and health stay the same.",
    )
    heartbeat_sweep_interval: float = Field(
        default=15.0,
        ge=0,
        description="Seconds between sweeps for instances gone silent; 0 sweeps never.",
    )
    api_metrics_port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics of all workers together (`GET /metrics`, "
        "on the address `tenantry api serve --host` binds); 0 serves none. Never the public "
        "port.",
    )

    @model_validator(mode="after")
    def _revocation_within_a_second(self) -> ApiSettings:
        if self.key_cache_ttl + self.introspection_cache_ttl > 1.0:
            raise ValueError(
                "key_cache_ttl + introspection_cache_ttl must not exceed 1 s: a revoked key "
                "has to stop working within a second"
            )
        return self

    @field_validator("admin_token", "introspection_token", mode="before")
    @classmethod
    def _strip_token(cls, value: object) -> object:
        # Tokens mounted from a Secret file often end in a newline, which no
        # client sends: stripped here, or the token could never match.
        return value.strip() if isinstance(value, str) else value

    def refuse_placeholders(self) -> None:
        """Raise `InsecureSettings` if a token is a placeholder outside development.

        Checked when serving, not when migrating: `tenantry api migrate` needs no tokens.
        """
        if self.environment == "development":
            return
        for name in ("admin_token", "introspection_token"):
            value = getattr(self, name).get_secret_value()
            if value.strip().lower() in PLACEHOLDERS or len(value) < MIN_TOKEN_LENGTH:
                raise InsecureSettings(
                    f"TENANTRY_{name.upper()} is empty, a placeholder or shorter than "
                    f"{MIN_TOKEN_LENGTH} characters, which is refused outside development: set "
                    "it to a random secret (e.g. `openssl rand -hex 32`), or set "
                    "TENANTRY_ENVIRONMENT=development on a developer's machine."
                )

    def placeholder_tokens(self) -> list[str]:
        """Names of tokens still set to placeholders (allowed only in development)."""
        return [
            name
            for name in ("admin_token", "introspection_token")
            if getattr(self, name).get_secret_value().strip().lower() in PLACEHOLDERS
        ]
