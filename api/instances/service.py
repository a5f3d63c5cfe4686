"""Instance heartbeats: stored at once, and turned into the Tenant's status when due.

A heartbeat is one upsert (PostgreSQL) and a 202; the status write, when
the repository says one is due, runs in the background. The write is level,
not edge: it reads the tenant's last heartbeat and its Tenant afresh and
sets `status.instance` and the `InstanceHealthy` condition to what they
should be now, whoever asked for it (a heartbeat, or the sweep for silent
instances).

The operator owns the rest of the status and writes its conditions as one
list. This service merge-patches `status.instance` alone, and touches the
list only when `InstanceHealthy` must change, then with the Tenant's
`resourceVersion`, so a write never undoes one of the operator's (a conflict
re-reads and tries again). The operator may still write a list it read before
ours; the sweep and the periodic rewrite set it right within an interval.
`Ready` is never touched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube.core.exceptions import ApiError as KubeApiError
from lightkube.types import PatchType
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.errors import NotFound
from tenantry.api.instances import repository as repo
from tenantry.api.instances.schemas import Heartbeat, HeartbeatAccepted, InstanceReport
from tenantry.api.settings import ApiSettings
from tenantry.api.tenants.catalog import Tenant
from tenantry.api.tenants.kube import FIELD_MANAGER, Kube, TenantResource, kube_unavailable
from tenantry.core.clock import Clock
from tenantry.core.conditions import Observed, condition, merge_conditions
from tenantry.core.resources import INSTANCE_HEALTHY, Condition, InstanceHealth, InstanceSummary

log = logging.getLogger("tenantry.api.instances")

HEARTBEAT_MISSING = "HeartbeatMissing"
SWEEP_BATCH = 200
"""Silent instances one sweep claims at most; the next sweep takes the rest."""
CONFLICT_RETRIES = 3

_REASONS = {
    InstanceHealth.HEALTHY: "HeartbeatHealthy",
    InstanceHealth.DEGRADED: "InstanceDegraded",
    InstanceHealth.UNHEALTHY: "InstanceUnhealthy",
}


# ---------------------------------------------------------------- pure


def reported(health: InstanceHealth, version: str, message: str | None) -> Observed:
    """The condition a heartbeat's own report makes: True only for `healthy`."""
    said = f": {message}" if message else "."
    return condition(
        INSTANCE_HEALTHY,
        health is InstanceHealth.HEALTHY,
        _REASONS[health],
        f"Version {version} reports {health.value}{said}",
    )


def silent(last: repo.HeartbeatRow, timeout: float) -> Observed:
    return condition(
        INSTANCE_HEALTHY,
        False,
        HEARTBEAT_MISSING,
        f"No heartbeat for more than {timeout:g} s: the last came at "
        f"{last.received_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ} (version {last.version}, "
        f"{last.health}).",
    )


def is_silent(last: repo.HeartbeatRow, now: dt.datetime, timeout: float) -> bool:
    return now - last.received_at > dt.timedelta(seconds=timeout)


def observed_now(last: repo.HeartbeatRow, now: dt.datetime, timeout: float) -> Observed:
    """What `InstanceHealthy` should say at `now`, from the last heartbeat."""
    if is_silent(last, now, timeout):
        return silent(last, timeout)
    return reported(InstanceHealth(last.health), last.version, last.message)


def summary(last: repo.HeartbeatRow) -> InstanceSummary:
    return InstanceSummary(
        version=last.version,
        health=InstanceHealth(last.health),
        message=last.message,
        last_heartbeat=last.received_at,
    )


def status_patch(
    status: dict[str, Any],
    instance: InstanceSummary,
    observed: Observed,
    generation: int | None,
    now: dt.datetime,
) -> tuple[dict[str, Any], bool] | None:
    """The merge patch of a Tenant's `status` that makes it say `instance` and `observed`,
    and whether it replaces the condition list; None when the status says so already.

    Only the `InstanceHealthy` entry of the list changes: the others are kept as they
    are, even ones this code could not parse.
    """
    patch: dict[str, Any] = {}
    wire = instance.to_wire()
    if status.get("instance") != wire:
        patch["instance"] = wire
    raw = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    index = next((i for i, c in enumerate(raw) if c.get("type") == INSTANCE_HEALTHY), None)
    before = raw[index] if index is not None else None
    if before is None or (before.get("status"), before.get("reason"), before.get("message")) != (
        observed.status.value,
        observed.reason,
        observed.message,
    ):
        prior = []
        if before is not None:
            try:
                prior = [Condition.model_validate(before)]
            except ValidationError:
                prior = []  # unreadable: replaced as if new
        (merged,) = merge_conditions(prior, [observed], generation, now)
        conditions = list(raw)
        if index is None:
            conditions.append(merged.to_wire())
        else:
            conditions[index] = merged.to_wire()
        patch["conditions"] = conditions
    return (patch, "conditions" in patch) if patch else None


# ---------------------------------------------------------------- service


@dataclass(frozen=True)
class Target:
    uid: str
    namespace: str
    name: str


