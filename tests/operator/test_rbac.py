"""The operator does its whole job with the permissions manifests/deploy grants it."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import (
    API,
    REPO,
    Kube,
    OperatorProcess,
    get_tenant,
    plan,
    ready_tenant,
    reason,
    service_account_kubeconfig,
    subscription,
    tenant,
    unique_names,
    wait_for,
)

pytestmark = pytest.mark.cluster


def test_operator_provisions_bills_and_deletes_under_its_own_role(
    kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    restricted = Kube(
        service_account_kubeconfig(kube, "tenantry-operator", tmp_path / "kubeconfig"),
        kube.helm_binary,
    )
    assert restricted.kubectl("auth", "can-i", "delete", "nodes", check=False).strip() == "no"

    operator.stop()
    confined = OperatorProcess(restricted, tmp_path / "operator.log", operator.env)
    try:
        confined.start()
        names = unique_names(kube)
        coupon, tax_rate = f"welcome-{names['plan']}", f"vat-{names['plan']}"
        kube.apply(
            {
                "apiVersion": API,
                "kind": "Coupon",
                "metadata": {"name": coupon},
                "spec": {"percentOff": "10", "duration": "once"},
            },
            {
                "apiVersion": API,
                "kind": "TaxRate",
                "metadata": {"name": tax_rate},
                "spec": {"displayName": "VAT", "percentage": "19", "country": "DE"},
            },
            plan(names["plan"]),
            subscription(
                names["tenant"], names["control"], names["tenant"], names["plan"],
                coupon=coupon, taxRates=[tax_rate],
            ),
            tenant(names["tenant"], names["control"]),
        )  # fmt: skip
        ready_tenant(kube, names)
        wait_for(
            lambda: reason(kube.get("subscription", names["tenant"], names["control"]),
                           "TermsApplied") == "Applied",
            "the Subscription's coupon and tax rate to be applied",
        )  # fmt: skip
        # The Subscription's finalizer ends its terms; the Tenant then loses its license.
        kube.delete("subscription", names["tenant"], names["control"])
        wait_for(
            lambda: kube.get("subscription", names["tenant"], names["control"]) is None,
            "the Subscription to be gone",
        )
        wait_for(
            lambda: reason(get_tenant(kube, names), "LicenseIssued") == "Revoked",
            "the Tenant's license to be revoked",
        )
        kube.delete("tenant", names["tenant"], names["control"])
        wait_for(lambda: get_tenant(kube, names) is None, "the Tenant to be gone", timeout=60)
        kube.delete("coupon", coupon)
        kube.delete("taxrate", tax_rate)
        log = confined.log_text()
        assert "Forbidden" not in log, log
        assert "forbidden" not in log, log
    finally:
        confined.stop()
        operator.start()


def test_deploy_manifests_are_accepted_by_the_api_server(kube: Kube) -> None:
    deploy = REPO / "manifests" / "deploy"
    kube.kubectl("apply", "-f", str(deploy / "00-namespace.yaml"))
    out = kube.kubectl("apply", "--dry-run=server", "-k", str(deploy))
    expected = [
        "deployment.apps/tenantry-operator",
        "deployment.apps/tenantry-api",
        "service/tenantry-api",
        "clusterrole.rbac.authorization.k8s.io/tenantry-api",
    ]
    assert [name for name in expected if name not in out] == []
