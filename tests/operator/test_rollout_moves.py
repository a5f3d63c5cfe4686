"""The rollout loop's memory of its own moves: kept until the index shows them."""

from __future__ import annotations

import datetime as dt

from tenantry.core.rollout import Assignment
from tenantry.operator.rollout import unseen_moves

PLAN = "pro"
MOVED_AT = dt.datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)


def entry(name: str, assignment: Assignment | None) -> dict[str, str | None]:
    return {"name": name, "assignment": assignment.to_annotation() if assignment else None}


def test_a_move_is_kept_until_the_index_shows_it_then_forgotten() -> None:
    written = Assignment(PLAN, "1.1.0", MOVED_AT)
    applied = {"customers/acme": written}

    not_yet = [entry("customers/acme", Assignment(PLAN, "1.0.0", MOVED_AT - dt.timedelta(hours=1)))]
    assert unseen_moves(PLAN, not_yet, applied) == applied

    # The annotation keeps whole seconds: the index's copy of the move is still the move.
    shown = [entry("customers/acme", written)]
    assert unseen_moves(PLAN, shown, applied) == {}


def test_moves_of_tenants_gone_from_the_plan_are_forgotten() -> None:
    applied = {
        "customers/acme": Assignment(PLAN, "1.1.0", MOVED_AT),
        "customers/globex": Assignment(PLAN, "1.1.0", MOVED_AT),
    }
    # acme was deleted; globex's annotation is still another Plan's.
    entries = [entry("customers/globex", Assignment("basic", "2.0.0", MOVED_AT))]
    assert unseen_moves(PLAN, entries, applied) == {"customers/globex": applied["customers/globex"]}
