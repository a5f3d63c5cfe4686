-- API keys: only the SHA-256 of each key is kept, never the key.
CREATE TABLE api_keys (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource_uid       text UNIQUE,            -- uid of the ApiKey object that owns the key
    resource_namespace text NOT NULL,
    resource_name      text NOT NULL,
    tenant_namespace   text NOT NULL,          -- the Tenant object the key acts for
    tenant_name        text NOT NULL,
    key_prefix         text NOT NULL,
    key_hash           text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    scopes             text[] NOT NULL,
    expires_at         timestamptz,
    revoked_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_namespace, tenant_name);

-- Usage events, unique per tenant and transaction id: a replay is a no-op.
-- `tenant` is the Tenant object's `<namespace>/<name>`.
CREATE TABLE usage_events (
    tenant         text NOT NULL,
    transaction_id text NOT NULL,
    metric         text NOT NULL,
    value          bigint NOT NULL,
    ts             timestamptz NOT NULL,
    properties     jsonb NOT NULL DEFAULT '{}',
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, transaction_id)
);

-- Hourly rollups per tenant and metric, with the metric's aggregation:
-- count and sum add up, max keeps the largest, latest keeps the value of the
-- newest event (`latest_at`), unique_count counts the distinct values first
-- seen in the period during that hour (so the hours of a period add up).
CREATE TABLE usage_hourly (
    tenant      text NOT NULL,
    metric      text NOT NULL,
    hour        timestamptz NOT NULL,
    aggregation text NOT NULL CHECK (aggregation IN ('count', 'sum', 'max', 'unique_count', 'latest')),
    value       bigint NOT NULL,
    events      bigint NOT NULL,
    latest_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, metric, hour)
);

-- The distinct values seen per period, for unique_count metrics.
CREATE TABLE usage_distinct (
    tenant text NOT NULL,
    metric text NOT NULL,
    period text NOT NULL,   -- YYYY-MM, UTC
    value  text NOT NULL,
    PRIMARY KEY (tenant, metric, period, value)
);

-- Every license the operator signed: its hash, never the token.
CREATE TABLE license_history (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_namespace text NOT NULL,
    tenant_name      text NOT NULL,
    tenant_uid       text NOT NULL,
    license_id       text NOT NULL,
    action           text NOT NULL CHECK (action IN ('issued', 'renewed', 'reissued', 'revoked')),
    plan             text NOT NULL,
    features         jsonb NOT NULL DEFAULT '{}',
    limits           jsonb NOT NULL DEFAULT '{}',
    token_sha256     text CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (license_id, action)
);
CREATE INDEX license_history_by_tenant ON license_history (tenant_namespace, tenant_name, recorded_at);
