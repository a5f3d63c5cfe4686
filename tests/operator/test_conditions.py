"""Conditions keep their transition time until their status flips."""

from __future__ import annotations

import datetime as dt

from tenantry.core.conditions import condition, is_true, merge_conditions
from tenantry.core.resources import ConditionStatus

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_transition_time_moves_only_on_a_status_change() -> None:
    first = merge_conditions([], [condition("Ready", False, "PlanNotFound", "no plan")], 1, T0)
    assert first[0].last_transition_time == T0
    same = merge_conditions(first, [condition("Ready", False, "PlanNotFound", "still")], 2, T1)
    assert same[0].last_transition_time == T0
    assert same[0].message == "still"
    assert same[0].observed_generation == 2
    flipped = merge_conditions(same, [condition("Ready", True, "Provisioned")], 2, T1)
    assert flipped[0].status == ConditionStatus.TRUE
    assert flipped[0].last_transition_time == T1
    assert is_true(flipped, "Ready")


def test_unobserved_conditions_are_kept() -> None:
    before = merge_conditions(
        [], [condition("NamespaceReady", True, "Created"), condition("Ready", True, "Ok")], 1, T0
    )
    after = merge_conditions(before, [condition("Ready", False, "PlanNotFound")], 2, T1)
    assert {c.type: c.status for c in after} == {
        "NamespaceReady": ConditionStatus.TRUE,
        "Ready": ConditionStatus.FALSE,
    }
