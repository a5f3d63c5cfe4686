"""Plans running a chart of their own, from a chart repository and an OCI registry.

Both sources run on loopback (hack/testbed.py: `ChartRepository` serves what
`helm package` and `helm repo index` made, `OciRegistry` is crane's registry
that `helm push` fills), each with versions 1.0.0 and 2.0.0 of a small test
chart. The chart ignores `tenantry.suspended`, so suspension scales its
Deployment to zero from outside.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import (
    Kube,
    OperatorProcess,
    condition,
    dig,
    get_tenant,
    is_ready,
    plan,
    ready_tenant,
    subscription,
    tenant,
    unique_names,
    wait_for,
)
from testbed import ChartRepository, OciRegistry

pytestmark = pytest.mark.cluster

CHART = "byo-app"
VERSIONS = ("1.0.0", "2.0.0")
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "replicaCount": {"type": "integer", "minimum": 0},
        "greeting": {"type": "string"},
        "tenantry": {"type": "object"},
    },
}
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: {{ .Values.replicaCount }}  # ignores .Values.tenantry.suspended
  selector:
    matchLabels: {app: byo}
  template:
    metadata:
      labels: {app: byo}
    spec:
      containers:
        - name: app
          image: registry.example/byo:{{ .Chart.Version }}
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: app
data:
  version: {{ .Chart.Version | quote }}
  greeting: {{ .Values.greeting | quote }}
  tenant: {{ .Values.tenantry.tenant.name | quote }}
  plan: {{ .Values.tenantry.plan.name | quote }}
  limits: {{ .Values.tenantry.plan.limits | toJson | quote }}
  licenseSecret: {{ .Values.tenantry.license.secretName | quote }}
  keySecret: {{ .Values.tenantry.api.keySecretName | quote }}
"""


def write_chart(root: Path, version: str) -> Path:
    chart = root / version / CHART
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": CHART, "version": version})
    )
    (chart / "values.yaml").write_text("replicaCount: 1\ngreeting: hi\n")
    (chart / "values.schema.json").write_text(json.dumps(SCHEMA))
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    return chart


@pytest.fixture(scope="module")
def sources(
    kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ChartRepository, OciRegistry, dict[str, str], str]]:
    """The repository and the registry, each holding both versions; the digest of each
    version's package, and the OCI reference."""
    root = tmp_path_factory.mktemp("byo-charts")
    repository = ChartRepository(root / "repository", kube.helm_binary).start()
    registry = OciRegistry(root / "registry", kube.helm_binary).start()
    digests, reference = {}, ""
    try:
        for version in VERSIONS:
            package = repository.add(write_chart(root, version))
            digests[version] = "sha256:" + hashlib.sha256(package.read_bytes()).hexdigest()
            reference = registry.push(package)
        yield repository, registry, digests, reference
    finally:
        repository.stop()
        registry.stop()


def apply_tenant(
    kube: Kube, names: dict[str, str], suffix: str = "", **spec: Any
) -> dict[str, str]:
    """A Tenant (and its Subscription) on the Plan of `names`; its own names."""
    mine = {**names, "tenant": names["tenant"] + suffix, "target": names["target"] + suffix}
    kube.apply(
        subscription(mine["tenant"], mine["control"], mine["tenant"], mine["plan"]),
        tenant(mine["tenant"], mine["control"], **spec),
    )
    return mine


def running(kube: Kube, names: dict[str, str], version: str) -> dict[str, Any]:
    """The Tenant once Ready on `version`."""
    return wait_for(
        lambda: (
            (t := get_tenant(kube, names))
            and is_ready(t)
            and dig(t, "status", "release", "chartVersion") == version
            and t
        ),
        f"Tenant {names['tenant']} to run {CHART} {version}",
        timeout=60,
    )


def ready_reason(kube: Kube, names: dict[str, str], reason: str) -> dict[str, Any]:
    return wait_for(
        lambda: (c := condition(get_tenant(kube, names), "Ready")) and c["reason"] == reason and c,
        f"Ready=False, {reason}",
        timeout=60,
    )


def test_a_plan_runs_a_chart_from_a_repository_and_a_tenant_pins_another_version(
    kube: Kube,
    operator: OperatorProcess,
    sources: tuple[ChartRepository, OciRegistry, dict[str, str], str],
) -> None:
    repository, _, digests, _ = sources
    names = unique_names(kube)
    chart = {"repository": repository.url, "name": CHART, "version": "2.0.0",
             "values": {"greeting": "hello from the plan"}}  # fmt: skip
    kube.apply(plan(names["plan"], chart=chart))
    latest = apply_tenant(kube, names)
    pinned = apply_tenant(kube, names, "-pin", chartVersion="1.0.0", values={"greeting": "mine"})

    release = running(kube, latest, "2.0.0")["status"]["release"]
    assert release["chart"] == CHART
    assert release["source"] == f"{repository.url} {CHART}"
    assert release["digest"] == digests["2.0.0"]
    config = kube.get("configmap", "app", latest["target"])
    assert config is not None
    assert config["data"]["version"] == "2.0.0"
    assert config["data"]["greeting"] == "hello from the plan"
    # The values contract reaches a chart of one's own.
    assert config["data"]["tenant"] == latest["tenant"]
    assert config["data"]["plan"] == names["plan"]
    assert json.loads(config["data"]["limits"]) == {"devices": 50, "users": -1}
    assert config["data"]["licenseSecret"] == "tenantry-license"
    assert config["data"]["keySecret"] == "tenantry-api-key"

    pinned_release = running(kube, pinned, "1.0.0")["status"]["release"]
    assert pinned_release["digest"] == digests["1.0.0"]
    pinned_config = kube.get("configmap", "app", pinned["target"])
    assert pinned_config is not None
    assert (pinned_config["data"]["version"], pinned_config["data"]["greeting"]) == (
        "1.0.0",
        "mine",
    )
    printed = kube.kubectl("get", "tenant", pinned["tenant"], "-n", names["control"])
    assert "VERSION" in printed.splitlines()[0]
    assert "1.0.0" in printed.splitlines()[1]


