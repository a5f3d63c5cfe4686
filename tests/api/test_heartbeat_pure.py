"""What a heartbeat makes of a Tenant's status, without a cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tenantry.api.instances.repository import HeartbeatRow
from tenantry.api.instances.service import observed_now, status_patch, summary

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
OPERATOR_READY = {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "x"}


def row(health: str = "healthy", version: str = "1.0.0") -> HeartbeatRow:
    return HeartbeatRow("uid", "ns", "acme", version, health, None, {}, NOW)


def patch_for(status: dict[str, Any], last: HeartbeatRow, later: float = 0) -> Any:
    """The patch at `later` seconds after the heartbeat, with a timeout of 180 s."""
    now = NOW + dt.timedelta(seconds=later)
    return status_patch(status, summary(last), observed_now(last, now, 180), 3, now)


def test_a_first_heartbeat_adds_its_condition_beside_the_operators() -> None:
    patch, conditional = patch_for({"conditions": [OPERATOR_READY]}, row())
    assert conditional
    assert patch["conditions"][0] == OPERATOR_READY  # kept as it was, untouched
    ours = patch["conditions"][1]
    assert (ours["type"], ours["status"], ours["reason"]) == (
        "InstanceHealthy", "True", "HeartbeatHealthy",
    )  # fmt: skip
    assert patch["instance"]["version"] == "1.0.0"


def test_nothing_to_write_when_the_status_says_it_already() -> None:
    last = row()
    patch, _ = patch_for({"conditions": [OPERATOR_READY]}, last)
    assert (
        patch_for({"conditions": patch["conditions"], "instance": patch["instance"]}, last) is None
    )


def test_silence_and_reports_turn_it_false_and_keep_the_transition_time() -> None:
    healthy, _ = patch_for({}, row())
    since = "2026-11-01T00:00:00Z"
    written = {"conditions": [{**healthy["conditions"][0], "lastTransitionTime": since}],
               "instance": healthy["instance"]}  # fmt: skip
    silent, conditional = patch_for(written, row(), later=181)
    assert conditional
    (missing,) = silent["conditions"]
    assert (missing["status"], missing["reason"]) == ("False", "HeartbeatMissing")
    assert "instance" not in silent  # the last heartbeat is the same one
    degraded, _ = patch_for(written, row("degraded"))
    assert degraded["conditions"][0]["reason"] == "InstanceDegraded"
    # A new version, still healthy: the message moves, the transition time does not.
    newer, _ = patch_for(written, row(version="1.1.0"))
    assert newer["conditions"][0]["lastTransitionTime"] == since
    assert missing["lastTransitionTime"] != since
    assert "1.1.0" in newer["conditions"][0]["message"]
