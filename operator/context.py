"""What every handler needs, built once at start-up and kept in kopf's memo."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.core.clock import Clock, system_clock
from tenantry.operator.charts_source import ChartCache
from tenantry.operator.helm import Releases
from tenantry.operator.keys import RevocationList, SigningKeys
from tenantry.operator.kube import Cluster
from tenantry.operator.provisioning import Chart
from tenantry.operator.settings import OperatorSettings
from tenantry.operator.stripe.client import Stripe
from tenantry.operator.suspension import Workloads
from tenantry.operator.work import Slots


@dataclass
class Context:
    settings: OperatorSettings
    cluster: Cluster
    releases: Releases
    chart: Chart  # the bundled one
    charts: ChartCache
    workloads: Workloads
    keys: SigningKeys
    revocations: RevocationList
    passes: Slots
    """Tenant passes at once (twice the helm processes): each waits for one first."""
    database: AsyncEngine | None = None
    stripe: Stripe | None = None  # None: Stripe is off, and never called
    clock: Clock = system_clock
    deleting: set[str] = field(default_factory=set)
    """Uids of Tenants marked for deletion: never reconciled again."""
    exiting: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the operator exits: kopf stops its timers one at a time, and a periodic
    check stops at once instead of running (and slowing the rest) until its turn."""
    _locks: defaultdict[Any, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def lock(self, key: Any) -> asyncio.Lock:
        """One reconcile at a time per object: timers run beside change handlers."""
        return self._locks[key]
