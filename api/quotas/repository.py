"""All SQL of the quota counters' bookkeeping."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def mark_counters_stale(conn: AsyncConnection) -> None:
    """Note that Redis counters may miss what this transaction counts."""
    await conn.execute(
        text("INSERT INTO quota_counters_stale (id) VALUES (1) ON CONFLICT DO NOTHING")
    )


async def take_stale_mark(conn: AsyncConnection) -> bool:
    """Clear the mark, held locked until the caller commits; whether there was one."""
    row = (
        await conn.execute(text("DELETE FROM quota_counters_stale WHERE id = 1 RETURNING id"))
    ).first()
    return row is not None
