-- Set by a write counted in PostgreSQL alone (Redis unreachable), in the same
-- transaction; cleared once the Redis counters were dropped for a rebuild.
-- Durable, so a replica restarted during an outage cannot leave counters
-- in Redis that miss what it counted.
CREATE TABLE quota_counters_stale (
    id    smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    since timestamptz NOT NULL DEFAULT now()
);
