-- When the Stripe Subscription started and where its billing cycle is anchored,
-- as its `customer.subscription.*` events tell (`start_date`,
-- `billing_cycle_anchor`): Stripe opens a draft for each boundary from the anchor
-- on, and none before it, so these say which of Tenantry's invoices Stripe
-- collects on its own draft and which need a one-off Stripe invoice
-- (api/stripe/collection.py).
ALTER TABLE subscriptions
    ADD COLUMN stripe_started_at   timestamptz,
    ADD COLUMN stripe_cycle_anchor timestamptz,
    -- The `created` of the event they were read from: an older event never
    -- overwrites them.
    ADD COLUMN stripe_cycle_seen_at timestamptz;

-- The collector's look for finalized invoices no Stripe invoice is linked to yet.
CREATE INDEX invoices_open_unlinked ON invoices (issued_at)
    WHERE status = 'open' AND stripe_invoice_id IS NULL;
