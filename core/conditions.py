"""Conditions after the Kubernetes API conventions, computed without I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from tenantry.core.resources import Condition, ConditionStatus


def condition(
    type_: str, ok: bool | None, reason: str, message: str = ""
) -> tuple[str, ConditionStatus, str, str]:
    status = {
        True: ConditionStatus.TRUE,
        False: ConditionStatus.FALSE,
        None: ConditionStatus.UNKNOWN,
    }
    return (type_, status[ok], reason, message)


def merge_conditions(
    previous: Sequence[Condition],
    observed: Iterable[tuple[str, ConditionStatus, str, str]],
    generation: int | None,
    now: dt.datetime,
) -> list[Condition]:
    """The new condition list; `lastTransitionTime` moves only when a status flips.

    Conditions not observed this time keep their previous value, so a partial
    reconcile never erases what an earlier one learned.
    """
    by_type = {c.type: c for c in previous}
    for type_, status, reason, message in observed:
        before = by_type.get(type_)
        changed = before is None or before.status != status
        by_type[type_] = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
            last_transition_time=now if changed or before is None else before.last_transition_time,
        )
    return list(by_type.values())


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    return any(c.type == type_ and c.status == ConditionStatus.TRUE for c in conditions)
