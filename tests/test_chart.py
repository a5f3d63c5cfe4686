"""charts/tenantry and manifests/deploy, installed as a user installs them.

The real helm lints the chart, renders it for the API server's dry run, installs
and upgrades it into the test control plane; kubectl applies the kustomization.
The chart's RBAC must equal manifests/deploy/rbac.yaml's, which the suite runs
the operator and the API under (tests/operator/test_rbac.py, test_ha.py,
tests/api/test_api_rbac.py): that is what proves it is enough.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, Kube, wait_for

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "tenantry"
TEST_VALUES = CHART / "ci" / "test-values.yaml"
DEPLOY = REPO / "manifests" / "deploy"
KUBE_VERSION = "1.34.2"
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True,
            }},
        }],
    },
}  # fmt: skip
"""A stand-in for the Prometheus Operator's CRD, so the ServiceMonitors are accepted too."""


def helm(kube: Kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(kube.helm_binary), "--kubeconfig", str(kube.kubeconfig), *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def render(kube: Kube, *args: str, release: str = "tenantry") -> list[dict[str, Any]]:
    out = helm(kube, "template", release, str(CHART), "--namespace", "tenantry-system",
               "--kube-version", KUBE_VERSION, *args).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def test_the_chart_lints_strictly(kube: Kube) -> None:
    helm(kube, "lint", "--strict", str(CHART), "-f", str(TEST_VALUES))


def test_the_schema_refuses_a_typo_and_missing_credentials(kube: Kube) -> None:
    typo = helm(kube, "template", "t", str(CHART), "--kube-version", KUBE_VERSION,
                "-f", str(TEST_VALUES), "--set", "operator.replcas=3", check=False)  # fmt: skip
    assert typo.returncode != 0
    assert "replcas" in typo.stderr
    bare = helm(kube, "template", "t", str(CHART), "--kube-version", KUBE_VERSION, check=False)
    assert bare.returncode != 0
    assert "database.url (or database.existingSecret) is required" in bare.stderr


def test_the_charts_rbac_is_what_the_suite_proves_enough(kube: Kube) -> None:
    chart = by_kind(render(kube, "-f", str(TEST_VALUES)), "ClusterRole")
    manifests = by_kind(list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text())),
                        "ClusterRole")  # fmt: skip
    assert sorted(chart) == sorted(manifests) == ["tenantry-api", "tenantry-operator"]
    for name, role in manifests.items():
        assert chart[name]["rules"] == role["rules"], name


def test_the_chart_ships_every_crd_and_can_leave_them_out(kube: Kube) -> None:
    rendered = by_kind(render(kube, "-f", str(TEST_VALUES)), "CustomResourceDefinition")
    expected = {yaml.safe_load(p.read_text())["metadata"]["name"]
                for p in (REPO / "crds").glob("*.yaml")}  # fmt: skip
    assert set(rendered) == expected | {"clusterkopfpeerings.kopf.dev"}
    for crd in rendered.values():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert (
        yaml.safe_load((DEPLOY / "kopf-peering.yaml").read_text())["spec"]
        == (rendered["clusterkopfpeerings.kopf.dev"]["spec"])
    )
    without = render(kube, "-f", str(TEST_VALUES), "--set", "crds.install=false")
    assert not by_kind(without, "CustomResourceDefinition")


def test_the_pods_run_unprivileged_on_a_read_only_root(kube: Kube) -> None:
    deployments = by_kind(render(kube, "-f", str(TEST_VALUES)), "Deployment")
    assert sorted(deployments) == ["tenantry-api", "tenantry-operator"]
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["resources"]["requests"]
    api = deployments["tenantry-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    operator = deployments["tenantry-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert operator["args"][:3] == ["operator", "--peering", "tenantry"]
    assert "--standalone" not in operator["args"]


def test_every_rendered_object_is_accepted_by_the_api_server(kube: Kube) -> None:
    kube.apply(SERVICE_MONITOR_CRD)
    kube.kubectl("wait", "--for", "condition=Established",
                 "crd/servicemonitors.monitoring.coreos.com", "--timeout=60s")  # fmt: skip
    kube.kubectl("create", "namespace", "tenantry-system", check=False)
    documents = render(kube, "-f", str(TEST_VALUES))
    out = kube.kubectl("apply", "--dry-run=server", "-f", "-",
                       input=yaml.safe_dump_all(documents))  # fmt: skip
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
            "Secret", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor",
            "CustomResourceDefinition"} <= kinds  # fmt: skip
    assert out.count("(server dry run)") == len(documents), out


