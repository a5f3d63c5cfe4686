"""The PostgreSQL engine (SQLAlchemy 2, psycopg 3, asyncio), the same for every process."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str, *, pool_size: int = 5, pre_ping: bool = False) -> AsyncEngine:
    """An engine whose sessions run in UTC.

    The API passes no pre-ping: it would cost a round trip on every request,
    and a connection the server dropped fails one request while the pool
    replaces it. The operator, which uses the database seldom, pre-pings.
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        pool_pre_ping=pre_ping,
        connect_args={"options": "-c timezone=UTC"},
    )
