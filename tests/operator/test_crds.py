"""CRDs rendered from the models: structural, current, accepted by a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import REPO, Kube

from tenantry.core.resources import KINDS
from tenantry.operator import crds

FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "patternProperties", "title"}


def walk(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [k for k in node if k in FORBIDDEN] + [x for v in node.values() for x in walk(v)]
    if isinstance(node, list):
        return [x for v in node for x in walk(v)]
    return []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schemas_are_structural(kind: Any) -> None:
    manifest = crds.crd_manifest(kind)
    schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert walk(schema) == []
    assert "x-kubernetes-preserve-unknown-fields" not in schema
    assert schema["properties"]["spec"]["type"] == "object"
    assert manifest["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_committed_crds_match_the_models() -> None:
    assert crds.stale(REPO / "crds") == [], "run `make crds` and commit the result"


def test_stale_detects_a_hand_edit(tmp_path: Path) -> None:
    crds.write_all(tmp_path)
    edited = tmp_path / "tenantry.io_tenants.yaml"
    edited.write_text(edited.read_text().replace("Customer's name", "Name"))
    assert crds.stale(tmp_path) == [edited]


@pytest.mark.cluster
def test_samples_are_accepted_by_the_api_server(kube: Kube) -> None:
    kube.kubectl("apply", "-f", str(REPO / "manifests/samples/00-namespace.yaml"))
    out = kube.kubectl("apply", "--dry-run=server", "-f", str(REPO / "manifests/samples"))
    for kind in ("plan.tenantry.io/starter", "tenant.tenantry.io/acme", "apikey.tenantry.io"):
        assert kind in out


@pytest.mark.cluster
def test_printer_columns_read_like_a_dashboard(kube: Kube) -> None:
    kube.kubectl("apply", "-f", str(REPO / "manifests/samples/plan-starter.yaml"))
    header = kube.kubectl("get", "plans").splitlines()[0].split()
    assert header == ["NAME", "DISPLAY", "AMOUNT", "CURRENCY", "INTERVAL", "VERSION", "ROLLOUT",
                      "UPDATED", "PENDING", "FAILED", "AGE"]  # fmt: skip
    assert "starter" in kube.kubectl("get", "pl")  # short name


@pytest.mark.cluster
def test_invalid_feature_names_are_refused_with_the_rule(kube: Kube) -> None:
    bad = {
        "apiVersion": "tenantry.io/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "bad-features"},
        "spec": {
            "displayName": "Bad",
            "price": {"amount": 1, "currency": "USD"},
            "features": {"otaUpdates": True},
        },
    }
    with pytest.raises(AssertionError, match=r"keys must match"):
        kube.apply(bad)
