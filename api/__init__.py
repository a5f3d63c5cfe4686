"""Tenantry API service: what customer instances and gateways talk to.

One folder per domain, each with its routes (`endpoints`), logic (`service`),
SQL (`repository`) and wire shapes (`schemas`):

- `apikeys`: the key format (`token`, shared with the operator), lookup, introspection.
- `usage`: ingestion of events and snapshots, group commit (`writer`), hourly rollups.
- `quotas`: Redis counters (`counters`), check-and-count, quota state.
- `licenses`: license delivery, verification keys, revocation list, license history.
- `tenants`: Tenants and Plans read from Kubernetes, the usage summary written back.

`app` builds the FastAPI application, `runtime` what it needs at start-up,
`settings` its configuration (`TENANTRY_*`), `errors` the one error shape,
`migrations` the schema, `cli` the `tenantry api` commands.
"""
