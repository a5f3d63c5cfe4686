"""What every request needs, built once at start-up and kept on `app.state`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from lightkube import AsyncClient, ConfigError
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.apikeys.service import Answers, KeyCache, LastUsed
from tenantry.api.licenses.service import LicenseService
from tenantry.api.quotas.counters import Counters
from tenantry.api.quotas.service import drain_stale_counters
from tenantry.api.settings import ApiSettings
from tenantry.api.tenants.catalog import Catalog
from tenantry.api.tenants.kube import FIELD_MANAGER, Kube
from tenantry.api.tenants.status import StatusWriter
from tenantry.api.usage.writer import UsageWriter
from tenantry.db import migrations
from tenantry.db.engine import create_engine

STALE_CHECK_INTERVAL = 2.0
"""Seconds between checks of the durable stale-counters mark, per replica."""

log = logging.getLogger("tenantry.api")


@dataclass
class Tally:
    """Counts shown on /metrics."""

    events_accepted: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    quota_admitted: int = 0
    quota_refused: int = 0
    counted_in_database: int = 0


@dataclass
class Runtime:
    settings: ApiSettings
    engine: AsyncEngine
    counters: Counters
    kube: Kube
    catalog: Catalog
    keys: KeyCache
    last_used: LastUsed
    status: StatusWriter
    licenses: LicenseService
    answers: Answers
    usage: UsageWriter
    tally: Tally = field(default_factory=Tally)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def fail_open(self) -> bool:
        return self.settings.redis_failure_mode == "fail_open"

    @classmethod
    async def start(cls, settings: ApiSettings) -> Runtime:
        settings.refuse_placeholders()
        for name in settings.placeholder_tokens():
            log.warning(
                "TENANTRY_%s is a placeholder: accepted only because TENANTRY_ENVIRONMENT is "
                "development",
                name.upper(),
            )
        engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
        if settings.migrate_on_start:
            applied = await migrations.migrate(engine)
            if applied:
                log.info("Applied migrations %s", ", ".join(applied))
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            # One attempt: when Redis is away we fall back at once, not after retries.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            kube = Kube(AsyncClient(field_manager=FIELD_MANAGER))
        except ConfigError as error:
            raise RuntimeError(
                f"No Kubernetes configuration ({error}): set KUBECONFIG, or run in a Pod "
                "with the tenantry-api service account."
            ) from error
        counters = Counters(redis)
        runtime = cls(
            settings=settings,
            engine=engine,
            counters=counters,
            kube=kube,
            catalog=Catalog(kube, settings.catalog_ttl),
            keys=KeyCache(engine, settings.key_cache_ttl),
            last_used=LastUsed(engine),
            status=StatusWriter(engine, kube, settings.status_write_interval),
            licenses=LicenseService(kube, settings),
            answers=Answers(settings.introspection_cache_ttl),
            usage=UsageWriter(engine, counters, settings.redis_failure_mode == "fail_open"),
        )
        counters.on_recovery = lambda: drain_stale_counters(engine, counters)
        if not await runtime.counters.ping():
            log.error("Redis is unreachable at start-up; failure mode %s",
                      settings.redis_failure_mode)  # fmt: skip
        else:
            # A replica that died during an outage may have left counts Redis lacks.
            await drain_stale_counters(engine, counters)
        runtime._tasks.append(asyncio.create_task(runtime._flush_last_used()))
        runtime._tasks.append(asyncio.create_task(runtime._drain_stale_counters()))
        return runtime

    async def _drain_stale_counters(self) -> None:
        """Every replica checks the durable mark: the one that counted may be gone."""
        while True:
            try:
                if self.counters.up:
                    await drain_stale_counters(self.engine, self.counters)
            except Exception as error:
                log.warning("Could not drop stale quota counters: %s", error)
            await asyncio.sleep(STALE_CHECK_INTERVAL)

    async def _flush_last_used(self) -> None:
        while True:
            await asyncio.sleep(self.settings.last_used_interval)
            await self.last_used.flush()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.last_used.flush()
        await self.status.close()
        await self.counters.redis.aclose()
        await self.kube.close()
        await self.engine.dispose()
