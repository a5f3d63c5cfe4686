"""Tenant provisioning against the real control plane, helm and the operator process."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from jwcrypto import jwk, jwt
from support import (
    DRIFT_INTERVAL,
    Kube,
    OperatorProcess,
    condition,
    decoded,
    dig,
    get_tenant,
    license_secret,
    plan,
    provision,
    ready_tenant,
    subscription,
    tenant,
    unique_names,
    wait_for,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def names(kube: Kube) -> dict[str, str]:
    return unique_names(kube)


def verify_with_published_keys(kube: Kube, token: str) -> dict[str, Any]:
    """Verify the license with jwcrypto (not the library that signed it) and the
    public keys taken from the operator's signing-key Secret."""
    keys = kube.get("secret", "tenantry-signing-keys", "tenantry-system")
    assert keys is not None, "the operator created no signing-key Secret"
    keyset = jwk.JWKSet()
    for entry, value in keys["data"].items():
        if entry.endswith(".pem"):
            private = jwk.JWK.from_pem(base64.b64decode(value))
            keyset.add(jwk.JWK(**private.export_public(as_dict=True)))
    verified = jwt.JWT(jwt=token, key=keyset, algs=["RS256", "EdDSA"])
    return json.loads(verified.claims)  # type: ignore[no-any-return]