def test_the_kustomization_is_accepted(kube: Kube) -> None:
    kube.kubectl("apply", "-f", str(DEPLOY / "00-namespace.yaml"))
    out = kube.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY))
    for name in ("deployment.apps/tenantry-operator", "deployment.apps/tenantry-api",
                 "customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev",
                 "clusterrole.rbac.authorization.k8s.io/tenantry-operator"):  # fmt: skip
        assert name in out, out


def secret_data(kube: Kube, name: str, namespace: str) -> dict[str, str]:
    secret = kube.get("secret", name, namespace)
    assert secret is not None, f"no Secret {namespace}/{name}"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_helm_installs_upgrades_and_uninstalls_it(kube: Kube, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    release, namespace = f"tenantry-{suffix}", f"tenantry-chart-{suffix}"
    values = tmp_path / "values.yaml"
    # No tokens given: the chart makes them, and an upgrade must keep them.
    values.write_text(yaml.safe_dump({
        "database": {"url": "postgresql+psycopg://t:secret@db:5432/tenantry"},
        "redis": {"existingSecret": "my-redis"},
        "billing": {"existingSecret": "my-billing"},
        "operator": {"peering": f"tenantry-{suffix}"},
    }))  # fmt: skip
    kube.kubectl("create", "namespace", namespace)
    kube.kubectl("create", "secret", "generic", "my-redis", "-n", namespace,
                 "--from-literal=url=redis://redis:6379/0")  # fmt: skip
    # The suite applied the CRDs with kubectl: the chart adopts them, as it would
    # a cluster where someone did the same before Tenantry had a chart.
    common = ("--namespace", namespace, "-f", str(values), "--take-ownership")
    try:
        helm(kube, "install", release, str(CHART), *common)
        api = f"{release}-api"
        deployment = kube.get("deployment", api, namespace)
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 2
        tokens = secret_data(kube, f"{release}-api-tokens", namespace)
        assert len(tokens["admin"]) >= 32
        assert len(tokens["introspection"]) >= 32
        assert tokens["admin"] != tokens["introspection"]
        assert kube.get("secret", f"{release}-redis", namespace) is None  # the user's own
        manifest = helm(kube, "get", "manifest", release, "-n", namespace).stdout
        for doc in (d for d in yaml.safe_load_all(manifest) if d):
            found = kube.get(doc["kind"], doc["metadata"]["name"],
                             doc["metadata"].get("namespace"))  # fmt: skip
            assert found is not None, f"{doc['kind']} {doc['metadata']['name']} is missing"

        helm(kube, "upgrade", release, str(CHART), *common, "--set", "api.replicas=3")
        status = json.loads(helm(kube, "status", release, "-n", namespace, "-o", "json").stdout)
        assert (status["version"], status["info"]["status"]) == (2, "deployed")
        wait_for(lambda: kube.get("deployment", api, namespace)["spec"]["replicas"] == 3,
                 "the upgrade's replicas")  # fmt: skip
        assert secret_data(kube, f"{release}-api-tokens", namespace) == tokens
        crd = kube.get("crd", "tenants.tenantry.io")
        assert crd is not None
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    finally:
        helm(kube, "uninstall", release, "-n", namespace, check=False)
        kube.delete("namespace", namespace)
    # Kept: deleting a CRD would delete every Tenant.
    assert kube.get("crd", "tenants.tenantry.io") is not None
    assert kube.get("clusterrole", f"{release}-operator") is None
