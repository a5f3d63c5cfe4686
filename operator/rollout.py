"""Fleet rollouts: a Plan's new chart version reaches its Tenants in waves.

core/rollout.py decides; this module gathers what it decides from and applies it.
One loop per Plan whose chart has versions (OCI or chart repository), run by
the shard that does the cluster-wide work as a kopf daemon. Each step it:

1. reads the Plan as it is now (kopf keeps the daemon's body current) and its
   Tenants from the `tenants_by_plan` index (their status and annotations);
2. asks `next_step`;
3. writes `status.rollout` when it changed, *then* the moves and rollbacks, as
   each Tenant's `tenantry.io/rollout` annotation, which its own reconcile turns
   into a helm upgrade (core/rollout.version_to_run). Status first: a restart
   between the two finds the wave recorded and its moves still to apply, never
   a Tenant moved outside a recorded, gated wave;
4. records the step's Events on the Plan.

It steps again when the Plan or one of its Tenants changes (debounced by
`SETTLE`), or at the step's `recheck_at`, whichever comes first. Nothing here
writes anything for a Plan whose chart has a single version.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from tenantry.core.resources import (
    GROUP,
    VERSION,
    PlanKind,
    PlanSpec,
    RolloutStatus,
    TenantKind,
    TenantSpec,
    TenantStatus,
)
from tenantry.core.rollout import (
    ASSIGNMENT_ANNOTATION,
    CANARY_LABEL,
    PAUSE_ANNOTATION,
    Assignment,
    Fleet,
    RolloutStep,
    TenantView,
    next_step,
    version_to_run,
)
from tenantry.operator import errors, sharding
from tenantry.operator.charts_source import chart_ref
from tenantry.operator.context import Context
from tenantry.operator.reconcile import Logger

SETTLE = 0.05
"""Seconds to let a burst of Tenant changes settle before the next step."""
IDLE = 300.0
"""Seconds between steps when nothing asks for one sooner (a safety net, not a clock)."""
RETRY = 5.0
"""Seconds before a step that could not write is tried again."""


def versioned(spec: PlanSpec) -> str | None:
    """The version a Plan rolls out, if its chart has versions to roll."""
    chart = spec.chart
    if chart.oci is None and chart.repository is None:
        return None
    return chart.version


def tenant_version(
    plan_name: str,
    plan: PlanSpec,
    spec: TenantSpec,
    annotations: Mapping[str, str],
    prior: TenantStatus,
    rollouts: Iterable[Mapping[str, Any]],
) -> str | None:
    """The chart version a Tenant runs: its pin or, for a chart with versions, what
    the Plan's rollout decided (core/rollout.version_to_run); none: the chart's only one."""
    target = versioned(plan)
    if target is None:
        return spec.chart_version  # chart_ref refuses a pin of a chart with one version
    release = prior.release
    # A chart with versions never reads the bundled chart's path.
    source = chart_ref(plan_name, plan.chart, None, Path()).source
    same_chart = release is not None and prior.plan == plan_name and release.source == source
    state = next((prior_rollout_of(raw) for raw in rollouts), None)
    return version_to_run(
        plan=plan_name,
        target=target,
        state=state,
        pinned=spec.chart_version,
        assignment=Assignment.from_annotation(annotations.get(ASSIGNMENT_ANNOTATION)),
        running=release.chart_version if release is not None and same_chart else None,
    )


def tenant_entry(namespace: str | None, name: str, body: kopf.Body) -> dict[str, Any]:
    """What the planner needs of a Tenant, from its object (the index's value)."""
    status = body.status
    release = status.get("release") or {}
    instance = status.get("instance") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return {
        "name": f"{namespace}/{name}",
        "running": release.get("chartVersion"),
        "releaseStatus": release.get("status"),
        "healthy": {"True": True, "False": False}.get(conditions.get("InstanceHealthy") or ""),
        "lastHeartbeat": instance.get("lastHeartbeat"),
        "assignment": body.metadata.annotations.get(ASSIGNMENT_ANNOTATION),
        "pinned": body.spec.get("chartVersion") is not None,
        "canary": body.metadata.labels.get(CANARY_LABEL) == "true",
    }


def views(
    plan: str, entries: Iterable[Mapping[str, Any]], applied: Mapping[str, Assignment]
) -> list[TenantView]:
    """The Plan's Tenants for the planner; a move written but not yet seen in the index
    (`applied`) counts as made."""
    found = []
    for entry in entries:
        assignment = Assignment.from_annotation(entry["assignment"])
        if assignment is not None and assignment.plan != plan:
            assignment = None
        written = applied.get(entry["name"])
        if written is not None and (assignment is None or assignment.moved_at < written.moved_at):
            assignment = written
        heartbeat = entry["lastHeartbeat"]
        found.append(
            TenantView(
                name=entry["name"],
                running=entry["running"],
                release_status=entry["releaseStatus"],
                healthy=entry["healthy"],
                last_heartbeat=dt.datetime.fromisoformat(heartbeat) if heartbeat else None,
                moved_to=assignment.version if assignment else None,
                moved_at=assignment.moved_at if assignment else None,
                pinned=entry["pinned"],
                labels={CANARY_LABEL: "true"} if entry["canary"] else {},
            )
        )
    return found


def unseen_moves(
    plan: str, entries: Iterable[Mapping[str, Any]], applied: Mapping[str, Assignment]
) -> dict[str, Assignment]:
    """The moves written (`applied`) that the index does not show yet. A move the index
    shows, or of a Tenant no longer in the Plan, is forgotten: without this the loop
    would keep one entry for every Tenant it ever moved."""
    kept = {}
    for entry in entries:
        written = applied.get(entry["name"])
        if written is None:
            continue
        seen = Assignment.from_annotation(entry["assignment"])
        # The annotation keeps whole seconds.
        shown = (
            seen is not None
            and seen.plan == plan
            and seen.moved_at >= written.moved_at.replace(microsecond=0)
        )
        if not shown:
            kept[entry["name"]] = written
    return kept


def prior_rollout_of(raw: Mapping[str, Any] | None) -> RolloutStatus | None:
    """A Plan's `status.rollout`, or none when absent or unreadable."""
    try:
        return RolloutStatus.model_validate(raw) if raw else None
    except ValidationError:
        return None


class PlanRollout:
    """The rollout loop of one Plan: what it wrote that the index may not show yet."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.applied: dict[str, Assignment] = {}
        # This loop is the only writer of `status.rollout`, and the daemon's body may not
        # show its last write yet: what it wrote is the state to go on from.
        self.state: RolloutStatus | None = None

    async def step(
        self, body: kopf.Body, entries: Iterable[Mapping[str, Any]], logger: Logger
    ) -> dt.datetime | None:
        """One step; when to step again at the latest (none: only on a change)."""
        try:
            spec = PlanSpec.model_validate(dict(body.spec))
        except ValidationError:
            return None  # the Plan's reconcile says what is wrong
        target = versioned(spec)
        if target is None:
            return None
        prior = self.state or prior_rollout_of(body.status.get("rollout"))
        now = self.ctx.clock()
        entries = list(entries)
        self.applied = unseen_moves(self.name, entries, self.applied)
        step = next_step(
            Fleet(
                settings=spec.rollout,
                target=target,
                state=prior,
                tenants=views(self.name, entries, self.applied),
                now=now,
                paused=body.metadata.annotations.get(PAUSE_ANNOTATION) == "true",
            )
        )
        await self.apply(step, prior, body, now, logger)
        return step.recheck_at

    async def apply(
        self,
        step: RolloutStep,
        prior: RolloutStatus | None,
        body: kopf.Body,
        now: dt.datetime,
        logger: Logger,
    ) -> None:
        if step.status != prior:
            await self.ctx.cluster.patch_plan_status(self.name, {"rollout": step.status.to_wire()})
        self.state = step.status
        moves = [(name, step.status.target_version) for name in step.move]
        if step.status.previous_version is not None:
            moves += [(name, step.status.previous_version) for name in step.roll_back]
        await asyncio.gather(*(self.move(name, version, now) for name, version in moves))
        for event in step.events:
            logger.info(event)
            kopf.info(body, reason="Rollout", message=event)

    async def move(self, tenant: str, version: str, now: dt.datetime) -> None:
        assignment = Assignment(self.name, version, now)
        namespace, name = tenant.split("/", 1)
        await self.ctx.cluster.annotate_tenant(
            namespace, name, ASSIGNMENT_ANNOTATION, assignment.to_annotation()
        )
        self.applied[tenant] = assignment


async def _rest(
    wakeup: asyncio.Event, stopped: Any, until: dt.datetime | None, now: dt.datetime
) -> None:
    """Until woken, stopped, or `until` (at most IDLE seconds)."""
    seconds = IDLE if until is None else min(max((until - now).total_seconds(), 0.0), IDLE)
    waits = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    if wakeup.is_set():
        await asyncio.sleep(SETTLE)  # let the rest of a burst arrive
        wakeup.clear()


def register(registry: kopf.OperatorRegistry, ctx_of: Any) -> None:
    plans = (GROUP, VERSION, PlanKind.plural)
    tenants = (GROUP, VERSION, TenantKind.plural)
    wakeups: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    @kopf.index(*plans, id="plan_rollouts", registry=registry)
    async def plan_rollouts(
        name: str, body: kopf.Body, **_: Any
    ) -> dict[str, dict[str, Any]] | None:
        # For Tenants new to a Plan: they start on its last good version.
        rollout = body.status.get("rollout")
        return {name: dict(rollout)} if rollout else None

    @kopf.index(*tenants, id="tenants_by_plan", when=sharding.cluster_wide, registry=registry)
    async def tenants_by_plan(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[str, dict[str, Any]] | None:
        plan = body.status.get("plan")
        if not plan:
            return None
        # The index is updated on every change of a Tenant, before any handler: the
        # place to wake its Plan's loop (an event handler would log every Tenant change).
        # Async, so it runs on the loop: an asyncio.Event is not set from another thread.
        wakeups[plan].set()
        return {plan: tenant_entry(namespace, name, body)}

    @kopf.on.event(*plans, id="rollout", when=sharding.cluster_wide, registry=registry)
    async def plan_changed(name: str, **_: Any) -> None:
        wakeups[name].set()  # a new version, a pause or a resume

    @kopf.daemon(*plans, id="rollout", when=sharding.cluster_wide, cancellation_timeout=5,
                 registry=registry)  # fmt: skip
    async def roll_out(
        name: str, body: kopf.Body, memo: kopf.Memo, logger: Any, stopped: Any, **kwargs: Any
    ) -> None:
        ctx = ctx_of(memo)
        index: kopf.Index[str, dict[str, Any]] = kwargs["tenants_by_plan"]
        loop, wakeup = PlanRollout(ctx, name), wakeups[name]
        while not stopped:
            try:
                async with errors.kubernetes():
                    recheck = await loop.step(body, index.get(name, []), logger)
            except kopf.TemporaryError as error:
                logger.warning(f"Rollout step of Plan {name}: {error}")
                recheck = ctx.clock() + dt.timedelta(seconds=RETRY)
            await _rest(wakeup, stopped, recheck, ctx.clock())
        wakeups.pop(name, None)
