"""Tenantry's own webhooks to the SaaS team's systems: signed, retried, logged."""
