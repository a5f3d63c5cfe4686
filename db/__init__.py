"""Persistence: the PostgreSQL engine, the schema's migrations, and the repositories
that more than one process writes (API key hashes, license history).

All SQL lives in repository modules: these, or a domain's own in the API.
"""
