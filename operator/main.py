"""The operator process: kopf settings, clients built at start-up, handlers registered."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kopf
from lightkube import AsyncClient
from pyhelm3 import Client as HelmClient
from sqlalchemy.ext.asyncio import create_async_engine

from tenantry import license as lic
from tenantry.operator import tenant
from tenantry.operator.context import Context
from tenantry.operator.helm import Releases
from tenantry.operator.kube import Cluster
from tenantry.operator.licensing import SIGNING_KEYS_LABEL, decode_secret_data
from tenantry.operator.provisioning import Chart
from tenantry.operator.settings import OperatorSettings

log = logging.getLogger("tenantry.operator")


def context_of(memo: kopf.Memo) -> Context:
    ctx: Context = memo["context"]
    return ctx


async def load_or_create_keyring(cluster: Cluster, settings: OperatorSettings) -> lic.KeyRing:
    """The signing keys from their Secret, created (once, by one replica) when missing."""
    await cluster.ensure_namespace_exists(settings.namespace)
    data = await cluster.read_secret_data(settings.namespace, settings.signing_key_secret)
    if data is None:
        ring = lic.KeyRing.create(dt.datetime.now(dt.UTC), settings.signing_algorithm)
        created = await cluster.create_secret(
            settings.namespace,
            settings.signing_key_secret,
            ring.to_secret_data(),
            SIGNING_KEYS_LABEL,
        )
        if created:
            log.info(
                "Created signing key %s in Secret %s/%s",
                ring.active.kid, settings.namespace, settings.signing_key_secret,
            )  # fmt: skip
            return ring
        data = await cluster.read_secret_data(settings.namespace, settings.signing_key_secret)
        assert data is not None
    return lic.KeyRing.from_secret_data(decode_secret_data(data))


def build_registry(config: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="start", registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Progress and diff-base in annotations: our status schema stays ours.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="tenantry.io"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="tenantry.io", key="last-handled-configuration"
        )
        settings.persistence.finalizer = "tenantry.io/finalizer"
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.batching.batch_window = 0.05
        cluster = Cluster(AsyncClient(field_manager="tenantry-operator"))
        helm = HelmClient(executable=config.helm, default_timeout=config.helm_timeout)
        memo["context"] = Context(
            settings=config,
            cluster=cluster,
            releases=Releases(helm, str(config.chart_path), config.helm_timeout),
            chart=Chart.load(config.chart_path),
            keyring=await load_or_create_keyring(cluster, config),
            database=create_async_engine(config.database_url, pool_pre_ping=True)
            if config.database_url
            else None,
        )

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own has none of kopf's defaults: in a Pod the
        # service account, elsewhere $KUBECONFIG (or ~/.kube/config).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(id="stop", registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        if "context" in memo:
            ctx = context_of(memo)
            await ctx.cluster.client.close()
            if ctx.database is not None:
                await ctx.database.dispose()

    tenant.register(registry, context_of, config.drift_interval)
    return registry


def run(
    config: OperatorSettings, *, standalone: bool, priority: int = 0, liveness: str | None = None
) -> None:
    """Run until interrupted. Several replicas elect one active by kopf peering."""
    registry = build_registry(config)
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=standalone,
            priority=priority,
            liveness_endpoint=liveness,
            memo=kopf.Memo(),
        )
    )
