"""Stripe, when configured: webhooks in, checkout and portal sessions, invoice items."""