def test_tenant_is_provisioned_with_a_verifiable_license_and_a_release(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    ready = provision(kube, names)

    status = ready["status"]
    assert status["namespace"] == names["target"]
    assert status["plan"] == names["plan"]
    for type_ in ("NamespaceReady", "LicenseIssued", "ReleaseDeployed", "PaymentCurrent"):
        assert condition(ready, type_)["status"] == "True", type_
    assert all(
        c["observedGeneration"] == ready["metadata"]["generation"] for c in status["conditions"]
    )
    namespace = kube.get("namespace", names["target"])
    assert namespace["metadata"]["labels"]["tenantry.io/tenant"] == names["tenant"]

    secret = license_secret(kube, names["target"])
    claims = verify_with_published_keys(kube, decoded(secret, "license.jwt"))
    assert claims["jti"] == status["license"]["id"]
    assert claims["tenant"]["name"] == names["tenant"]
    assert claims["plan"]["code"] == names["plan"]
    assert claims["limits"] == {"devices": 50, "users": -1}
    assert claims["features"] == {"ota_updates": True, "data_export": False}
    assert claims["subscription"]["status"] == "active"
    assert json.loads(decoded(secret, "jwks.json"))["keys"], "instance gets the public keys"

    [release] = kube.releases(names["target"], all_states=True)
    assert release["name"] == "instance"
    assert release["status"] == "deployed"
    assert release["revision"] == "1"
    assert status["release"]["revision"] == 1
    deployment = kube.get("deployment", "instance-customer-instance", names["target"])
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["secret"]["secretName"] == "tenantry-license"

    events = kube.kubectl(
        "get", "events", "-n", names["control"], "-o", "jsonpath={.items[*].reason}"
    ).split()
    assert "LicenseIssued" in events
    assert "ReleaseDeployed" in events


def test_changed_values_upgrade_and_unchanged_reapply_does_nothing(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    first = provision(kube, names, values={"replicaCount": 1})
    license_id = first["status"]["license"]["id"]

    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": 2}))
    # Mid-upgrade, plain `helm list` shows no release at all and `--all` shows
    # revision 2 pending-upgrade: wait for revision 2 deployed.
    wait_for(
        lambda: (
            (release := kube.release(names["target"], "instance")) is not None
            and release["status"] == "deployed"
            and release["revision"] == "2"
        ),
        "release instance revision 2 to be deployed after the values changed",
    )
    upgraded = ready_tenant(kube, names)
    wait_for(
        lambda: dig(get_tenant(kube, names), "status", "release", "revision") == 2,
        "status to report revision 2",
    )
    deployment = kube.get("deployment", "instance-customer-instance", names["target"])
    assert deployment is not None, "the upgraded release has no Deployment"
    assert deployment["spec"]["replicas"] == 2

    # Re-apply the same object and let the drift timer run a few times.
    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": 2}))
    resource_version = kube.get("secret", "tenantry-license", names["target"])["metadata"][
        "resourceVersion"
    ]
    time.sleep(3 * DRIFT_INTERVAL)  # let the drift timer run a few times
    release = kube.release(names["target"], "instance")
    assert release is not None, "the release is gone"
    assert release["revision"] == "2", release
    after = get_tenant(kube, names)
    assert after["status"]["license"]["id"] == license_id == upgraded["status"]["license"]["id"]
    secret = kube.get("secret", "tenantry-license", names["target"])
    assert secret["metadata"]["resourceVersion"] == resource_version


def test_drift_is_repaired(kube: Kube, operator: OperatorProcess, names: dict[str, str]) -> None:
    ready = provision(kube, names)
    old_license = ready["status"]["license"]["id"]

    kube.delete("secret", "tenantry-license", names["target"])
    restored = wait_for(
        lambda: license_secret(kube, names["target"]), "the license Secret to come back"
    )
    claims = verify_with_published_keys(kube, decoded(restored, "license.jwt"))
    assert claims["jti"] != old_license
    wait_for(
        lambda: dig(get_tenant(kube, names), "status", "license", "id") == claims["jti"],
        "status to name the new license",
    )

    kube.helm("uninstall", "instance", "-n", names["target"])
    # Back once helm is done with it (what plain `helm list` shows: deployed or
    # failed), not while it is pending-install; then it must be deployed.
    reinstalled = wait_for(
        lambda: (
            (release := kube.release(names["target"], "instance")) is not None
            and release["status"] in ("deployed", "failed")
            and release
        ),
        "the release to be re-installed",
    )
    assert reinstalled["status"] == "deployed"


def test_deleting_the_tenant_removes_release_and_namespace(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    provision(kube, names)

    kube.delete("tenant", names["tenant"], names["control"])
    wait_for(lambda: get_tenant(kube, names) is None, "the Tenant to be gone", timeout=60)
    assert kube.get("namespace", names["target"]) is None
    assert kube.release(names["target"], "instance") is None


def test_missing_subscription_then_missing_plan_then_recovery(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    kube.apply(tenant(names["tenant"], names["control"]))
    waiting = wait_for(lambda: condition(get_tenant(kube, names), "Ready"), "a Ready condition")
    assert waiting["status"] == "False"
    assert waiting["reason"] == "SubscriptionNotFound"
    assert f"spec.tenantRef.name: {names['tenant']}" in waiting["message"]

    kube.apply(subscription(names["tenant"], names["control"], names["tenant"], names["plan"]))
    missing_plan = wait_for(
        lambda: (
            (c := condition(get_tenant(kube, names), "Ready"))
            and c["reason"] == "PlanNotFound"
            and c
        ),
        "Ready=False with reason PlanNotFound",
    )
    assert missing_plan["status"] == "False"
    assert names["plan"] in missing_plan["message"]
    assert kube.get("namespace", names["target"]) is None, "nothing provisioned without a plan"

    kube.apply(plan(names["plan"]))
    ready_tenant(kube, names, timeout=20)


def test_invalid_spec_is_reported_without_a_crash_loop(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    kube.apply(plan(names["plan"]))
    kube.apply(subscription(names["tenant"], names["control"], names["tenant"], names["plan"]))
    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": "lots"}))
    invalid = wait_for(
        lambda: (c := condition(get_tenant(kube, names), "Ready")) and c, "a Ready condition"
    )
    assert invalid["status"] == "False"
    assert invalid["reason"] == "InvalidValues"
    assert "spec.values.replicaCount" in invalid["message"]

    kube.apply(tenant(names["tenant"], names["control"], values={"tenantry": {"suspended": 0}}))
    reserved = wait_for(
        lambda: (
            (c := condition(get_tenant(kube, names), "Ready"))
            and "spec.values.tenantry" in c["message"]
            and c
        ),
        "the reserved-value error",
    )
    assert reserved["reason"] == "InvalidSpec"
    assert operator.process is not None
    assert operator.process.poll() is None, "the operator kept running"

    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": 1}))
    ready_tenant(kube, names)


def test_api_server_rejects_what_the_schema_forbids(kube: Kube, names: dict[str, str]) -> None:
    bad = tenant(names["tenant"], names["control"], billingEmail="not-an-email")
    with pytest.raises(AssertionError, match="billingEmail"):
        kube.apply(bad)
    bad_plan = plan(names["plan"], devices=-5)
    with pytest.raises(AssertionError, match=r"limits\.devices"):
        kube.apply(bad_plan)


def test_restarted_operator_finishes_a_deletion_and_duplicates_nothing(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    ready = provision(kube, names)
    license_id = ready["status"]["license"]["id"]

    operator.stop()
    try:
        operator.start()
        resumed = ready_tenant(kube, names)
        assert resumed["status"]["license"]["id"] == license_id
        release = kube.release(names["target"], "instance")
        assert release is not None, "the release is gone"
        assert release["revision"] == "1", release

        operator.stop()
        kube.delete("tenant", names["tenant"], names["control"])
        pending = get_tenant(kube, names)
        assert pending is not None
        assert pending["metadata"].get("deletionTimestamp")
    finally:
        if operator.process is None or operator.process.poll() is not None:
            operator.start()
    wait_for(lambda: get_tenant(kube, names) is None, "the Tenant to be gone", timeout=60)
    assert kube.get("namespace", names["target"]) is None


def test_deletion_waits_for_its_namespace_with_backoff_and_never_provisions_again(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    provision(kube, names)
    target = names["target"]
    # Something else holds the namespace (a finalizer of its own): it stays Terminating.
    kube.kubectl("patch", "namespace", target, "--type=merge",
                 "-p", '{"metadata": {"finalizers": ["tests.tenantry.io/hold"]}}')  # fmt: skip
    try:
        kube.delete("tenant", names["tenant"], names["control"])
        waiting = f"Waiting for namespace {target} to be deleted"
        wait_for(
            lambda: f"{waiting}; next check in 8 s" in operator.log_text(),
            "the operator to wait longer between checks of the namespace",
            timeout=60,
        )
        # Checked at growing intervals (2, 4, 8 s...), not in a tight loop.
        assert operator.log_text().count(waiting) <= 4
        # The Tenant being deleted was not provisioned again meanwhile.
        assert kube.release(target, "instance") is None
        assert dig(kube.get("namespace", target), "status", "phase") == "Terminating"
        pending = get_tenant(kube, names)
        assert pending is not None
        assert pending["metadata"].get("deletionTimestamp")
    finally:
        kube.kubectl("patch", "namespace", target, "--type=merge",
                     "-p", '{"metadata": {"finalizers": null}}')  # fmt: skip
    wait_for(lambda: get_tenant(kube, names) is None, "the Tenant to be gone", timeout=90)
    assert kube.get("namespace", target) is None
