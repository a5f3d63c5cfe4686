"""All SQL of outgoing webhooks: the outbox, which is also the delivery log.

Invariant: an event is in the outbox exactly when the change it reports is
committed, because it is enqueued in the change's own transaction; it holds
one row per endpoint that wants it, all with the event's id, and
`UNIQUE (event_id, endpoint)` makes recording the same event twice (an id
derived from what it is about) a no-op. Any replica's worker claims due rows
with `FOR UPDATE SKIP LOCKED` and leases them (the next attempt is pushed past
the request's time-out), so replicas share the work without sending a row
twice at once, and a replica that dies mid-request leaves its rows due again
when the lease runs out. Scheduling uses the database's clock, which every
replica shares.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.core.outbound import Endpoint, Event, wanting


@dataclass(frozen=True)
class Delivery:
    """One event's delivery to one endpoint, as the log keeps it."""

    id: str
    event_id: str
    event_type: str
    endpoint: str
    url: str
    payload: dict[str, Any]
    created_at: dt.datetime
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_status: int | None
    last_error: str | None
    delivered_at: dt.datetime | None


_COLUMNS = (
    "id, event_id, event_type, endpoint, url, payload, created_at, state, attempts,"
    " next_attempt_at, last_status, last_error, delivered_at"
)


def _delivery(r: Any) -> Delivery:
    return Delivery(
        id=str(r.id),
        event_id=str(r.event_id),
        event_type=r.event_type,
        endpoint=r.endpoint,
        url=r.url,
        payload=r.payload,
        created_at=r.created_at,
        state=r.state,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        last_status=r.last_status,
        last_error=r.last_error,
        delivered_at=r.delivered_at,
    )


async def enqueue(conn: AsyncConnection, endpoints: Sequence[Endpoint], event: Event) -> int:
    """Record `event` for each endpoint that wants it, in the caller's transaction; how
    many rows are new (0 when it was recorded before, or nobody wants it)."""
    targets = wanting(endpoints, event.type)
    if not targets:
        return 0
    rows = await conn.execute(
        text(
            "INSERT INTO webhook_deliveries (event_id, event_type, endpoint, url, payload)"
            " SELECT CAST(:event_id AS uuid), :type, e.name, e.url, CAST(:payload AS jsonb)"
            " FROM unnest(CAST(:names AS text[]), CAST(:urls AS text[])) AS e(name, url)"
            " ON CONFLICT (event_id, endpoint) DO NOTHING RETURNING id"
        ),
        {"event_id": event.id, "type": event.type, "payload": json.dumps(event.body()),
         "names": [e.name for e in targets], "urls": [e.url for e in targets]},
    )  # fmt: skip
    return len(rows.all())


async def claim(
    conn: AsyncConnection, endpoints: Sequence[str], *, limit: int, lease: float
) -> list[Delivery]:
    """Take up to `limit` due deliveries to these endpoints, oldest due first: their
    attempt is counted and the next one pushed `lease` seconds away (commit to hold it)."""
    rows = await conn.execute(
        text(
            "UPDATE webhook_deliveries SET attempts = attempts + 1,"  # noqa: S608
            " next_attempt_at = now() + make_interval(secs => :lease)"
            " WHERE id IN (SELECT id FROM webhook_deliveries"
            "   WHERE state = 'pending' AND next_attempt_at <= now()"
            "   AND endpoint = ANY(:endpoints)"
            "   ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_COLUMNS}"
        ),
        {"endpoints": list(endpoints), "limit": limit, "lease": lease},
    )
    return [_delivery(r) for r in rows]


async def record(
    conn: AsyncConnection,
    delivery: Delivery,
    *,
    url: str,
    status: int | None,
    error: str | None,
    retry_in: float | None,
) -> None:
    """The outcome of the attempt `claim` counted: delivered (no error), due again in
    `retry_in` seconds, or failed for good (`retry_in` None). An attempt whose lease ran
    out and was claimed again meanwhile records nothing."""
    if error is None:
        state, sets = "delivered", "delivered_at = now(), "
    elif retry_in is not None:
        state, sets = "pending", "next_attempt_at = now() + make_interval(secs => :retry_in), "
    else:
        state, sets = "failed", ""
    await conn.execute(
        text(
            f"UPDATE webhook_deliveries SET state = :state, {sets}url = :url,"  # noqa: S608
            " last_status = :status, last_error = :error"
            " WHERE id = CAST(:id AS uuid) AND state = 'pending' AND attempts = :attempts"
        ),
        {"state": state, "url": url, "status": status, "error": error, "retry_in": retry_in,
         "id": delivery.id, "attempts": delivery.attempts},
    )  # fmt: skip


async def requeue(conn: AsyncConnection, delivery_id: str) -> Delivery | None:
    """A failed delivery due again now, with a fresh set of attempts; others unchanged."""
    await conn.execute(
        text(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0,"
            " next_attempt_at = now()"
            " WHERE id = CAST(:id AS uuid) AND state = 'failed'"
        ),
        {"id": delivery_id},
    )
    return await get(conn, delivery_id)


async def get(conn: AsyncConnection, delivery_id: str) -> Delivery | None:
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE id = CAST(:id AS uuid)"),  # noqa: S608
            {"id": delivery_id},
        )
    ).first()
    return None if row is None else _delivery(row)


async def log(
    conn: AsyncConnection,
    *,
    limit: int,
    state: str | None = None,
    event_type: str | None = None,
    before: tuple[dt.datetime, str] | None = None,
) -> list[Delivery]:
    """Deliveries newest first, optionally of one state and of event types matching
    `event_type` (`*` a wildcard), after the (created_at, id) of a previous page."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if state is not None:
        where.append("state = :state")
        params["state"] = state
    if event_type is not None:
        where.append("event_type LIKE :type ESCAPE '\\'")
        escaped = event_type.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["type"] = escaped.replace("*", "%")
    if before is not None:
        where.append("(created_at, id) < (:before_at, CAST(:before_id AS uuid))")
        params.update(before_at=before[0], before_id=before[1])
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM webhook_deliveries{condition}"  # noqa: S608
            " ORDER BY created_at DESC, id DESC LIMIT :limit"
        ),
        params,
    )
    return [_delivery(r) for r in rows]