def test_a_plan_runs_a_chart_from_an_oci_registry_and_moves_to_its_new_version(
    kube: Kube,
    operator: OperatorProcess,
    sources: tuple[ChartRepository, OciRegistry, dict[str, str], str],
) -> None:
    _, _, digests, reference = sources
    names = unique_names(kube)
    # Its instance sends no heartbeat: a deployed release passes a rollout's gate.
    rollout = {"requireHeartbeat": False, "pauseSeconds": 0}
    kube.apply(plan(names["plan"], chart={"oci": reference, "version": "1.0.0"}, rollout=rollout))
    apply_tenant(kube, names)
    first = running(kube, names, "1.0.0")["status"]["release"]
    assert (first["source"], first["digest"]) == (reference, digests["1.0.0"])
    assert first["revision"] == 1

    kube.apply(plan(names["plan"], chart={"oci": reference, "version": "2.0.0"}, rollout=rollout))
    second = running(kube, names, "2.0.0")["status"]["release"]
    assert (second["digest"], second["revision"]) == (digests["2.0.0"], 2)
    deployment = kube.get("deployment", "app", names["target"])
    assert deployment is not None
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/byo:2.0.0"
    completed = wait_for(
        lambda: (
            (r := dig(kube.get("plan", names["plan"]), "status", "rollout"))
            and r["phase"] == "Complete"
            and r
        ),
        "the Plan's rollout to complete",
    )
    assert (completed["targetVersion"], completed["previousVersion"]) == ("2.0.0", "1.0.0")
    assert (completed["updated"], completed["pending"], completed["failed"]) == (1, 0, 0)


def test_values_the_charts_schema_refuses_are_invalid_values_until_fixed(
    kube: Kube,
    operator: OperatorProcess,
    sources: tuple[ChartRepository, OciRegistry, dict[str, str], str],
) -> None:
    repository = sources[0]
    names = unique_names(kube)
    chart = {"repository": repository.url, "name": CHART, "version": "1.0.0"}
    kube.apply(plan(names["plan"], chart=chart))
    apply_tenant(kube, names, values={"replicaCount": "lots"})
    refused = ready_reason(kube, names, "InvalidValues")
    assert refused["status"] == "False"
    assert "spec.values.replicaCount" in refused["message"]
    assert f"values.schema.json of chart {CHART} 1.0.0" in refused["message"]
    assert kube.release(names["target"], "instance") is None, "nothing was installed"

    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": 2}))
    running(kube, names, "1.0.0")


def test_a_missing_version_and_an_unreachable_registry_say_so(
    kube: Kube,
    operator: OperatorProcess,
    sources: tuple[ChartRepository, OciRegistry, dict[str, str], str],
) -> None:
    repository = sources[0]
    names = unique_names(kube)
    kube.apply(plan(names["plan"], chart={"repository": repository.url, "name": CHART,
                                          "version": "9.9.9"}))  # fmt: skip
    apply_tenant(kube, names)
    missing = ready_reason(kube, names, "ChartNotFound")
    assert f"Chart {repository.url} {CHART} 9.9.9 does not exist" in missing["message"]

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = f"oci://127.0.0.1:{port}/charts/{CHART}"
    kube.apply(plan(names["plan"], chart={"oci": down, "version": "1.0.0"}))
    unavailable = ready_reason(kube, names, "ChartUnavailable")
    assert "connection refused" in unavailable["message"]
    assert "trying again in" in unavailable["message"]
    assert kube.release(names["target"], "instance") is None


def test_suspension_scales_a_chart_that_ignores_it_and_resume_restores_it(
    kube: Kube,
    operator: OperatorProcess,
    sources: tuple[ChartRepository, OciRegistry, dict[str, str], str],
) -> None:
    repository = sources[0]
    names = unique_names(kube)
    chart = {"repository": repository.url, "name": CHART, "version": "1.0.0"}
    kube.apply(plan(names["plan"], chart=chart))
    apply_tenant(kube, names, values={"replicaCount": 3})
    running(kube, names, "1.0.0")
    assert dig(kube.get("deployment", "app", names["target"]), "spec", "replicas") == 3

    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": 3},
                      suspended=True))  # fmt: skip
    scaled = wait_for(
        lambda: (
            (d := kube.get("deployment", "app", names["target"]))
            and d["spec"]["replicas"] == 0
            and d
        ),
        "the Deployment to be scaled to zero",
    )
    annotations = scaled["metadata"]["annotations"]
    assert annotations["tenantry.io/replicas-before-suspension"] == "3"
    # The status patch ends the pass that scaled the Deployment: it comes after.
    wait_for(
        lambda: (
            (condition(get_tenant(kube, names), "ReleaseDeployed") or {}).get("reason")
            == "Suspended"
        ),
        "the Tenant's ReleaseDeployed condition to say Suspended",
    )

    kube.apply(tenant(names["tenant"], names["control"], values={"replicaCount": 3}))
    restored = wait_for(
        lambda: (
            (d := kube.get("deployment", "app", names["target"]))
            and d["spec"]["replicas"] == 3
            and "tenantry.io/replicas-before-suspension"
            not in (d["metadata"].get("annotations") or {})
            and d
        ),
        "the Deployment to get its 3 replicas back",
    )
    assert restored["spec"]["replicas"] == 3
    ready_tenant(kube, names)
