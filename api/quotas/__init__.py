"""Quotas: Redis counters per tenant, metric and month, checked and counted atomically."""
