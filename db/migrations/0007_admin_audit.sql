-- What was done to money and access by hand, by whom, when and from where:
-- payments, voids, uncollectible marks, credit notes, billing runs, webhook
-- retries, key and license revocations. Rows are only ever added.
CREATE TABLE admin_audit (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,          -- `admin` (the admin token), `stripe`, `dashboard`...
    address  text,                   -- the client's address, as the API saw it
    action   text NOT NULL,          -- `invoice.payment_recorded`, `invoice.voided`...
    target   text NOT NULL,          -- what it was done to: an invoice id, `namespace/name`
    details  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX admin_audit_by_time ON admin_audit (at DESC, id DESC);
