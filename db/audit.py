"""The audit trail of hand-made changes: who did what to which object, when, from where.

Invariant: a record is written in the transaction of the change it records, so
there is a record exactly when the change is committed. Records are never
changed or deleted. Secrets never go in: the actor is a name (the admin token
is `admin`), never a credential.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class Actor:
    """Who acts: `admin` (a holder of the admin token, with the name they gave, if any),
    `stripe` (its webhooks), `dashboard:<name>`."""

    name: str
    address: str | None = None


STRIPE = Actor("stripe")


def kubernetes(managed_fields: Sequence[Mapping[str, Any]] | None, field: str) -> Actor:
    """Who set `field` (e.g. `f:revoked`) through Kubernetes, as far as the object tells:
    the field manager of its latest write (`kubernetes:kubectl-edit`, `kubernetes:argocd`).
    The person and address are in the API server's audit log."""
    writers = [
        entry for entry in managed_fields or ()
        if field in json.dumps(entry.get("fieldsV1") or {})
    ]  # fmt: skip
    latest = max(writers, key=lambda e: str(e.get("time") or ""), default=None)
    return Actor(f"kubernetes:{latest.get('manager', 'unknown')}" if latest else "kubernetes")


@dataclass(frozen=True)
class Record:
    id: int
    at: dt.datetime
    actor: str
    address: str | None
    action: str
    target: str
    details: dict[str, Any]


async def record(
    conn: AsyncConnection, by: Actor, action: str, target: str,
    details: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    await conn.execute(
        text(
            "INSERT INTO admin_audit (actor, address, action, target, details)"
            " VALUES (:actor, :address, :action, :target, CAST(:details AS jsonb))"
        ),
        {"actor": by.name, "address": by.address, "action": action, "target": target,
         "details": json.dumps(dict(details or {}), default=str)},
    )  # fmt: skip


async def page(
    conn: AsyncConnection, limit: int, before: int | None = None, target: str | None = None
) -> Sequence[Record]:
    """Newest first; `before` an id of the previous page's last record."""
    rows = await conn.execute(
        text(
            "SELECT id, at, actor, address, action, target, details FROM admin_audit"
            " WHERE (CAST(:before AS bigint) IS NULL OR id < :before)"
            " AND (CAST(:target AS text) IS NULL OR target = :target)"
            " ORDER BY id DESC LIMIT :limit"
        ),
        {"before": before, "target": target, "limit": limit},
    )
    return [Record(r.id, r.at, r.actor, r.address, r.action, r.target, dict(r.details))
            for r in rows]  # fmt: skip
