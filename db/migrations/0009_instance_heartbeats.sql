-- The last heartbeat of each tenant's instance (POST /v1/instance/heartbeat), one row
-- per Tenant uid, overwritten by each heartbeat. `status_written_at` and `reason` say
-- what the Tenant's status last got from it: a heartbeat or a sweep writes the status
-- again only when it is due (see api/instances/repository.py), so a thousand instances
-- beating every few seconds do not mean a thousand status writes every few seconds.
CREATE TABLE instance_heartbeats (
    tenant_uid        text PRIMARY KEY,
    tenant_namespace  text NOT NULL,
    tenant_name       text NOT NULL,
    version           text NOT NULL,
    health            text NOT NULL CHECK (health IN ('healthy', 'degraded', 'unhealthy')),
    message           text,
    figures           jsonb NOT NULL DEFAULT '{}',
    received_at       timestamptz NOT NULL,
    status_written_at timestamptz,
    reason            text
);

-- The sweep looks for instances that went quiet.
CREATE INDEX instance_heartbeats_received_at ON instance_heartbeats (received_at);
