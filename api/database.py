"""The PostgreSQL engine (SQLAlchemy 2, psycopg 3, asyncio)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tenantry.api.settings import ApiSettings


def create_engine(settings: ApiSettings) -> AsyncEngine:
    # No pre-ping: it would cost a round trip on every request; a connection the
    # server dropped fails one request and the pool replaces it.
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_recycle=1800,
        connect_args={"options": "-c timezone=UTC"},
    )
