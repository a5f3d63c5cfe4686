"""What the usage and quota services count, kept as the API's Prometheus metrics
(api/metrics.py), so every worker's counts add up on the metrics port."""

from __future__ import annotations

from tenantry.api import metrics


class Tally:
    """The counts of usage events and quota decisions, handed to the services that make them."""

    def events(self, *, accepted: int, duplicate: int, rejected: int) -> None:
        metrics.USAGE_EVENTS.labels(outcome="accepted").inc(accepted)
        metrics.USAGE_EVENTS.labels(outcome="duplicate").inc(duplicate)
        metrics.USAGE_EVENTS.labels(outcome="rejected").inc(rejected)

    def quota(self, *, admitted: bool) -> None:
        metrics.QUOTA_REQUESTS.labels(outcome="admitted" if admitted else "refused").inc()

    def counted_in_database(self, units: int) -> None:
        """Units counted in PostgreSQL alone, Redis being unreachable."""
        metrics.COUNTED_IN_DATABASE.inc(units)
