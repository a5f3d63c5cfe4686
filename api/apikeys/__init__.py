"""API keys: their format, storage, lookup and introspection."""
