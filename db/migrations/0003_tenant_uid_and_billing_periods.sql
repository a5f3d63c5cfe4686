-- Usage, counters and keys belong to the Tenant's uid, not its name: a Tenant
-- deleted and re-created under the same name is another tenant and starts
-- from zero. Distinct values are kept per billing period, named by its start
-- (periods follow each subscription's cycle, not calendar months).
--
-- Existing rows are carried forward: a `namespace/name` maps to the uid the
-- operator last recorded for that Tenant in license_history. Rows of tenants
-- it never recorded keep their old key; they belong to no live tenant.

CREATE TEMPORARY TABLE tenant_uids ON COMMIT DROP AS
SELECT DISTINCT ON (tenant_namespace, tenant_name)
       tenant_namespace || '/' || tenant_name AS legacy_key, tenant_uid
FROM license_history
WHERE tenant_uid <> ''
ORDER BY tenant_namespace, tenant_name, recorded_at DESC, id DESC;

ALTER TABLE usage_events RENAME COLUMN tenant TO tenant_uid;
UPDATE usage_events e SET tenant_uid = m.tenant_uid
FROM tenant_uids m WHERE e.tenant_uid = m.legacy_key;

ALTER TABLE usage_hourly RENAME COLUMN tenant TO tenant_uid;
UPDATE usage_hourly h SET tenant_uid = m.tenant_uid
FROM tenant_uids m WHERE h.tenant_uid = m.legacy_key;

ALTER TABLE usage_distinct RENAME COLUMN tenant TO tenant_uid;
ALTER TABLE usage_distinct ADD COLUMN period_start timestamptz;
UPDATE usage_distinct SET period_start = to_date(period || '-01', 'YYYY-MM-DD')::timestamp AT TIME ZONE 'UTC';
UPDATE usage_distinct d SET tenant_uid = m.tenant_uid
FROM tenant_uids m WHERE d.tenant_uid = m.legacy_key;
ALTER TABLE usage_distinct DROP CONSTRAINT usage_distinct_pkey;
ALTER TABLE usage_distinct DROP COLUMN period;
ALTER TABLE usage_distinct ALTER COLUMN period_start SET NOT NULL;
ALTER TABLE usage_distinct ADD PRIMARY KEY (tenant_uid, metric, period_start, value);

-- The uid of the Tenant a key acts for. Null for keys issued before this
-- migration that no license history names: the operator fills it in when it
-- next reconciles the ApiKey.
ALTER TABLE api_keys ADD COLUMN tenant_uid text;
UPDATE api_keys k SET tenant_uid = m.tenant_uid
FROM tenant_uids m WHERE k.tenant_namespace || '/' || k.tenant_name = m.legacy_key;
CREATE INDEX api_keys_by_tenant_uid ON api_keys (tenant_uid);
CREATE INDEX license_history_by_tenant_uid ON license_history (tenant_uid, recorded_at);
