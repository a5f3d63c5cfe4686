"""The operator process: kopf settings, clients built at start-up, handlers registered."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kopf

from tenantry.core import clock
from tenantry.db.engine import create_engine
from tenantry.operator import (
    apikey,
    helm,
    kube,
    metrics,
    peering,
    plan,
    pricebook,
    rollout,
    sharding,
    storage,
    subscription,
    tenant,
)
from tenantry.operator.charts_source import ChartCache
from tenantry.operator.context import Context
from tenantry.operator.helm import Releases
from tenantry.operator.keys import RevocationList, SigningKeys
from tenantry.operator.kube import Cluster
from tenantry.operator.provisioning import Chart
from tenantry.operator.settings import OperatorSettings
from tenantry.operator.stripe import client as stripe_client
from tenantry.operator.stripe import customers as stripe_customers
from tenantry.operator.stripe import plans as stripe_plans
from tenantry.operator.suspension import Workloads
from tenantry.operator.work import Slots

log = logging.getLogger("tenantry.operator")


class ObjectFormatter(logging.Formatter):
    """Names the object a line is about, `[Kind namespace/name]`, as kopf's per-object
    logger records it; lines about no object are left as they are."""

    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        if ref:
            where = "/".join(part for part in (ref.get("namespace"), ref.get("name")) if part)
            record = logging.makeLogRecord(record.__dict__)
            record.msg = f"[{ref.get('kind') or 'object'} {where}] {record.msg}"
        return super().format(record)


def name_objects_in_logs() -> None:
    for handler in logging.getLogger().handlers:
        if getattr(handler.formatter, "names_objects", False):
            continue  # `tenantry --log-format`'s (cli/logs.py) names them already
        handler.setFormatter(ObjectFormatter(handler.formatter._fmt if handler.formatter else None))
    # pyhelm3 logs each command without the object it is for; the handlers log what
    # matters (a failure, with helm's message) on the object's own logger.
    logging.getLogger("pyhelm3").setLevel(logging.ERROR)


def context_of(memo: kopf.Memo) -> Context:
    ctx: Context = memo["context"]
    return ctx


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="start", registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Progress and diff-base in annotations: our status schema stays ours.
        settings.persistence.progress_storage = storage.Progress(prefix="tenantry.io")
        settings.persistence.diffbase_storage = storage.DiffBase(
            prefix="tenantry.io", key="last-handled-configuration"
        )
        # Each shard marks its objects with its own finalizer (see operator/sharding.py).
        settings.persistence.finalizer = config.sharding.finalizer
        memo["shard"] = config.sharding
        settings.posting.level = logging.INFO
        # Stripe's library logs every request at INFO, URLs (and the emails in them) included.
        logging.getLogger("stripe").setLevel(logging.WARNING)
        settings.watching.server_timeout = 300
        settings.batching.batch_window = 0.05
        # A timer still running when its object is deleted is checked again after this
        # long (kopf's default, 60 s, kept a deleted Subscription or Tenant that long).
        settings.background.cancellation_polling = 1
        client = kube.client(connections=config.kube_connections, timeout=config.kube_timeout)
        cluster = Cluster(client)
        slots = Slots(config.helm_concurrency)
        passes = Slots(
            2 * config.helm_concurrency, metrics.PASSES_IN_FLIGHT, metrics.PASSES_WAITING
        )
        log.info(
            "Running at most %d helm processes and %d Tenant passes at once",
            config.helm_concurrency,
            passes.limit,
        )
        keys = SigningKeys(
            client,
            config.namespace,
            config.signing_key_secret,
            config.signing_algorithm,
            public_name=config.public_keys_configmap,
        )
        ring = await keys.current()  # created on first start
        log.info("Signing licenses with key %s", ring.active.kid)
        revocations = RevocationList(
            client,
            config.namespace,
            config.revocation_secret,
            config.license_issuer,
            retention=config.license_ttl,
        )
        await revocations.ensure_published(keys, dt.datetime.now(dt.UTC))
        helm_client = helm.client(config.helm, config.helm_timeout, slots)
        bundled = Chart.load(config.chart_path)
        memo["context"] = Context(
            settings=config,
            cluster=cluster,
            releases=Releases(helm_client, config.helm_timeout, cluster),
            chart=bundled,
            charts=ChartCache(
                helm.command_of(helm_client),
                config.chart_cache,
                bundled,
                plain_http=config.chart_plain_http,
            ),
            workloads=Workloads(client),
            keys=keys,
            revocations=revocations,
            passes=passes,
            database=create_engine(config.database_url, pool_size=5, pre_ping=True)
            if config.database_url
            else None,
            clock=clock.from_environment(),
            stripe=stripe_client.Stripe.from_settings(config),
        )
        if stripe_client.enabled(config):
            log.info("Keeping Stripe in step (%s)", config.stripe_api_base or "api.stripe.com")

    @kopf.on.login(id="login", registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        # A registry of our own has none of kopf's defaults: in a Pod the
        # service account, elsewhere $KUBECONFIG (or ~/.kube/config).
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        return kube.kopf_session(info, connections=config.kube_connections) if info else None

    @kopf.on.cleanup(id="stop", registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        if "context" in memo:
            ctx = context_of(memo)
            await ctx.cluster.client.close()
            if ctx.database is not None:
                await ctx.database.dispose()
            if ctx.stripe is not None:
                await ctx.stripe.close()

    tenant.register(registry, context_of, config.drift_interval)
    apikey.register(registry, context_of)
    subscription.register(registry, context_of, config.subscription_interval)
    plan.register(registry, context_of)
    rollout.register(registry, context_of)
    pricebook.register(registry, context_of, config.drift_interval)
    if stripe_client.enabled(config):
        stripe_customers.register(registry)
        stripe_plans.register(registry)
    sharding.register(registry)
    return registry


def run(
    config: OperatorSettings,
    *,
    standalone: bool,
    priority: int | None = None,
    liveness: str | None = None,
    peering_name: str = "tenantry",
) -> None:
    """Run until interrupted. Several replicas keep one acting by kopf peering
    (see operator/peering.py); `standalone` acts alone, whatever else runs."""
    name_objects_in_logs()
    metrics.serve(config.metrics_port)
    registry = build_registry(config)
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = config.peering_lifetime
    shard = config.sharding
    # Each shard's replicas meet in a peering object of their own: one shard's
    # active replica must not pause another shard's.
    peering_name = shard.peering(peering_name)
    metrics.SHARD.labels(shard=str(shard.index), shards=str(shard.count)).set(1)
    if shard.count > 1:
        log.info(
            "Running as %s: its share of the Tenants%s; finalizer %s, peering %s",
            shard,
            " and the cluster-wide kinds" if shard.cluster_wide else "",
            shard.finalizer,
            "none (standalone)" if standalone else peering_name,
        )

    async def main() -> None:
        if not standalone:
            await peering.ensure_object(peering_name)
        await kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=True,
            standalone=standalone,
            # Naming the peering object makes peering mandatory: no replica acts
            # unpaired because the object or its CRD is missing.
            peering_name=None if standalone else peering_name,
            priority=peering.oldest_first_priority() if priority is None else priority,
            liveness_endpoint=liveness,
            memo=kopf.Memo(),
        )

    asyncio.run(main())
