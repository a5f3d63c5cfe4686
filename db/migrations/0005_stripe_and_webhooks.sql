-- Stripe (optional): the ids of each subscription's Stripe objects and the
-- status Stripe last reported; Stripe's invoice beside Tenantry's; every
-- webhook event received, once; and Tenantry's own outgoing webhooks.

ALTER TABLE subscriptions
    ADD COLUMN stripe_customer_id     text,
    ADD COLUMN stripe_subscription_id text UNIQUE,
    ADD COLUMN stripe_status          text,
    -- When Stripe produced that status (the event's `created`): an older event
    -- never overwrites a newer status.
    ADD COLUMN stripe_status_at       timestamptz;

ALTER TABLE invoices
    ADD COLUMN stripe_invoice_id     text UNIQUE,
    ADD COLUMN stripe_invoice_number text;

-- Every Stripe event received, stored once under its id in the transaction
-- that acknowledges it; a worker on any replica claims each with SKIP LOCKED.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,                  -- evt_...
    type         text NOT NULL,
    created      timestamptz NOT NULL,              -- Stripe's timestamp of the event
    object_id    text,                              -- data.object.id
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    deliveries   int NOT NULL DEFAULT 1,            -- how many times Stripe sent it
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'handled', 'ignored', 'failed')),
    attempts     int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    handled_at   timestamptz,
    error        text
);
CREATE INDEX stripe_events_pending ON stripe_events (next_attempt_at, created)
    WHERE state = 'pending';
CREATE INDEX stripe_events_by_object ON stripe_events (object_id, created);

-- Tenantry's own webhooks to the SaaS team's systems: one row per event and
-- endpoint, delivered with retries; the table is the delivery log.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid NOT NULL,                  -- the same for every endpoint
    event_type      text NOT NULL,
    endpoint        text NOT NULL,                  -- the endpoint's name in the settings
    url             text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     int,
    last_error      text,
    delivered_at    timestamptz,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (created_at DESC);
