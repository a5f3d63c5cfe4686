"""The Argo CD health check in manifests/argocd/: health.lua, run with a real Lua
interpreter against sample objects of every kind, asserting the status and message Argo CD
would show; and argocd-cm.yaml, which must carry exactly that script under each kind's key."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
import yaml
from argocd_lua import REPO, SCRIPT, SNIPPET, health, scripts
from support import Kube

from tenantry.core.resources import KINDS


def sample(kind: str) -> dict[str, Any]:
    """The sample of `kind` in manifests/samples, at generation 2."""
    for path in sorted((REPO / "manifests/samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                obj = copy.deepcopy(doc)
                obj["metadata"]["generation"] = 2
                return obj  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} in manifests/samples")


def ready(
    status: str, reason: str, message: str = "", generation: int = 2, **more: Any
) -> dict[str, Any]:
    """A status as the operator writes it, with its Ready condition."""
    condition = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2031-03-10T12:00:00+00:00",
    }
    return {"conditions": [condition], "observedGeneration": generation, **more}


def with_status(kind: str, status: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    obj = sample(kind)
    obj["spec"].update(spec)
    if status is not None:
        obj["status"] = status
    return obj


def test_the_snippet_ships_health_lua_under_every_kind() -> None:
    shipped = scripts()
    assert sorted(shipped) == sorted(k.kind for k in KINDS)
    source = SCRIPT.read_text()
    for kind, text in shipped.items():
        assert text == source, (
            f"{SNIPPET.name} under {kind} is not {SCRIPT.name}: copy the file under every "
            "key (indented by four spaces)"
        )


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_no_status_yet_is_progressing(kind: str) -> None:
    assert health(kind, with_status(kind, None)) == (
        "Progressing",
        "Waiting for the operator to report.",
    )


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_ready_true_is_healthy_and_false_degraded(kind: str) -> None:
    assert health(kind, with_status(kind, ready("True", "Valid", "All good."))) == (
        "Healthy",
        "Valid: All good.",
    )
    broken = ready("False", "InvalidSpec", "spec.price.amount: must be at least 0")
    assert health(kind, with_status(kind, broken)) == (
        "Degraded",
        "InvalidSpec: spec.price.amount: must be at least 0",
    )
    unknown = ready("Unknown", "StripePending", "Its prices are not in Stripe yet.")
    assert health(kind, with_status(kind, unknown)) == (
        "Progressing",
        "StripePending: Its prices are not in Stripe yet.",
    )


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_a_status_of_an_older_generation_is_progressing(kind: str) -> None:
    waiting = ("Progressing", "Waiting for the operator to reconcile generation 2.")
    stale = ready("True", "Valid", generation=1)
    assert health(kind, with_status(kind, stale)) == waiting
    # The status was written for this generation, but Ready was not observed by it.
    behind = {**ready("True", "Valid", generation=1), "observedGeneration": 2}
    assert health(kind, with_status(kind, behind)) == waiting
    # Conditions of other types do not count as Ready.
    others = ready("True", "Synced")
    others["conditions"][0]["type"] = "StripeSynced"
    assert health(kind, with_status(kind, others)) == (
        "Progressing",
        "Waiting for the operator to report.",
    )


def test_a_suspended_tenant_is_suspended() -> None:
    suspended = ready("True", "Suspended", "Instance is suspended.")
    assert health("Tenant", with_status("Tenant", suspended, suspended=True)) == (
        "Suspended",
        "Suspended: Instance is suspended.",
    )
    provisioned = ready("True", "Provisioned", "Instance is provisioned.")
    assert health("Tenant", with_status("Tenant", provisioned)) == (
        "Healthy",
        "Provisioned: Instance is provisioned.",
    )
    failed = ready("False", "ReleaseFailed", "helm: timed out", namespace="tenant-acme")
    assert health("Tenant", with_status("Tenant", failed, suspended=True))[0] == "Degraded"


# A case only one kind's own rules suspend: that kind, the status, the spec fields set,
# and the health every other kind shows for it (what its Ready condition says).
OWN_RULES = [
    ("Tenant", ready("True", "Valid", "Fine."), {"paused": True}, "Healthy"),
    ("Tenant", ready("True", "Suspended", "Resting."), {}, "Healthy"),
    ("Subscription", ready("True", "Unpaid", "Not paid.", state="unpaid"), {}, "Healthy"),
    ("ApiKey", ready("False", "Revoked", "Gone."), {"revoked": True}, "Degraded"),
]


@pytest.mark.parametrize(
    ("kind", "owner", "status", "spec", "expected"),
    [
        (k.kind, owner, status, spec, expected)
        for owner, status, spec, expected in OWN_RULES
        for k in KINDS
        if k.kind != owner
    ],
)
def test_one_kinds_rules_leave_the_other_kinds_alone(
    kind: str, owner: str, status: dict[str, Any], spec: dict[str, Any], expected: str
) -> None:
    """The one script serves every kind: what suspends a Tenant, a Subscription or an
    ApiKey does not suspend the others."""
    assert health(kind, with_status(kind, copy.deepcopy(status), **spec))[0] == expected


def test_a_paused_tenant_is_suspended_whatever_its_status() -> None:
    stale = ready("False", "ReleaseFailed", generation=1)
    assert health("Tenant", with_status("Tenant", stale, paused=True)) == (
        "Suspended",
        "Paused (spec.paused): the operator leaves it as it is.",
    )


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("trialing", "Trialing", "Healthy"),
        ("active", "Active", "Healthy"),
        ("past_due", "PastDue", "Healthy"),
        ("unpaid", "Unpaid", "Suspended"),
        ("canceled", "Canceled", "Suspended"),
    ],
)
def test_a_subscription_is_suspended_when_its_instance_is(
    state: str, reason: str, expected: str
) -> None:
    status = ready("True", reason, f"About {state}.", state=state)
    assert health("Subscription", with_status("Subscription", status)) == (
        expected,
        f"{reason}: About {state}.",
    )


def test_a_subscription_whose_tenant_is_missing_is_degraded() -> None:
    message = "Tenant acme does not exist in namespace customers: apply it."
    status = ready("False", "TenantNotFound", message, state="active")
    assert health("Subscription", with_status("Subscription", status)) == (
        "Degraded",
        f"TenantNotFound: {message}",
    )


def test_a_key_revoked_by_its_spec_is_suspended_and_one_revoked_otherwise_degraded() -> None:
    revoked = ready("False", "Revoked", "Key tnt_ab12... is revoked.")
    assert health("ApiKey", with_status("ApiKey", revoked, revoked=True)) == (
        "Suspended",
        "Revoked: Key tnt_ab12... is revoked.",
    )
    # Revoked elsewhere (the API, an annotation) while the spec still wants it working.
    assert health("ApiKey", with_status("ApiKey", revoked))[0] == "Degraded"
    expired = ready("False", "Expired", "Key tnt_ab12... expired.")
    assert health("ApiKey", with_status("ApiKey", expired, revoked=True))[0] == "Degraded"


def test_an_exhausted_coupon_is_degraded() -> None:
    exhausted = ready("False", "Exhausted", "Redeemed 100 of 100 times.")
    assert health("Coupon", with_status("Coupon", exhausted)) == (
        "Degraded",
        "Exhausted: Redeemed 100 of 100 times.",
    )


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Progressing", "Progressing"),
        ("Waiting", "Progressing"),
        ("Paused", "Suspended"),
        ("Failed", "Degraded"),
        ("Complete", "Healthy"),
    ],
)
def test_a_plans_rollout_shows_in_its_health(phase: str, expected: str) -> None:
    message = "Wave 1: 3 of 10 passed their gate, 7 waiting; 4 updated, 90 pending."
    rollout = {"targetVersion": "1.5.0", "phase": phase, "message": message,
               "startedAt": "2031-03-10T12:00:00+00:00"}  # fmt: skip
    status = ready("True", "Valid", "Subscriptions may name it.", rollout=rollout)
    shown = health("Plan", with_status("Plan", status))
    assert shown[0] == expected
    if phase != "Complete":
        assert shown[1] == f"Rollout {phase}: {message}"
    # An invalid Plan is Degraded whatever its rollout says.
    invalid = ready("False", "InvalidSpec", "price.amount: negative.", rollout=rollout)
    assert health("Plan", with_status("Plan", invalid))[0] == "Degraded"


def test_messages_pass_through_unchanged() -> None:
    message = 'Stripe said "No such price": price_ü\\1'
    status = ready("False", "StripeRefused", message)
    assert health("Plan", with_status("Plan", status)) == ("Degraded", f"StripeRefused: {message}")


@pytest.mark.cluster
def test_the_snippet_merges_into_an_existing_argocd_cm(kube: Kube) -> None:
    """The README's install command, against a real API server: Argo CD's own keys stay."""
    namespace = f"argocd-{uuid.uuid4().hex[:6]}"  # never a real Argo CD's
    kube.kubectl("create", "namespace", namespace)
    try:
        kube.kubectl(
            "create", "configmap", "argocd-cm", "-n", namespace,
            "--from-literal=url=https://cd.example",
        )  # fmt: skip
        kube.kubectl(
            "-n", namespace, "patch", "configmap", "argocd-cm", "--type", "merge",
            "--patch-file", str(SNIPPET),
        )  # fmt: skip
        merged = kube.get("configmap", "argocd-cm", namespace)
        assert merged is not None
        assert merged["data"]["url"] == "https://cd.example"
        shipped = scripts()
        assert {
            kind: merged["data"].get(f"resource.customizations.health.tenantry.io_{kind}")
            for kind in shipped
        } == shipped
    finally:
        kube.delete("namespace", namespace)
