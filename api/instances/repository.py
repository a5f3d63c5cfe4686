"""All SQL of instance heartbeats: the last one per tenant, and when its status is due.

A Tenant's status is written from its heartbeats only when it is *due*: the
condition's reason or the version changed, or the last write is older than
the status interval. Whether a write is due is decided in the statement that
stores the heartbeat (or claims a silent instance), under the row's lock, so
across any number of API replicas one of them writes, once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class HeartbeatRow:
    tenant_uid: str
    tenant_namespace: str
    tenant_name: str
    version: str
    health: str
    message: str | None
    figures: dict[str, Any]
    received_at: dt.datetime


_STORE = text("""
INSERT INTO instance_heartbeats AS h
    (tenant_uid, tenant_namespace, tenant_name, version, health, message, figures,
     received_at, status_written_at, reason)
VALUES (:uid, :namespace, :name, :version, :health, :message, CAST(:figures AS jsonb),
        :now, :now, :reason)
ON CONFLICT (tenant_uid) DO UPDATE SET
    tenant_namespace = excluded.tenant_namespace,
    tenant_name = excluded.tenant_name,
    version = excluded.version,
    health = excluded.health,
    message = excluded.message,
    figures = excluded.figures,
    received_at = excluded.received_at,
    status_written_at = CASE
        WHEN h.status_written_at IS NULL
          OR h.reason IS DISTINCT FROM excluded.reason
          OR h.version <> excluded.version
          OR h.status_written_at <= excluded.received_at - make_interval(secs => :interval)
        THEN excluded.received_at
        ELSE h.status_written_at
    END,
    reason = excluded.reason
RETURNING status_written_at = received_at AS due
""")


async def store(
    conn: AsyncConnection,
    *,
    uid: str,
    namespace: str,
    name: str,
    version: str,
    health: str,
    message: str | None,
    figures: Mapping[str, Any],
    reason: str,
    now: dt.datetime,
    interval: float,
) -> bool:
    """Keep this heartbeat as the tenant's last; True when its status is due now (and
    claimed: the caller writes it)."""
    due = await conn.scalar(
        _STORE,
        {"uid": uid, "namespace": namespace, "name": name, "version": version,
         "health": health, "message": message, "figures": json.dumps(dict(figures)),
         "reason": reason, "now": now, "interval": interval},
    )  # fmt: skip
    return bool(due)


_CLAIM_SILENT = text("""
UPDATE instance_heartbeats SET status_written_at = :now, reason = :reason
WHERE tenant_uid IN (
    SELECT tenant_uid FROM instance_heartbeats
    WHERE received_at < :now - make_interval(secs => :silence)
      AND (reason IS DISTINCT FROM :reason
           OR status_written_at IS NULL
           OR status_written_at <= :now - make_interval(secs => :interval))
    ORDER BY received_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING tenant_uid, tenant_namespace, tenant_name, version, health, message, figures,
          received_at
""")


async def claim_silent(
    conn: AsyncConnection,
    *,
    reason: str,
    now: dt.datetime,
    silence: float,
    interval: float,
    limit: int,
) -> list[HeartbeatRow]:
    """Instances silent for longer than `silence` seconds whose status is due: newly silent ones
    (`reason` not written yet), and the others once per `interval`, so a status another
    writer overwrote is set right again. Rows another replica is claiming are skipped."""
    result = await conn.execute(
        _CLAIM_SILENT,
        {"reason": reason, "now": now, "silence": silence, "interval": interval,
         "limit": limit},
    )  # fmt: skip
    return [HeartbeatRow(*row) for row in result.all()]


async def last(conn: AsyncConnection, uid: str) -> HeartbeatRow | None:
    row = (
        await conn.execute(
            text(
                "SELECT tenant_uid, tenant_namespace, tenant_name, version, health, message,"
                " figures, received_at FROM instance_heartbeats WHERE tenant_uid = :uid"
            ),
            {"uid": uid},
        )
    ).one_or_none()
    return None if row is None else HeartbeatRow(*row)


async def release(conn: AsyncConnection, uid: str) -> None:
    """A claimed status write failed: due again at the next heartbeat or sweep."""
    await conn.execute(
        text("UPDATE instance_heartbeats SET status_written_at = NULL WHERE tenant_uid = :uid"),
        {"uid": uid},
    )


async def forget(conn: AsyncConnection, uid: str) -> None:
    """The Tenant is gone: its instance's heartbeats with it."""
    await conn.execute(
        text("DELETE FROM instance_heartbeats WHERE tenant_uid = :uid"), {"uid": uid}
    )
