-- Stripe's events are kept as they were received, byte for byte: `json` checks the
-- syntax and stores the text, where `jsonb` parsed and rebuilt every body on the path
-- that acknowledges Stripe (twice PostgreSQL's work per event), and lost the exact
-- bytes Stripe signed. Queries read it the same way (`payload -> 'data'`).
ALTER TABLE stripe_events ALTER COLUMN payload TYPE json USING payload::json;
