"""What every request needs, built once at start-up and kept on `app.state`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient, ConfigError
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api import metrics
from tenantry.api.apikeys.service import Answers, KeyCache, LastUsed
from tenantry.api.billing.pdf import PdfRenderer
from tenantry.api.billing.service import BillingService
from tenantry.api.billing.settings import BillingSettings
from tenantry.api.dashboard.service import Dashboard
from tenantry.api.dashboard.settings import DashboardSettings
from tenantry.api.instances.service import HeartbeatService
from tenantry.api.licenses.service import LicenseService
from tenantry.api.links import Links
from tenantry.api.outbound.service import Outbound
from tenantry.api.outbound.settings import WebhookSettings
from tenantry.api.quotas.counters import Counters
from tenantry.api.quotas.service import QuotaService, drain_stale_counters
from tenantry.api.settings import ApiSettings
from tenantry.api.signup.service import Signup
from tenantry.api.signup.settings import SignupSettings
from tenantry.api.stripe import repository as stripe_repository
from tenantry.api.stripe.collection import Collector
from tenantry.api.stripe.sessions import Sessions
from tenantry.api.stripe.settings import StripeSettings
from tenantry.api.stripe.worker import StripeWorker
from tenantry.api.tally import Tally
from tenantry.api.tenants.catalog import Catalog, Tenant
from tenantry.api.tenants.kube import FIELD_MANAGER, Kube
from tenantry.api.tenants.status import StatusWriter
from tenantry.api.usage.service import UsageService
from tenantry.api.usage.writer import UsageWriter
from tenantry.core import clock
from tenantry.db import migrations
from tenantry.db.engine import create_engine

STALE_CHECK_INTERVAL = 2.0
"""Seconds between checks of the durable stale-counters mark, per replica."""

log = logging.getLogger("tenantry.api")


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
    usage: UsageService
    quotas: QuotaService
    tally: Tally
    billing: BillingService
    pdf: PdfRenderer
    outbound: Outbound
    links: Links
    heartbeats: HeartbeatService
    stripe: StripeWorker | None = None  # when Stripe is configured
    sessions: Sessions | None = None  # Checkout and the portal, when Stripe is configured
    signup: Signup | None = None  # when TENANTRY_SIGNUP_NAMESPACE is set
    dashboard: Dashboard | None = None  # set in start(): the pages under /dashboard/
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

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
        fail_open = settings.redis_failure_mode == "fail_open"
        tally = Tally()
        answers = Answers(settings.introspection_cache_ttl)
        now = clock.from_environment()
        status = StatusWriter(engine, kube, settings.status_write_interval, now)
        billing_settings = BillingSettings()
        outbound = Outbound(engine, WebhookSettings(), now)

        def changed(tenant: Tenant) -> None:
            """A tenant's figures moved: its cached answers are stale, its status is due."""
            answers.changed(tenant.uid)
            status.touch(tenant)
            outbound.usage_changed(tenant)

        runtime = cls(
            settings=settings,
            engine=engine,
            counters=counters,
            kube=kube,
            catalog=Catalog(kube, settings.catalog_ttl, engine, settings.subscription_cache_ttl),
            keys=KeyCache(engine, settings.key_cache_ttl),
            last_used=LastUsed(engine),
            status=status,
            licenses=LicenseService(kube, settings),
            answers=answers,
            usage=UsageService(
                engine,
                UsageWriter(engine, counters, fail_open),
                tally,
                future_tolerance=dt.timedelta(seconds=settings.future_tolerance),
                on_change=changed,
            ),
            quotas=QuotaService(engine, counters, tally, fail_open=fail_open, on_change=changed),
            tally=tally,
            billing=BillingService(engine, billing_settings, now, events=outbound.events),
            pdf=PdfRenderer(),
            outbound=outbound,
            links=Links(settings.admin_token.get_secret_value()),
            heartbeats=HeartbeatService(engine, kube, settings, now),
        )
        runtime.dashboard = Dashboard.start(
            DashboardSettings(), runtime.links, redis, kube, fail_open=fail_open
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
        outbound.start()
        if settings.heartbeat_sweep_interval > 0:
            runtime._tasks.append(asyncio.create_task(runtime.heartbeats.sweep_forever()))
        if billing_settings.run_interval > 0:
            runtime._tasks.append(asyncio.create_task(runtime._bill()))
        stripe_settings = StripeSettings()
        runtime.stripe = StripeWorker.start_if_enabled(
            stripe_settings, engine, runtime.billing, kube
        )
        if runtime.stripe is not None:
            runtime.sessions = Sessions(runtime.stripe.client, kube, stripe_settings)
            runtime._tasks.append(asyncio.create_task(runtime._count_stripe_backlog()))
        signup = SignupSettings()
        if signup.enabled:
            runtime.signup = Signup(signup, kube, redis, runtime.links, fail_open)
            if runtime.stripe is not None and not stripe_settings.checkout_success_url:
                log.warning(
                    "Signup answers without a checkout link until "
                    "TENANTRY_STRIPE_CHECKOUT_SUCCESS_URL is set"
                )
        return runtime

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, kept referenced until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain_stale_counters(self) -> None:
        """Every replica checks the durable mark: the one that counted may be gone."""
        while True:
            try:
                if self.counters.up:
                    await drain_stale_counters(self.engine, self.counters)
            except Exception as error:
                log.warning("Could not drop stale quota counters: %s", error)
            await asyncio.sleep(STALE_CHECK_INTERVAL)

    async def _bill(self) -> None:
        """Scheduled billing runs; one replica at a time takes each (an advisory lock)."""
        while True:
            await asyncio.sleep(self.billing.settings.run_interval)
            try:
                await self.billing.scheduled_run()
                await self.collect()
            except Exception as error:
                log.warning("The scheduled billing run failed: %s", error)

    async def collect(self) -> None:
        """With Stripe on: Tenantry's final invoices onto Stripe's drafts, for Stripe to
        collect (api/stripe/collection.py)."""
        if self.stripe is not None:
            await Collector(self.stripe.client, self.engine, self.billing).push_finalized()

    async def _count_stripe_backlog(self) -> None:
        """The pending Stripe events, for the metrics (an alert watches the backlog grow)."""
        while True:
            try:
                async with self.engine.connect() as conn:
                    pending, age = await stripe_repository.backlog(conn)
                metrics.STRIPE_EVENTS_PENDING.set(pending)
                metrics.STRIPE_OLDEST_PENDING.set(age)
            except Exception as error:
                log.warning("Could not count the pending Stripe events: %s", error)
            await asyncio.sleep(metrics.BACKLOG_INTERVAL)

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
        await self.heartbeats.close()
        await self.pdf.close()
        if self.stripe is not None:
            await self.stripe.close()
        await self.outbound.close()
        await self.counters.redis.aclose()
        await self.kube.close()
        await self.engine.dispose()
        metrics.worker_stopped()
