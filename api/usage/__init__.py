"""Usage: ingestion of events and snapshots, hourly rollups, period totals."""
