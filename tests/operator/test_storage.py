"""kopf's state on our objects: the annotations that ask for a pass count as changes."""

from __future__ import annotations

from typing import Any

import kopf
from kopf._cogs.structs.diffs import diff

from tenantry.operator.storage import DiffBase, Progress

PREFIX = "tenantry.io"


def essence(annotations: dict[str, str]) -> Any:
    """The state kopf compares, built and cleared as kopf does before diffing."""
    body = kopf.Body(
        {
            "apiVersion": "tenantry.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {
                "name": "acme",
                "annotations": {"tenantry.io/kopf-managed": "yes", **annotations},
            },
            "spec": {"displayName": "Acme"},
            "status": {"plan": "pro"},
        }
    )
    built = DiffBase(prefix=PREFIX, key="last-handled-configuration").build(body=body)
    return Progress(prefix=PREFIX).clear(essence=built)


def test_a_nudge_a_rollout_move_and_a_revocation_are_changes_kopfs_own_marks_are_not() -> None:
    before = essence({})
    for key in ("tenantry.io/reconcile-cause", "tenantry.io/rollout",
                "tenantry.io/revoke-license"):  # fmt: skip
        assert diff(before, essence({key: "x"})), f"{key} made no change kopf would see"
    # kopf's progress and any other annotation of ours stay out, as kopf means them to.
    for key in ("tenantry.io/reconcile", "tenantry.io/replicas-before-suspension"):
        assert not diff(before, essence({key: "x"})), f"{key} is no reason for a pass"
    assert not diff(before, essence({})), "the same object is no change"
