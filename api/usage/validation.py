"""Reading a usage batch and judging each event against the plan. Pure.

One bad event does not sink the batch: the good events beside it are
counted and each bad one is named with its index and reason. A client then
drops or fixes only what was refused; refusing the whole batch instead would
make a naive client drop good usage with the bad, or resend it forever.
Problems with the body itself (not JSON, no `events` list, too many events)
refuse the whole request, since no event can be told apart.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tenantry.api.errors import BadRequest, Unprocessable
from tenantry.api.tenants.catalog import Plan, SubscriptionEnd
from tenantry.api.usage.schemas import MAX_BATCH, UsageBatch, UsageEvent
from tenantry.core.resources import Aggregation

_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Rejection:
    index: int
    transaction_id: str | None
    code: str
    message: str


def parse_batch(body: bytes) -> tuple[list[tuple[int, UsageEvent]], list[Rejection]]:
    """The well-formed events with their positions, and a rejection for each malformed one."""
    try:
        batch = UsageBatch.model_validate_json(body)
    except ValidationError:
        pass  # find out which events are at fault, below
    else:
        return list(enumerate(batch.events)), []
    try:
        document = json.loads(body)
    except ValueError as error:
        raise BadRequest(
            f'The body is not valid JSON ({error}); send {{"events": [...]}}.',
            code="invalid_json",
        ) from error
    except RecursionError:
        # Python's parser recurses per level; pydantic's, which read it first, stops at 200.
        raise BadRequest(
            'The body nests too deeply to be a batch of events; send {"events": [...]}.',
            code="invalid_json",
        ) from None
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list) or set(document) != {"events"}:
        raise Unprocessable(
            'The body must be a JSON object with one field, "events": a list of events '
            "{transaction_id, metric, value, timestamp, properties}.",
            code="invalid_batch",
        )
    if not 1 <= len(events) <= MAX_BATCH:
        raise Unprocessable(
            f"A batch holds 1 to {MAX_BATCH} events; this one has {len(events)}. "
            f"Split it into batches of at most {MAX_BATCH}.",
            code="invalid_batch_size",
            details={"events": len(events), "max": MAX_BATCH},
        )
    good: list[tuple[int, UsageEvent]] = []
    bad: list[Rejection] = []
    for index, raw in enumerate(events):
        try:
            good.append((index, UsageEvent.model_validate_json(json.dumps(raw))))
        except ValidationError as error:
            bad.append(Rejection(index, _transaction_id(raw), "invalid_event", _explain(error)))
    return good, bad


def _transaction_id(raw: Any) -> str | None:
    """The id to name a refused event by, when it is one a client could have sent
    (printable ASCII, as ids are): never echo bytes that cannot be encoded back."""
    value = raw.get("transaction_id") if isinstance(raw, dict) else None
    if isinstance(value, str) and value.isascii() and value.isprintable() and len(value) <= 128:
        return value
    return None


def _explain(error: ValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(p) for p in problem["loc"]) or "event"
        message = problem["msg"]
        if problem["type"] in ("int_type", "int_from_float") and "value" in problem["loc"]:
            message = "must be a whole number (an integer), not a float or a string"
        elif problem["loc"][:1] == ("timestamp",) and problem["type"].startswith("datetime"):
            message = (
                f"{problem['msg']}: send an RFC 3339 string with a time zone, "
                "e.g. 2025-01-31T12:00:00Z"
            )
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def judge(
    events: Sequence[tuple[int, UsageEvent]],
    plan: Plan,
    now: dt.datetime,
    future_tolerance: dt.timedelta,
    end: SubscriptionEnd | None = None,
) -> tuple[list[UsageEvent], list[Rejection]]:
    """Keep the events the plan can count; name what is wrong with the others.

    Once the subscription has an `end`, only events stamped before it count: the
    final invoice bills them, for as long as the plan's usageMaxAgeDays allows.
    """
    newest = now + future_tolerance
    oldest = now - dt.timedelta(days=plan.spec.usage_max_age_days)
    # The last moment the common case accepts: timestamps are whole microseconds,
    # so "before the end" is "at most a microsecond before it".
    last = newest if end is None else min(newest, end.at - _MICROSECOND)
    good: list[UsageEvent] = []
    bad: list[Rejection] = []
    plain = {name for name, m in plan.metrics.items() if m.aggregation != Aggregation.UNIQUE_COUNT}
    for index, event in events:
        # The common case first, cheaply; the reasons only for the rest.
        if event.metric in plain and oldest <= event.timestamp <= last:
            good.append(event)
            continue
        problem = _problem(event, plan, now, newest, oldest, end)
        if problem is None:
            good.append(event)
        else:
            bad.append(Rejection(index, event.transaction_id, *problem))
    return good, bad


def _problem(
    event: UsageEvent,
    plan: Plan,
    now: dt.datetime,
    newest: dt.datetime,
    oldest: dt.datetime,
    end: SubscriptionEnd | None,
) -> tuple[str, str] | None:
    if end is not None and event.timestamp >= end.at:
        return "subscription_ended", (
            f"timestamp {event.timestamp.isoformat()} is not before the end of the "
            f"subscription: {end.describe()}. Only usage before the end is billed; drop this "
            "event."
        )
    metric = plan.metrics.get(event.metric)
    if metric is None:
        known = ", ".join(sorted(plan.metrics)) or "none"
        return "unknown_metric", (
            f"metric {event.metric!r} is not metered by plan {plan.name} (its metrics: {known})."
        )
    if event.timestamp > newest:
        ahead = int((newest - now).total_seconds())
        return "timestamp_in_future", (
            f"timestamp {event.timestamp.isoformat()} is more than {ahead} s ahead of the "
            f"server's clock ({now.isoformat(timespec='seconds')}); check the instance's clock."
        )
    if event.timestamp < oldest:
        return "timestamp_too_old", (
            f"timestamp {event.timestamp.isoformat()} is older than the "
            f"{plan.spec.usage_max_age_days} days plan {plan.name} accepts; it can no longer "
            "be billed."
        )
    if metric.aggregation == Aggregation.UNIQUE_COUNT and unique_value(event, metric.field) is None:
        return "missing_property", (
            f"metric {event.metric!r} counts distinct values of property {metric.field!r}: set "
            f"properties.{metric.field} to a string or an integer."
        )
    return None


def unique_value(event: UsageEvent, field: str | None) -> str | None:
    """The value a unique_count metric counts for this event (as PostgreSQL's `->>` reads it)."""
    value = event.properties.get(field) if field else None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)
