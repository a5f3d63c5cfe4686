"""Fleet rollouts: which of a Plan's tenants move to its new chart version now. Pure.

`next_step` is called again and again (level, not edge): from the Plan's
rollout settings and target version, the rollout's last state (the Plan's
`status.rollout`) and what each Tenant's status says now, it returns a
frozen `RolloutStep`: the tenants to move to the target, the tenants to roll
back to the last good version, the new state and when to call again. It
never sleeps and never reads a clock; the caller applies the step, records
on each Tenant it moved the version and the step's `now`, and feeds that back
as `moved_to`/`moved_at`.

The invariants it keeps:

- A pinned Tenant (`spec.chartVersion`) is never moved, rolled back or counted.
- A Tenant with no release yet is not moved either: it installs by itself the
  version `settled_version` names (core/rollout.version_to_run), and is moved
  by a later wave if that is not the target.
- Waves: first the canary wave (0), the unpinned tenants labelled
  `tenantry.io/canary: "true"` (those not on the target yet), or, none
  labelled, the first `canary` by name; then waves 1, 2, ... of `batchSize`,
  in order of name. A wave starts only when every tenant of the one before
  passed its gate and `pauseSeconds` have gone by since (none before the
  canary wave); a tenant of the passed wave failing during that pause fails
  the rollout as if in its gate.
- A moved tenant passes its gate when its release is deployed at the target
  and its instance sent a heartbeat after the move that says it is healthy
  (the release alone when `requireHeartbeat` is false).
  It fails it when its release failed at the target, when that heartbeat says
  it is not healthy, or when `gateTimeoutSeconds` after the move have passed
  without either. One failure fails the rollout: the failed tenants are rolled
  back to the last good version, the rest of their wave stays on the target,
  and nobody else is moved until the Plan names another version.
- Paused (annotation `tenantry.io/rollout-paused: "true"`): nobody is moved or
  rolled back and no gate is judged; resuming carries on where it stood.
- A new target, whatever the rollout's phase, starts a new rollout from the
  fleet as it is: tenants already on the new version count as updated, every
  other unpinned tenant (the interrupted wave, earlier failures) is pending,
  and the waves start again with the canary. The last good version stays the
  last version a rollout completed: an interrupted or failed one never was.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tenantry.core.resources import PlanRollout, RolloutPhase, RolloutStatus

CANARY_LABEL = "tenantry.io/canary"
"""A Tenant labelled with it (value `"true"`) is in the canary wave of its Plan's rollouts."""
PAUSE_ANNOTATION = "tenantry.io/rollout-paused"
"""A Plan annotated with it (value `"true"`) moves nobody until it is removed."""
GATE_POLL = dt.timedelta(seconds=10)
"""How soon to look again while a wave is gated, heartbeats arriving at any time."""

ASSIGNMENT_ANNOTATION = "tenantry.io/rollout"
"""On a Tenant: the version a rollout of its Plan moved it to, and when (`Assignment`)."""

DEPLOYED = "deployed"
FAILED = "failed"


