-- Billing: each Subscription's terms (written by the operator), invoices and
-- their lines (written by billing runs in the API), payments, credit notes,
-- and the gap-free number sequences.

-- The terms billing runs price by, one row per Subscription object (by uid).
-- The operator writes it on every reconcile; nothing else does.
CREATE TABLE subscriptions (
    uid                  text PRIMARY KEY,
    namespace            text NOT NULL,
    name                 text NOT NULL,
    tenant_uid           text NOT NULL,
    tenant_name          text NOT NULL,
    plan_name            text NOT NULL,
    plan                 jsonb NOT NULL,          -- the Plan's spec in force (wire form)
    currency             text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    started_at           timestamptz NOT NULL,
    trial_end            timestamptz,
    anchor_day           int NOT NULL CHECK (anchor_day BETWEEN 1 AND 31),
    cancel_at            timestamptz,             -- cancelAtPeriodEnd: when it will end
    ended_at             timestamptz,             -- canceled: no new work, final invoice
    end_reason           text,
    coupon_name          text,
    coupon               jsonb,                   -- the Coupon's spec when redeemed
    coupon_redeemed_at   timestamptz,
    tax_rates            jsonb NOT NULL DEFAULT '[]',
    buyer                jsonb NOT NULL DEFAULT '{}',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_uid, started_at);
CREATE INDEX subscriptions_by_coupon ON subscriptions (coupon_name) WHERE coupon_name IS NOT NULL;

-- A planRef change mid-period: prorated on the next invoice that holds it.
CREATE TABLE subscription_plan_changes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_uid text NOT NULL REFERENCES subscriptions (uid) ON DELETE CASCADE,
    changed_at       timestamptz NOT NULL,
    from_plan_name   text NOT NULL,
    from_plan        jsonb NOT NULL,
    to_plan_name     text NOT NULL,
    to_plan          jsonb NOT NULL
);
CREATE INDEX plan_changes_by_subscription ON subscription_plan_changes (subscription_uid, changed_at);

-- Gap-free numbers: the row is locked by the transaction that takes a number,
-- so a rolled-back finalization gives its number back.
CREATE TABLE number_sequences (
    prefix text PRIMARY KEY,
    last   bigint NOT NULL DEFAULT 0
);

-- One invoice per subscription and boundary: the unique key is what makes a
-- billing run that runs twice, crashes or races with another create nothing twice.
CREATE TABLE invoices (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_uid text NOT NULL REFERENCES subscriptions (uid),
    tenant_uid       text NOT NULL,
    boundary         timestamptz NOT NULL,
    final            boolean NOT NULL DEFAULT false,  -- the subscription's last invoice
    status           text NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    number           text UNIQUE,
    currency         text NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    plan_name        text NOT NULL,
    subtotal         bigint NOT NULL,
    discount         bigint NOT NULL DEFAULT 0,
    discount_unrounded numeric NOT NULL DEFAULT 0,
    discount_name    text,
    taxes            jsonb NOT NULL DEFAULT '[]',
    tax              bigint NOT NULL DEFAULT 0,
    total            bigint NOT NULL,
    reverse_charge   boolean NOT NULL DEFAULT false,
    amount_paid      bigint NOT NULL DEFAULT 0,
    amount_credited  bigint NOT NULL DEFAULT 0,
    seller           jsonb NOT NULL DEFAULT '{}',
    buyer            jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    finalize_after   timestamptz NOT NULL,
    issued_at        timestamptz,
    due_at           timestamptz,
    paid_at          timestamptz,
    voided_at        timestamptz,
    UNIQUE (subscription_uid, boundary),
    CHECK ((status = 'draft') = (number IS NULL))
);
CREATE INDEX invoices_by_tenant ON invoices (tenant_uid, boundary DESC);
CREATE INDEX invoices_drafts ON invoices (finalize_after) WHERE status = 'draft';
CREATE INDEX invoices_open ON invoices (subscription_uid, due_at) WHERE status = 'open';

CREATE TABLE invoice_lines (
    invoice_id   uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position     int NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('base', 'metered', 'late_usage', 'proration', 'cancel_credit')),
    description  text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    metric       text,
    quantity     numeric,
    billable     numeric,
    unit_amount  numeric,
    unrounded    numeric NOT NULL,
    amount       bigint NOT NULL,
    tiers        jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (invoice_id, position)
);

-- What has been billed for each period's metric so far: late usage is billed
-- as the difference, so nothing is billed twice.
CREATE TABLE billed_usage (
    subscription_uid text NOT NULL REFERENCES subscriptions (uid),
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    metric           text NOT NULL,
    quantity         numeric NOT NULL,
    unrounded        numeric NOT NULL,
    amount           bigint NOT NULL,
    invoice_id       uuid NOT NULL REFERENCES invoices (id),
    PRIMARY KEY (subscription_uid, period_start, metric)
);

CREATE TABLE payments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id  uuid NOT NULL REFERENCES invoices (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    method      text NOT NULL,
    reference   text NOT NULL,
    paid_at     timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, reference)   -- recording the same payment twice is a no-op
);

CREATE TABLE credit_notes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id  uuid NOT NULL REFERENCES invoices (id),
    number      text NOT NULL UNIQUE,
    amount      bigint NOT NULL CHECK (amount > 0),
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE billing_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text NOT NULL,                 -- 'all' or a tenant uid
    trigger     text NOT NULL,                 -- 'schedule' or 'admin'
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    state       text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    subscriptions int NOT NULL DEFAULT 0,
    drafted     int NOT NULL DEFAULT 0,
    finalized   int NOT NULL DEFAULT 0,
    error       text
);
