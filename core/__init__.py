"""Tenantry's pure domain: the resource models, the names both processes agree on,
billing periods, usage arithmetic and the API key format.

Pydantic and the standard library only: no Kubernetes client, web framework or
database here (import-linter checks it), so everything in it is tested without
a server and both the operator and the API service build on it.
"""
