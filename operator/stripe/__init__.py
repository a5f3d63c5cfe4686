"""Keeping Stripe in step with the resources (when a Stripe key is configured).

Tenantry prices, Stripe collects. Each kind has its Stripe counterpart, made
and kept in step by the operator, its id in the object's status:

    Plan          -> Product, and one recurring Price (the base price)  plans.py
    Tenant        -> Customer (name, email, address, tax id)            customers.py
    Subscription  -> Subscription on the Plan's Price                   subscriptions.py
    Coupon        -> Coupon                                             pricebook.py
    TaxRate       -> Tax Rate                                           pricebook.py

A Stripe Subscription carries only the Plan's base price, so trials, payment
methods, retries, Checkout and the customer portal work as Stripe made them.
Everything else on an invoice is Tenantry's arithmetic: metered usage, late
usage, prorations, discounts and taxes are lines the API adds to each Stripe
draft invoice. Hence:

- Stripe never prorates: Subscriptions are created and changed with
  `proration_behavior="none"` (Tenantry's proration lines are added instead),
  and nothing is charged for the stretch before the billing cycle anchor.
- Stripe's periods are Tenantry's: the billing cycle anchor is Tenantry's next
  period boundary, the trial ends where Tenantry's does, and
  `cancel_at_period_end` mirrors the spec, so each Stripe invoice falls on the
  boundary Tenantry invoices at, with the base fee of the period it starts.
- Coupons and TaxRates exist in Stripe (for reports and the portal) but are
  never attached to a Stripe Subscription or Customer: Tenantry computes
  discount and tax once, itself; attached, Stripe would compute them again
  and charge them twice.

Every request goes through `client.Stripe`, which maps Stripe's errors at one
boundary and derives each request's idempotency key from the object's uid,
generation and operation. Whether an object is in step with Stripe is its
`StripeSynced` condition (`sync.py`): a refusal or an outage shows there and
never stops the rest of a Tenant's or Subscription's pass.
"""
