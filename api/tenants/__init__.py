"""Tenants and Plans as the API sees them: read from Kubernetes, usage written back."""
