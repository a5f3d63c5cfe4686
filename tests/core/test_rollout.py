"""Fleet rollouts planned without a cluster: waves, gates, rollbacks, pause, a new target.

`SimulatedFleet` stands in for the operator and the instances: it applies each
step's moves and rollbacks, deploys what it was told, and sends heartbeats,
so the planner is driven as the operator will drive it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import pytest
from pydantic import ValidationError

from tenantry.core.resources import PlanRollout, PlanSpec, RolloutPhase, RolloutStatus
from tenantry.core.rollout import (
    CANARY_LABEL,
    Assignment,
    Fleet,
    RolloutStep,
    TenantView,
    next_step,
    version_to_run,
)

OLD, NEW, NEWER = "1.4.2", "1.5.0", "1.6.0"
T0 = dt.datetime(2031, 3, 10, 12, 0, tzinfo=dt.UTC)
SETTINGS = PlanRollout(canary=2, batch_size=3, pause_seconds=60, gate_timeout_seconds=300)


def seconds(n: int) -> dt.timedelta:
    return dt.timedelta(seconds=n)


def on(version: str, name: str, **more: object) -> TenantView:
    """A tenant deployed at `version`, healthy by a heartbeat from before the rollout."""
    fields: dict[str, object] = {
        "running": version,
        "release_status": "deployed",
        "healthy": True,
        "last_heartbeat": T0 - seconds(30),
    }
    return TenantView(name=name, **(fields | more))  # type: ignore[arg-type]


def fleet(*tenants: TenantView, **more: object) -> Fleet:
    fields: dict[str, object] = {
        "settings": SETTINGS,
        "target": NEW,
        "state": None,
        "tenants": tenants,
        "now": T0,
    }
    return Fleet(**(fields | more))  # type: ignore[arg-type]


def upgraded(tenant: TenantView, moved_at: dt.datetime, **more: object) -> TenantView:
    """`tenant` moved to NEW at `moved_at`, deployed, and healthy by a heartbeat since."""
    fields: dict[str, object] = {
        "running": NEW,
        "release_status": "deployed",
        "moved_to": NEW,
        "moved_at": moved_at,
        "healthy": True,
        "last_heartbeat": moved_at + seconds(20),
    }
    return replace(tenant, **(fields | more))  # type: ignore[arg-type]


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}/t{i:02d}" for i in range(count)]


# ------------------------------------------------------------- the spec


def test_a_plan_without_rollout_settings_gets_the_defaults_and_no_floats() -> None:
    spec = PlanSpec.model_validate(
        {"displayName": "Pro", "price": {"amount": 1, "currency": "USD"}}
    )
    assert spec.to_wire()["rollout"] == {
        "canary": 1,
        "batchSize": 10,
        "pauseSeconds": 120,
        "gateTimeoutSeconds": 600,
        "requireHeartbeat": True,
    }
    with pytest.raises(ValidationError, match="batchSize"):
        PlanRollout.model_validate({"batchSize": 0})
    with pytest.raises(ValidationError, match="pauseSeconds"):
        PlanRollout.model_validate({"pauseSeconds": 1.5})


# ------------------------------------------------------------- canary wave


def test_the_canary_wave_is_the_labelled_tenants() -> None:
    canary = {CANARY_LABEL: "true"}
    tenants = [
        on(OLD, "a/one"),
        on(OLD, "b/two", labels=canary),
        on(OLD, "c/three", labels={CANARY_LABEL: "false"}),
        on(OLD, "d/four", labels=canary),
        on(OLD, "e/five", labels=canary),
    ]
    step = next_step(fleet(*tenants))
    assert step.move == ("b/two", "d/four", "e/five")  # all labelled, more than `canary`
    assert step.roll_back == ()
    assert (step.status.phase, step.status.current_wave) == (RolloutPhase.PROGRESSING, 0)
    assert (step.status.target_version, step.status.previous_version) == (NEW, OLD)
    assert (step.status.updated, step.status.pending) == (0, 2)
    assert step.status.wave == ["b/two", "d/four", "e/five"]
    assert step.events[0] == f"Started the rollout of {NEW} (last good: {OLD})."
    assert step.recheck_at == T0 + seconds(10)


def test_without_labels_the_canary_wave_is_the_first_tenants_by_name() -> None:
    tenants = [on(OLD, name) for name in ("z/last", "a/first", "m/middle", "b/second")]
    step = next_step(fleet(*tenants))
    assert step.move == ("a/first", "b/second")
    assert step.status.current_wave == 0

    no_canary = next_step(fleet(*tenants, settings=SETTINGS.model_copy(update={"canary": 0})))
    assert no_canary.move == ("a/first", "b/second", "m/middle")  # a batch of 3
    assert no_canary.status.current_wave == 1
    assert "Moved wave 1" in no_canary.events[-1]


# ------------------------------------------------------------- gates and waves


def started(tenants: list[TenantView], **more: object) -> tuple[RolloutStep, list[TenantView]]:
    """The first step, and the tenants as they are once its moves were applied."""
    step = next_step(fleet(*tenants, **more))
    moved = [replace(t, moved_to=NEW, moved_at=T0) if t.name in step.move else t for t in tenants]
    return step, moved


def test_a_wave_passes_when_deployed_and_healthy_by_a_heartbeat_after_the_move() -> None:
    first, tenants = started([on(OLD, n) for n in names("ns", 5)])
    canaries = set(first.move)

    # Deployed at the target, but the only heartbeat is from before the move.
    deployed = [replace(t, running=NEW) if t.name in canaries else t for t in tenants]
    step = next_step(fleet(*deployed, state=first.status, now=T0 + seconds(30)))
    assert step.status.phase is RolloutPhase.PROGRESSING
    assert (step.move, step.roll_back) == ((), ())
    assert "0 of 2 passed their gate, 2 waiting" in step.status.message

    healthy = [upgraded(t, T0) if t.name in canaries else t for t in tenants]
    step = next_step(fleet(*healthy, state=first.status, now=T0 + seconds(40)))
    assert step.status.phase is RolloutPhase.WAITING
    assert step.status.wave_passed_at == T0 + seconds(40)
    assert step.recheck_at == T0 + seconds(100)  # the pause of 60 s
    assert (step.status.updated, step.status.pending) == (2, 3)
    assert step.events == ("The canary wave passed its gate.",)
    assert step.move == ()

    # During the pause nobody moves; once it is over, the next batch does.
    still = next_step(fleet(*healthy, state=step.status, now=T0 + seconds(99)))
    assert (still.status.phase, still.move, still.events) == (RolloutPhase.WAITING, (), ())
    batch = next_step(fleet(*healthy, state=still.status, now=T0 + seconds(100)))
    assert batch.move == ("ns/t02", "ns/t03", "ns/t04")
    assert (batch.status.phase, batch.status.current_wave) == (RolloutPhase.PROGRESSING, 1)
    assert batch.status.wave_started_at == T0 + seconds(100)


def test_unhealthy_in_the_pause_fails_the_rollout_but_not_once_it_completed() -> None:
    first, tenants = started([on(OLD, n) for n in names("ns", 3)])
    tenants = [upgraded(t, T0) if t.name in first.move else t for t in tenants]
    waiting = next_step(fleet(*tenants, state=first.status, now=T0 + seconds(30)))
    assert waiting.status.phase is RolloutPhase.WAITING
    sick = [replace(t, healthy=False) if t.name == "ns/t01" else t for t in tenants]
    failed = next_step(fleet(*sick, state=waiting.status, now=T0 + seconds(60)))
    assert (failed.status.phase, failed.roll_back) == (RolloutPhase.FAILED, ("ns/t01",))

    everyone = [upgraded(t, T0) for t in tenants]
    complete = RolloutStatus(target_version=NEW, previous_version=OLD, phase=RolloutPhase.COMPLETE,
                             started_at=T0, current_wave=1, wave=["ns/t02"],
                             wave_passed_at=T0)  # fmt: skip
    sick = [replace(t, healthy=False) for t in everyone]
    later = next_step(fleet(*sick, state=complete, now=T0 + seconds(3600)))
    assert (later.status.phase, later.move, later.roll_back) == (RolloutPhase.COMPLETE, (), ())


def test_a_move_not_applied_yet_is_asked_for_again() -> None:
    first = next_step(fleet(*[on(OLD, n) for n in names("ns", 4)]))
    again = next_step(fleet(*[on(OLD, n) for n in names("ns", 4)], state=first.status,
                            now=T0 + seconds(10)))  # fmt: skip
    assert again.move == first.move
    assert again.status.phase is RolloutPhase.PROGRESSING
    assert again.events == ()


@pytest.mark.parametrize(
    ("broken", "after", "says"),
    [
        (
            {"healthy": False},
            20,
            "its instance was not healthy after the move (InstanceHealthy=False)",
        ),
        ({"release_status": "failed", "last_heartbeat": T0 - seconds(30)}, 20, "release failed"),
        ({"last_heartbeat": T0 - seconds(30)}, 300, "no healthy heartbeat within 300 s"),
        (
            {"running": OLD, "last_heartbeat": T0 + seconds(20)},
            300,
            f"its release was not deployed at {NEW} within 300 s",
        ),
    ],
    ids=["unhealthy heartbeat", "failed release", "no heartbeat", "never deployed"],
)
def test_a_tenant_failing_its_gate_fails_the_rollout_and_only_it_is_rolled_back(
    broken: dict[str, object], after: int, says: str
) -> None:
    first, tenants = started([on(OLD, n) for n in names("ns", 5)])
    bad, good = first.move
    tenants = [
        upgraded(t, T0, **broken) if t.name == bad else upgraded(t, T0) if t.name == good else t
        for t in tenants
    ]
    if after > 20:  # the timeout: not failed a second before it
        early = next_step(fleet(*tenants, state=first.status, now=T0 + seconds(after - 1)))
        assert early.status.phase is RolloutPhase.PROGRESSING
        assert early.recheck_at == T0 + seconds(after)  # the gate's deadline

    step = next_step(fleet(*tenants, state=first.status, now=T0 + seconds(after)))
    assert step.status.phase is RolloutPhase.FAILED
    assert (step.move, step.roll_back) == ((), (bad,))
    assert step.status.failed_tenants == [bad]
    assert (step.status.updated, step.status.failed, step.status.pending) == (1, 1, 3)
    assert says in step.status.message
    assert f"rolled back to {OLD}; the rest of the wave stays on {NEW}" in step.status.message
    assert step.events[-1].startswith(f"Failed the rollout of {NEW}: {bad}: ")
    assert step.recheck_at is None


def test_a_failed_rollout_moves_nobody_and_asks_again_only_for_rollbacks_not_applied() -> None:
    first, tenants = started([on(OLD, n) for n in names("ns", 5)])
    bad = first.move[0]
    tenants = [upgraded(t, T0, healthy=False) if t.name == bad else t for t in tenants]
    failed = next_step(fleet(*tenants, state=first.status, now=T0 + seconds(30)))
    assert failed.roll_back == (bad,)

    later = next_step(fleet(*tenants, state=failed.status, now=T0 + seconds(3600)))
    assert (later.status.phase, later.move, later.roll_back) == (RolloutPhase.FAILED, (), (bad,))
    back = [replace(t, moved_to=OLD, running=OLD) if t.name == bad else t for t in tenants]
    done = next_step(fleet(*back, state=later.status, now=T0 + seconds(3700)))
    assert (done.status.phase, done.move, done.roll_back) == (RolloutPhase.FAILED, (), ())
    assert done.events == ()


# ------------------------------------------------------------- pins, pause, the end


def test_pinned_tenants_are_never_moved_rolled_back_or_counted() -> None:
    tenants = [
        on(OLD, "a/pinned", pinned=True),
        on(OLD, "b/free"),
        on(NEW, "c/pinned", pinned=True),
    ]
    step = next_step(fleet(*tenants, settings=SETTINGS.model_copy(update={"batch_size": 10})))
    assert step.move == ("b/free",)
    assert (step.status.updated, step.status.pending) == (0, 0)
    assert "2 pinned left alone" in step.status.message

    done = next_step(
        fleet(
            tenants[0], upgraded(tenants[1], T0), tenants[2], state=step.status,
            now=T0 + seconds(30),
        )
    )  # fmt: skip
    assert done.status.phase is RolloutPhase.COMPLETE
    assert (done.status.updated, done.status.pending, done.move) == (1, 0, ())


def test_a_paused_rollout_moves_nobody_and_resumes_where_it_stood() -> None:
    tenants = [on(OLD, n) for n in names("ns", 4)]
    paused = next_step(fleet(*tenants, paused=True))
    assert (paused.move, paused.roll_back, paused.recheck_at) == ((), (), None)
    assert paused.status.phase is RolloutPhase.PAUSED
    assert paused.status.current_wave is None
    assert "Paused by annotation tenantry.io/rollout-paused" in paused.status.message
    assert paused.events[-1] == f"Paused the rollout of {NEW}."

    still = next_step(fleet(*tenants, paused=True, state=paused.status, now=T0 + seconds(600)))
    assert (still.move, still.events) == ((), ())

    resumed = next_step(fleet(*tenants, state=still.status, now=T0 + seconds(700)))
    assert resumed.move == ("ns/t00", "ns/t01")
    assert resumed.status.phase is RolloutPhase.PROGRESSING
    assert resumed.events[0] == f"Resumed the rollout of {NEW}."


def test_a_rollout_completes_when_every_unpinned_tenant_runs_the_target() -> None:
    first, tenants = started([on(OLD, n) for n in names("ns", 2)])
    assert first.move == ("ns/t00", "ns/t01")  # the whole fleet is the canary wave
    step = next_step(fleet(*[upgraded(t, T0) for t in tenants], state=first.status,
                           now=T0 + seconds(30)))  # fmt: skip
    assert step.status.phase is RolloutPhase.COMPLETE
    assert (step.status.updated, step.status.pending, step.status.failed) == (2, 0, 0)
    assert step.events == ("The canary wave passed its gate.", f"Completed the rollout of {NEW}.")
    assert step.recheck_at is None

    quiet = next_step(fleet(*[upgraded(t, T0) for t in tenants], state=step.status,
                            now=T0 + seconds(90)))  # fmt: skip
    assert (quiet.status.phase, quiet.move, quiet.events) == (RolloutPhase.COMPLETE, (), ())


def test_a_plan_already_on_its_version_has_nothing_to_roll_out() -> None:
    step = next_step(fleet(on(NEW, "a/one"), on(NEW, "b/two")))
    assert step.status.phase is RolloutPhase.COMPLETE
    assert step.events == (), "nothing was rolled out: nothing to tell"


def test_a_new_target_mid_rollout_starts_again_from_the_fleet_as_it_is() -> None:
    first, tenants = started([on(OLD, n) for n in names("ns", 6)])
    tenants = [upgraded(t, T0) if t.name in first.move else t for t in tenants]
    waiting = next_step(fleet(*tenants, state=first.status, now=T0 + seconds(30)))
    assert waiting.status.phase is RolloutPhase.WAITING

    step = next_step(fleet(*tenants, target=NEWER, state=waiting.status, now=T0 + seconds(40)))
    assert step.status.target_version == NEWER
    # NEW never completed: OLD stays the version failures go back to.
    assert step.status.previous_version == OLD
    assert step.status.started_at == T0 + seconds(40)
    assert step.status.current_wave == 0
    assert step.move == ("ns/t00", "ns/t01")  # the canaries again, now on NEW
    assert (step.status.updated, step.status.pending) == (0, 4)

    # After a completed rollout, its target is the last good version.
    complete = RolloutStatus(target_version=NEW, previous_version=OLD,
                             phase=RolloutPhase.COMPLETE, started_at=T0)  # fmt: skip
    after = next_step(fleet(*tenants, target=NEWER, state=complete, now=T0 + seconds(50)))
    assert after.status.previous_version == NEW


# ------------------------------------------------------------- end to end


@dataclass
class SimulatedTenant:
    view: TenantView
    breaks_on: str | None = None  # a version whose instance reports itself unhealthy


class SimulatedFleet:
    """The operator and the instances, reduced to what the planner sees: a move is applied
    at once, its release is deployed on the next tick and the instance heartbeats then."""

    def __init__(self, count: int, version: str) -> None:
        self.tenants = {name: SimulatedTenant(on(version, name)) for name in names("tenant", count)}
        self.assigned: dict[str, str] = dict.fromkeys(self.tenants, version)

    def views(self) -> list[TenantView]:
        return [t.view for t in self.tenants.values()]

    def apply(self, step: RolloutStep, now: dt.datetime) -> None:
        moves = [(n, step.status.target_version) for n in step.move]
        backs = [(n, step.status.previous_version) for n in step.roll_back]
        for name, version in [*moves, *backs]:
            assert version is not None
            t = self.tenants[name]
            t.view = replace(t.view, moved_to=version, moved_at=now)
            self.assigned[name] = version

    def tick(self, now: dt.datetime) -> None:
        for name, t in self.tenants.items():
            version = self.assigned[name]
            healthy = version != t.breaks_on
            t.view = replace(t.view, running=version, release_status="deployed",
                             healthy=healthy, last_heartbeat=now)  # fmt: skip


def test_thirty_tenants_in_waves_with_one_failing_its_gate() -> None:
    world = SimulatedFleet(30, OLD)
    settings = PlanRollout(canary=2, batch_size=5, pause_seconds=60, gate_timeout_seconds=300)
    world.tenants["tenant/t13"].breaks_on = NEW
    state, now, moved, log = None, T0, [], []
    for _ in range(200):
        step = next_step(Fleet(settings, NEW, state, world.views(), now))
        world.apply(step, now)
        state = step.status
        moved.append(step.move)
        log += step.events
        if state.phase in (RolloutPhase.FAILED, RolloutPhase.COMPLETE):
            break
        now += dt.timedelta(seconds=15)
        world.tick(now)

    assert state.phase is RolloutPhase.FAILED
    waves = [m for m in moved if m]
    assert [len(w) for w in waves] == [2, 5, 5, 5]  # canaries, then t02-t06, t07-t11, t12-t16
    assert waves[0] == ("tenant/t00", "tenant/t01")
    assert waves[3] == tuple(f"tenant/t{i}" for i in range(12, 17))
    assert state.current_wave == 3
    assert state.failed_tenants == ["tenant/t13"]
    # The failed tenant is back on the last good version, the rest of its wave stays.
    world.tick(now + dt.timedelta(seconds=15))
    running = {name: t.view.running for name, t in world.tenants.items()}
    assert running["tenant/t13"] == OLD
    assert {running[f"tenant/t{i}"] for i in (12, 14, 15, 16)} == {NEW}
    assert [n for n, v in running.items() if v == NEW] == [
        f"tenant/t{i:02d}" for i in range(17) if i != 13
    ]
    assert {running[f"tenant/t{i}"] for i in range(17, 30)} == {OLD}
    assert (state.updated, state.failed, state.pending) == (16, 1, 13)
    assert log[0] == f"Started the rollout of {NEW} (last good: {OLD})."
    assert log[-1].startswith(
        f"Failed the rollout of {NEW}: tenant/t13: its instance was not healthy"
    )

    # Nothing moves again until the Plan names another version; then everyone gets there.
    for _ in range(3):
        now += dt.timedelta(seconds=600)
        step = next_step(Fleet(settings, NEW, state, world.views(), now))
        assert (step.move, step.roll_back) == ((), ())
    world.tenants["tenant/t13"].breaks_on = None
    for _ in range(200):
        step = next_step(Fleet(settings, NEWER, state, world.views(), now))
        world.apply(step, now)
        state = step.status
        if state.phase is RolloutPhase.COMPLETE:
            break
        now += dt.timedelta(seconds=15)
        world.tick(now)
    assert state.phase is RolloutPhase.COMPLETE
    assert (state.updated, state.failed, state.pending) == (30, 0, 0)
    assert state.previous_version == OLD
    assert {t.view.running for t in world.tenants.values()} == {NEWER}


# ------------------------------------------------ what a Tenant runs, and when it moves


def test_without_require_heartbeat_a_deployed_release_passes_the_gate() -> None:
    quiet = PlanRollout(canary=1, batch_size=1, pause_seconds=0, gate_timeout_seconds=60,
                        require_heartbeat=False)  # fmt: skip
    tenants = [on(OLD, n, last_heartbeat=None, healthy=None) for n in names("c", 2)]
    first = next_step(fleet(*tenants, settings=quiet))
    assert first.move == ("c/t00",)
    moved = replace(tenants[0], running=NEW, moved_to=NEW, moved_at=T0)
    second = next_step(fleet(moved, tenants[1], settings=quiet, state=first.status,
                             now=T0 + seconds(5)))  # fmt: skip
    assert second.move == ("c/t01",), "no heartbeat was needed to pass the canary's gate"


def test_tenants_with_no_release_yet_are_not_moved_and_a_new_plan_is_complete_at_once() -> None:
    fresh = [TenantView(name=n) for n in names("d", 3)]
    step = next_step(fleet(*fresh))
    assert (step.move, step.status.phase, step.status.pending) == ((), RolloutPhase.COMPLETE, 0)
    assert step.events == ()
    # Mid-rollout, one arriving on the old version is moved by a later wave.
    mixed = [on(OLD, "d/t00"), TenantView(name="d/t01")]
    assert next_step(fleet(*mixed)).move == ("d/t00",)


def test_the_assignment_annotation_round_trips_and_garbage_reads_as_none() -> None:
    written = Assignment("pro", NEW, T0)
    assert Assignment.from_annotation(written.to_annotation()) == written
    for garbage in (
        None,
        "",
        "{",
        '{"plan": "pro"}',
        "[]",
        '{"plan": 1, "version": 2, "movedAt": 3}',
    ):
        assert Assignment.from_annotation(garbage) is None


@pytest.mark.parametrize(
    ("state", "pinned", "assignment", "running", "expected"),
    [
        # A pin wins over everything.
        (None, "0.9.0", Assignment("pro", NEW, T0), OLD, "0.9.0"),
        # What this Plan's rollout assigned; another Plan's assignment is nothing.
        (None, None, Assignment("pro", NEWER, T0), OLD, NEWER),
        (None, None, Assignment("basic", NEWER, T0), OLD, OLD),
        # Only a rollout moves a Tenant: it keeps what it runs.
        (None, None, None, OLD, OLD),
        # New to the Plan: its target when no rollout is under way...
        (None, None, None, None, NEW),
        ("complete", None, None, None, NEW),
        # ...and the last good version while one is, or after one failed.
        ("progressing", None, None, None, OLD),
        ("failed", None, None, None, OLD),
    ],
)
def test_the_version_a_tenant_runs(
    state: str | None, pinned: str | None, assignment: Assignment | None, running: str | None,
    expected: str,
) -> None:  # fmt: skip
    phases = {"complete": RolloutPhase.COMPLETE, "progressing": RolloutPhase.PROGRESSING,
              "failed": RolloutPhase.FAILED}  # fmt: skip
    status = (
        None
        if state is None
        else RolloutStatus(
            target_version=NEW, previous_version=OLD, phase=phases[state], started_at=T0
        )
    )
    assert version_to_run(plan="pro", target=NEW, state=status, pinned=pinned,
                          assignment=assignment, running=running) == expected  # fmt: skip
