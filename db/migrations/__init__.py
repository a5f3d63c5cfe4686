"""Schema migrations: the ordered `NNNN_name.sql` files beside this module.

Each file is applied once, in its own transaction, and recorded in
`schema_migrations`. A PostgreSQL advisory lock makes concurrent starts (API
replicas, `tenantry api migrate`) take turns instead of racing.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("tenantry.db.migrations")

# An arbitrary constant of our own ("tnty"), so no other advisory lock collides.
LOCK_ID = 0x746E7479_00000001
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped, in order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        if _NAME.match(entry.name):
            found.append((entry.name.removesuffix(".sql"), entry.read_text()))
    return sorted(found)


async def applied(conn: AsyncConnection) -> set[str]:
    exists = await conn.scalar(text("SELECT to_regclass('schema_migrations') IS NOT NULL"))
    if not exists:
        return set()
    return set((await conn.scalars(text("SELECT version FROM schema_migrations"))).all())


async def migrate(engine: AsyncEngine) -> list[str]:
    """Apply the pending migrations; return the versions applied now."""
    done: list[str] = []
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
        await conn.commit()
        try:
            await conn.execute(
                text(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version text PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            await conn.commit()
            seen = await applied(conn)
            for version, sql in available():
                if version in seen:
                    continue
                # Several statements in one file: the driver's simple query protocol runs
                # them all, inside the transaction SQLAlchemy has begun.
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await driver.execute(sql)
                await conn.execute(
                    text("INSERT INTO schema_migrations (version) VALUES (:v)"), {"v": version}
                )
                await conn.commit()
                log.info("Applied migration %s", version)
                done.append(version)
        finally:
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
            await conn.commit()
    return done