@dataclass(frozen=True)
class Assignment:
    """What a rollout last decided for one Tenant: run `version` of Plan `plan`'s chart.

    Kept on the Tenant, as the annotation `tenantry.io/rollout` (JSON), so the decision
    survives the operator and is the Tenant's own: the Plan's rollout writes it, the
    Tenant's reconcile reads it."""

    plan: str
    version: str
    moved_at: dt.datetime

    def to_annotation(self) -> str:
        moved_at = _stamp(self.moved_at)
        return json.dumps({"plan": self.plan, "version": self.version, "movedAt": moved_at})

    @classmethod
    def from_annotation(cls, raw: str | None) -> Assignment | None:
        """The assignment written, or none when absent or unreadable (then the Tenant
        is one no rollout moved yet)."""
        if not raw:
            return None
        try:
            found = json.loads(raw)
            return cls(
                str(found["plan"]),
                str(found["version"]),
                dt.datetime.fromisoformat(found["movedAt"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def version_to_run(
    *,
    plan: str,
    target: str,
    state: RolloutStatus | None,
    pinned: str | None,
    assignment: Assignment | None,
    running: str | None,
) -> str:
    """The chart version a Tenant of Plan `plan` (whose `chart.version` is `target`) runs.

    In order: its own pin; what a rollout of this Plan assigned it; what it runs
    already (`running`: its release's version, when of this Plan's chart), since only a
    rollout moves a Tenant; and for a Tenant new to the Plan, the last good version of
    a rollout under way or failed, else the target. A Plan's new `chart.version` thus
    reaches nobody before its rollout moves them."""
    if pinned is not None:
        return pinned
    if assignment is not None and assignment.plan == plan:
        return assignment.version
    if running is not None:
        return running
    return settled_version(target, state)


def settled_version(target: str, state: RolloutStatus | None) -> str:
    """The version the Plan's fleet is known good on: the target once a rollout of it
    completed (or when none was ever needed), else the last good one, if any."""
    if state is None:
        return target
    if state.phase is RolloutPhase.COMPLETE:
        return state.target_version
    return state.previous_version or state.target_version


@dataclass(frozen=True)
class TenantView:
    """What the planner needs of one of the Plan's Tenants."""

    name: str
    """`namespace/name`: the key of the Tenant and the order of the waves."""
    running: str | None = None
    """The chart version of its release (`status.release.chartVersion`); none before one."""
    release_status: str | None = None
    """Helm's status of that release (`status.release.status`), e.g. `deployed`, `failed`."""
    healthy: bool | None = None
    """Its `InstanceHealthy` condition: True, False, or None (Unknown or absent)."""
    last_heartbeat: dt.datetime | None = None
    """When its instance's last heartbeat arrived (`status.instance.lastHeartbeat`)."""
    moved_to: str | None = None
    """The version a rollout last moved it (or rolled it back) to."""
    moved_at: dt.datetime | None = None
    """When that move was decided (the step's `now`)."""
    pinned: bool = False
    """Whether `spec.chartVersion` pins it to a version of its own."""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def canary(self) -> bool:
        return self.labels.get(CANARY_LABEL) == "true"

    def runs(self, version: str) -> bool:
        """Whether its release is deployed at `version`."""
        return self.running == version and self.release_status == DEPLOYED


@dataclass(frozen=True)
class Fleet:
    """Everything one step is decided from."""

    settings: PlanRollout
    target: str
    """The Plan's `chart.version`."""
    state: RolloutStatus | None
    """The Plan's `status.rollout` as the last step left it; none before the first."""
    tenants: Sequence[TenantView]
    now: dt.datetime
    paused: bool = False


@dataclass(frozen=True)
class RolloutStep:
    """What to do now, and what the Plan's `status.rollout` becomes."""

    move: tuple[str, ...]
    """Tenants to move to `status.targetVersion`."""
    roll_back: tuple[str, ...]
    """Tenants to move back to `status.previousVersion`."""
    status: RolloutStatus
    recheck_at: dt.datetime | None
    """When to call again at the latest; none: only when the Plan or a Tenant changes."""
    events: tuple[str, ...] = ()
    """What happened in this step, in the past tense, for the Plan's Events."""


@dataclass(frozen=True)
class _Verdict:
    """A gate's verdict: failed (why), undecided (until when), or, neither, passed."""

    failure: str | None = None
    deadline: dt.datetime | None = None


def next_step(fleet: Fleet) -> RolloutStep:
    """The step a rollout takes now; see the module's docstring for the rules."""
    target, now = fleet.target, fleet.now
    tenants = {t.name: t for t in sorted(fleet.tenants, key=lambda t: t.name) if not t.pinned}
    pinned = len(fleet.tenants) - len(tenants)
    state, events = fleet.state, []
    if state is None or state.target_version != target:
        previous = _last_good(state, tenants.values(), target)
        # Nobody to move (a new Plan, tenants still installing): nothing to roll out.
        moving = any(t.running is not None and not t.runs(target) for t in tenants.values())
        state = RolloutStatus(
            target_version=target,
            previous_version=previous,
            phase=RolloutPhase.PROGRESSING if moving else RolloutPhase.COMPLETE,
            started_at=now,
        )
        if moving:
            events.append(f"Started the rollout of {target} (last good: {previous or 'none'}).")
    tally = _Tally(tenants, state, pinned)

    if state.phase is RolloutPhase.FAILED:
        # Decided already; only rollbacks not yet applied are asked for again.
        back = () if fleet.paused else _rollbacks(state, state.failed_tenants, tenants)
        return RolloutStep((), back, tally.status(state), None, tuple(events))

    if fleet.paused:
        message = f"Paused by annotation {PAUSE_ANNOTATION}; {tally.summary()}"
        if state.phase is not RolloutPhase.PAUSED:
            events.append(f"Paused the rollout of {target}.")
        paused = tally.status(state, phase=RolloutPhase.PAUSED, message=message)
        return RolloutStep((), (), paused, None, tuple(events))
    if state.phase is RolloutPhase.PAUSED:
        events.append(f"Resumed the rollout of {target}.")

    # The open wave is gated; a passed one is still watched through the pause (a
    # failure then stops the rollout too), and no longer once the rollout completed.
    watched = state.phase is not RolloutPhase.COMPLETE
    members = [tenants[name] for name in state.wave if name in tenants and watched]
    verdicts = {t.name: _gate(t, fleet, state) for t in members}
    failures = {name: v.failure for name, v in verdicts.items() if v.failure is not None}
    if failures:
        return _fail(state, failures, tenants, pinned, tuple(events))
    deadlines = [v.deadline for v in verdicts.values() if v.deadline is not None]
    if deadlines:
        waiting = len(deadlines)
        message = (
            f"{_wave_name(state.current_wave)}: {len(members) - waiting} of {len(members)} "
            f"passed their gate, {waiting} waiting; {tally.summary()}"
        )
        return RolloutStep(
            move=tuple(t.name for t in members if not _moved_in(t, state)),
            roll_back=(),
            status=tally.status(state, phase=RolloutPhase.PROGRESSING, message=message),
            recheck_at=min(*deadlines, now + GATE_POLL),
            events=tuple(events),
        )

    # The current wave, if any, passed: the next one, after the pause.
    if state.current_wave is not None and state.wave_passed_at is None:
        state = state.model_copy(update={"wave_passed_at": now})
        events.append(f"{_wave_name(state.current_wave)} passed its gate.")
        tally = _Tally(tenants, state, pinned)
    pending = [t for t in tenants.values() if tally.is_pending(t)]
    if not pending:
        if state.phase is not RolloutPhase.COMPLETE:
            events.append(f"Completed the rollout of {target}.")
        message = f"Every unpinned tenant runs {target}; {tally.summary()}"
        done = tally.status(state, phase=RolloutPhase.COMPLETE, message=message)
        return RolloutStep((), (), done, None, tuple(events))
    if state.wave_passed_at is not None:
        next_wave_at = state.wave_passed_at + dt.timedelta(seconds=fleet.settings.pause_seconds)
        if now < next_wave_at:
            message = (
                f"{_wave_name(state.current_wave)} passed; the next starts at "
                f"{_stamp(next_wave_at)}; {tally.summary()}"
            )
            between = tally.status(state, phase=RolloutPhase.WAITING, message=message)
            return RolloutStep((), (), between, next_wave_at, tuple(events))

    labelled = any(t.canary for t in tenants.values())
    number, wave = _next_wave(state.current_wave, pending, labelled, fleet.settings)
    state = state.model_copy(
        update={
            "current_wave": number,
            "wave": [t.name for t in wave],
            "wave_started_at": now,
            "wave_passed_at": None,
        }
    )
    tally = _Tally(tenants, state, pinned)
    events.append(f"Moved {_wave_name(number).lower()} to {target}: {_listed(wave)}.")
    message = f"{_wave_name(number)}: moved {len(wave)} to {target}; {tally.summary()}"
    return RolloutStep(
        move=tuple(t.name for t in wave),
        roll_back=(),
        status=tally.status(state, phase=RolloutPhase.PROGRESSING, message=message),
        recheck_at=now + GATE_POLL,
        events=tuple(events),
    )


def _last_good(
    state: RolloutStatus | None, tenants: Iterable[TenantView], target: str
) -> str | None:
    """The version failed tenants go back to: the last one a rollout completed, else the
    one most of the fleet runs (ties: the lowest in text order)."""
    if state is not None:
        if state.phase is RolloutPhase.COMPLETE:
            return state.target_version
        if state.previous_version is not None:
            return state.previous_version
    counts = Counter(
        t.running
        for t in tenants
        if t.running is not None and t.running != target and t.release_status == DEPLOYED
    )
    return max(sorted(counts), key=counts.__getitem__, default=None)


def _gate(tenant: TenantView, fleet: Fleet, state: RolloutStatus) -> _Verdict:
    """Whether a tenant of the current wave passed its gate, failed it, or may still pass.
    Once the wave passed, only a failed release or an unhealthy heartbeat fail it."""
    target, now = fleet.target, fleet.now
    # A move not applied yet runs on the wave's clock.
    since = max(filter(None, (state.wave_started_at, _moved_at(tenant, target))), default=now)
    at_target = tenant.running == target
    if at_target and tenant.release_status == FAILED:
        return _Verdict(failure=f"its release failed at {target}")
    if tenant.runs(target) and not fleet.settings.require_heartbeat:
        return _Verdict()
    heard = tenant.last_heartbeat is not None and tenant.last_heartbeat > since
    if tenant.runs(target) and heard:
        if tenant.healthy is True:
            return _Verdict()
        if tenant.healthy is False:
            return _Verdict(
                failure="its instance was not healthy after the move (InstanceHealthy=False)"
            )
    if state.wave_passed_at is not None:
        return _Verdict()
    timeout = fleet.settings.gate_timeout_seconds
    deadline = since + dt.timedelta(seconds=timeout)
    if now < deadline:
        return _Verdict(deadline=deadline)
    if not tenant.runs(target):
        return _Verdict(failure=f"its release was not deployed at {target} within {timeout} s")
    return _Verdict(failure=f"no healthy heartbeat within {timeout} s of the move")


def _fail(
    state: RolloutStatus,
    failures: Mapping[str, str],
    tenants: Mapping[str, TenantView],
    pinned: int,
    events: tuple[str, ...],
) -> RolloutStep:
    state = state.model_copy(update={"failed_tenants": sorted(failures)})
    tally = _Tally(tenants, state, pinned)
    back = _rollbacks(state, state.failed_tenants, tenants)
    why = "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
    if back:
        after = (
            f"rolled back to {state.previous_version}; the rest of the wave stays on "
            f"{state.target_version}"
        )
    else:
        after = "no other version to roll back to: left as they are"
    message = (
        f"{_wave_name(state.current_wave)} failed ({why}); {after}. Nobody else is moved "
        f"until the Plan's chart.version changes; {tally.summary()}"
    )
    failed = tally.status(state, phase=RolloutPhase.FAILED, message=message)
    event = f"Failed the rollout of {state.target_version}: {why}; {after}."
    return RolloutStep((), back, failed, None, (*events, event))


def _rollbacks(
    state: RolloutStatus, names: Sequence[str], tenants: Mapping[str, TenantView]
) -> tuple[str, ...]:
    """The failed tenants not yet moved back to the last good version, if there is one."""
    previous = state.previous_version
    if previous is None or previous == state.target_version:
        return ()
    return tuple(n for n in names if n in tenants and tenants[n].moved_to != previous)


def _moved_at(tenant: TenantView, version: str) -> dt.datetime | None:
    return tenant.moved_at if tenant.moved_to == version else None


def _moved_in(tenant: TenantView, state: RolloutStatus) -> bool:
    """Whether the move of the current wave was applied to the tenant."""
    moved_at = _moved_at(tenant, state.target_version)
    started = state.wave_started_at
    return moved_at is not None and (started is None or moved_at >= started)


def _next_wave(
    current: int | None, pending: Sequence[TenantView], labelled: bool, settings: PlanRollout
) -> tuple[int, list[TenantView]]:
    """The next wave's number and tenants; `labelled`: some tenant is labelled a canary."""
    if current is None:
        by_count = list(pending[: settings.canary])
        canaries = [t for t in pending if t.canary] if labelled else by_count
        if canaries:
            return 0, canaries
    return (current or 0) + 1, list(pending[: settings.batch_size])


def _listed(tenants: Sequence[TenantView], most: int = 10) -> str:
    """Names for an Event, which Kubernetes keeps short."""
    shown = ", ".join(t.name for t in tenants[:most])
    return shown if len(tenants) <= most else f"{shown} and {len(tenants) - most} more"


class _Tally:
    """The counts of the status, from the tenants and the rollout's state."""

    def __init__(self, tenants: Mapping[str, TenantView], state: RolloutStatus, pinned: int):
        self.target = state.target_version
        self.failed_names = set(state.failed_tenants)
        # A wave that passed is behind: its tenants count as any others.
        self.wave = set(state.wave) if state.wave_passed_at is None else set()
        self.pinned = pinned
        self.updated = sum(
            t.runs(self.target) and t.name not in self.failed_names for t in tenants.values()
        )
        self.failed = len(self.failed_names & tenants.keys())
        self.pending = sum(self.is_pending(t) for t in tenants.values())

    def is_pending(self, tenant: TenantView) -> bool:
        """Runs another version, and is neither in the current wave nor failed. A tenant
        with no release yet is not: it installs the settled version by itself."""
        return tenant.running is not None and not (
            tenant.runs(self.target) or tenant.name in self.wave or tenant.name in self.failed_names
        )

    def summary(self) -> str:
        parts = [f"{self.updated} updated", f"{self.pending} pending"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.pinned:
            parts.append(f"{self.pinned} pinned left alone")
        return ", ".join(parts) + "."

    def status(
        self, state: RolloutStatus, *, phase: RolloutPhase | None = None, message: str | None = None
    ) -> RolloutStatus:
        return state.model_copy(
            update={
                "phase": phase or state.phase,
                "updated": self.updated,
                "failed": self.failed,
                "pending": self.pending,
                "message": message if message is not None else state.message,
            }
        )


def _wave_name(number: int | None) -> str:
    if number is None:
        return "No wave"
    return "The canary wave" if number == 0 else f"Wave {number}"


def _stamp(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
