"""Conditions after the Kubernetes API conventions, computed without I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tenantry.core.resources import Condition, ConditionStatus

READY = "Ready"
"""The condition every kind reports: whether the object does what its spec asks."""


@dataclass(frozen=True)
class Observed:
    """One condition as a reconcile observed it, before it is merged into the status."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == ConditionStatus.TRUE


def condition(type_: str, ok: bool | None, reason: str, message: str = "") -> Observed:
    """`ok` True, False or None (unknown)."""
    status = {
        True: ConditionStatus.TRUE,
        False: ConditionStatus.FALSE,
        None: ConditionStatus.UNKNOWN,
    }
    return Observed(type_, status[ok], reason, message)


def merge_conditions(
    previous: Sequence[Condition],
    observed: Iterable[Observed],
    generation: int | None,
    now: dt.datetime,
) -> list[Condition]:
    """The new condition list; `lastTransitionTime` moves only when a status flips.

    Conditions not observed this time keep their previous value, so a partial
    reconcile never erases what an earlier one learned.
    """
    by_type = {c.type: c for c in previous}
    for seen in observed:
        before = by_type.get(seen.type)
        changed = before is None or before.status != seen.status
        by_type[seen.type] = Condition(
            type=seen.type,
            status=seen.status,
            reason=seen.reason,
            message=seen.message,
            observed_generation=generation,
            last_transition_time=now if changed or before is None else before.last_transition_time,
        )
    return list(by_type.values())


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE
