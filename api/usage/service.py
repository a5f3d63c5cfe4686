"""Usage reports as events: replays inside a batch, snapshots mapped onto metrics. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from tenantry.api.tenants.catalog import Plan
from tenantry.api.usage.schemas import SNAPSHOT_METRICS, Snapshot, UsageEvent
from tenantry.core.resources import Aggregation


def dedupe(events: Sequence[UsageEvent]) -> list[UsageEvent]:
    """First of each transaction id in a batch; the repeats are duplicates like any replay."""
    seen: dict[str, UsageEvent] = {}
    for event in events:
        seen.setdefault(event.transaction_id, event)
    return list(seen.values())


def snapshot_events(snapshot: Snapshot, plan: Plan) -> tuple[list[UsageEvent], list[str]]:
    """A snapshot's figures as events of the plan's metrics, and the fields it cannot count.

    A figure is ignored when the plan does not meter its metric, or meters it
    as unique_count: a snapshot carries a number, not the distinct values such
    a metric counts. Ignoring it (and saying so) keeps the snapshot's other
    figures; refusing the whole snapshot would lose them on every report.
    """
    events, ignored = [], []
    for field, metric in SNAPSHOT_METRICS.items():
        value = getattr(snapshot, field)
        if value is None:
            continue
        definition = plan.metrics.get(metric)
        if definition is None or definition.aggregation == Aggregation.UNIQUE_COUNT:
            ignored.append(field)
            continue
        events.append(
            UsageEvent(
                transaction_id=f"snapshot:{snapshot.snapshot_id}:{metric}",
                metric=metric,
                value=value,
                timestamp=snapshot.timestamp,
            )
        )
    return events, ignored
