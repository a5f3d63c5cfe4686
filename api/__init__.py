"""Tenantry API service."""
