"""Fixtures of the API tests: the real service as a subprocess, real tenants, real keys.

Everything runs against the session's control plane, operator, PostgreSQL and
Redis; the API is `tenantry api serve` as an operator of the platform runs it.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Kube, OperatorProcess, is_ready, wait_for
from testbed import Redis

sys.path.insert(0, str(Path(__file__).parent))
from api_harness import API, PLAN_METRICS, ApiServer, World


def api_env(
    kube: Kube, database: str, redis: Redis, clock_file: Path, **extra: str
) -> dict[str, str]:
    return {
        "TENANTRY_CLOCK_OFFSET_FILE": str(clock_file),  # the operator's clock, too
        "KUBECONFIG": str(kube.kubeconfig),
        "TENANTRY_ENVIRONMENT": "production",
        "TENANTRY_DATABASE_URL": database,
        "TENANTRY_REDIS_URL": redis.url,
        "TENANTRY_STATUS_WRITE_INTERVAL": "1",
        "TENANTRY_CATALOG_TTL": "1",
        "TENANTRY_LAST_USED_INTERVAL": "1",
        # Tests run billing when they mean to: a scheduled run would bill every tenant.
        "TENANTRY_BILLING_RUN_INTERVAL": "0",
        **extra,
    }


@pytest.fixture(scope="session")
def api_server(
    kube: Kube,
    database: str,
    redis_server: Redis,
    clock_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """The API as deployed: production settings, failing open when Redis is away."""
    server = ApiServer(
        api_env(kube, database, redis_server, clock_file),
        tmp_path_factory.mktemp("api") / "api.log",
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def start_api(
    kube: Kube,
    database: str,
    redis_server: Redis,
    clock_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ApiServer]]:
    """Start another API process with settings of a test's own (stopped at session end)."""
    started: list[ApiServer] = []

    def start(**settings: str) -> ApiServer:
        server = ApiServer(
            api_env(kube, database, redis_server, clock_file, **settings),
            tmp_path_factory.mktemp("api-extra") / "api.log",
        )
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# ------------------------------------------------------------------ tenants


@pytest.fixture(scope="session")
def make_world(kube: Kube, operator: OperatorProcess) -> Callable[..., World]:
    """Provision a tenant on a plan with the given limits; waits until it is Ready."""

    def make(limits: dict[str, int] | None = None, **plan_spec: Any) -> World:
        suffix = uuid.uuid4().hex[:6]
        world = World(kube, f"api-{suffix}", f"acme-{suffix}", f"plan-{suffix}",
                      f"tenant-acme-{suffix}")  # fmt: skip
        kube.kubectl("create", "namespace", world.control)
        kube.apply(
            {
                "apiVersion": API,
                "kind": "Plan",
                "metadata": {"name": world.plan},
                "spec": {
                    "displayName": f"Plan {suffix}",
                    "price": {"amount": 4900, "currency": "USD", "interval": "month"},
                    "limits": limits if limits is not None else {"api_calls": 1000},
                    "metrics": PLAN_METRICS,
                    **plan_spec,
                },
            },
            {
                "apiVersion": API,
                "kind": "Tenant",
                "metadata": {"name": world.tenant, "namespace": world.control},
                "spec": {"displayName": "Acme", "billingEmail": "billing@acme.example"},
            },
            {
                "apiVersion": API,
                "kind": "Subscription",
                "metadata": {"name": world.tenant, "namespace": world.control},
                "spec": {"tenantRef": {"name": world.tenant}, "planRef": {"name": world.plan}},
            },
        )
        wait_for(lambda: is_ready(world.tenant_object()), f"Tenant {world.key} Ready", 60)
        return world

    return make