class HeartbeatService:
    def __init__(self, engine: AsyncEngine, kube: Kube, settings: ApiSettings, clock: Clock):
        self.engine = engine
        self.kube = kube
        self.clock = clock
        self.timeout = settings.heartbeat_timeout
        self.interval = settings.heartbeat_status_interval
        self.sweep_interval = settings.heartbeat_sweep_interval
        self._writes: set[asyncio.Task[None]] = set()

    async def receive(self, tenant: Tenant, beat: Heartbeat) -> HeartbeatAccepted:
        """Store the heartbeat; start the status write if one is due. Returns at once."""
        now = self.clock()
        reason = reported(beat.health, beat.version, beat.message).reason
        async with self.engine.begin() as conn:
            due = await repo.store(
                conn, uid=tenant.uid, namespace=tenant.namespace, name=tenant.name,
                version=beat.version, health=beat.health.value, message=beat.message,
                figures=beat.figures, reason=reason, now=now, interval=self.interval,
            )  # fmt: skip
        if due:
            self._spawn(Target(tenant.uid, tenant.namespace, tenant.name))
        return HeartbeatAccepted(received_at=now, timeout_seconds=self.timeout)

    async def report(self, tenant: Tenant) -> InstanceReport:
        async with self.engine.connect() as conn:
            last = await repo.last(conn, tenant.uid)
        if last is None:
            raise NotFound(
                f"Tenant {tenant.key}'s instance has sent no heartbeat yet.",
                code="no_heartbeat",
            )
        return InstanceReport(
            tenant=tenant.key,
            version=last.version,
            health=InstanceHealth(last.health),
            message=last.message,
            figures=last.figures,
            received_at=last.received_at,
            silent=is_silent(last, self.clock(), self.timeout),
        )

    async def sweep(self) -> int:
        """Write the status of instances gone silent (or due a rewrite); how many."""
        async with self.engine.begin() as conn:
            rows = await repo.claim_silent(
                conn, reason=HEARTBEAT_MISSING, now=self.clock(), silence=self.timeout,
                interval=self.interval, limit=SWEEP_BATCH,
            )  # fmt: skip
        await asyncio.gather(
            *(self.write(Target(r.tenant_uid, r.tenant_namespace, r.tenant_name)) for r in rows)
        )
        return len(rows)

    async def sweep_forever(self) -> None:
        """Every replica sweeps; the claims (SKIP LOCKED) give each silent tenant to one."""
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception as error:
                log.warning("The sweep for silent instances failed: %s", error)

    def _spawn(self, target: Target) -> None:
        task = asyncio.create_task(self.write(target))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def write(self, target: Target) -> None:
        """Set the Tenant's status to what its last heartbeat says now; never raises."""
        try:
            await self._write(target)
        except Exception as error:
            log.warning("Failed to write the instance status of Tenant %s/%s: %s",
                        target.namespace, target.name, error)  # fmt: skip
            try:
                async with self.engine.begin() as conn:
                    await repo.release(conn, target.uid)
            except Exception:
                log.debug("Could not mark the status of %s due again", target.uid, exc_info=True)

    async def _write(self, target: Target) -> None:
        for _ in range(CONFLICT_RETRIES):
            async with self.engine.connect() as conn:
                last = await repo.last(conn, target.uid)
            if last is None:
                return
            tenant = await self.kube.tenant(target.namespace, target.name)
            metadata = (tenant or {}).get("metadata") or {}
            if tenant is None or metadata.get("uid") != target.uid:
                async with self.engine.begin() as conn:
                    await repo.forget(conn, target.uid)
                return
            now = self.clock()
            found = status_patch(
                tenant.get("status") or {}, summary(last), observed_now(last, now, self.timeout),
                metadata.get("generation"), now,
            )  # fmt: skip
            if found is None:
                return
            patch, conditional = found
            version = metadata["resourceVersion"] if conditional else None
            if await self._patch(target, patch, version):
                return
        raise kube_unavailable(f"the Tenant kept changing ({CONFLICT_RETRIES} conflicts)")

    async def _patch(self, target: Target, status: dict[str, Any], version: str | None) -> bool:
        """Merge-patch the status (conditionally on `version`); False on a conflict."""
        body: dict[str, Any] = {"status": status}
        if version is not None:
            body["metadata"] = {"resourceVersion": version}
        try:
            await self.kube.client.patch(
                TenantResource.Status, target.name, body, namespace=target.namespace,
                patch_type=PatchType.MERGE, field_manager=FIELD_MANAGER,
            )  # fmt: skip
        except KubeApiError as error:
            if error.status.code == 409:
                return False
            if error.status.code == 404:
                return True  # deleted meanwhile: the next write forgets it
            raise kube_unavailable(f"{error.status.code} {error.status.message}") from error
        except httpx2.HTTPError as error:
            raise kube_unavailable(f"{type(error).__name__}: {error}") from error
        if "conditions" in status:
            condition_now = next(c for c in status["conditions"] if c["type"] == INSTANCE_HEALTHY)
            log.info("Set InstanceHealthy=%s (%s) on Tenant %s/%s", condition_now["status"],
                     condition_now["reason"], target.namespace, target.name)  # fmt: skip
        return True

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
