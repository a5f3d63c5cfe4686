"""manifests/monitoring: the Grafana dashboard and the alert rules name only metrics the
API and the operator expose, and the rules have the PrometheusRule shape."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client.core import REGISTRY
from support import REPO, Kube

import tenantry.api.metrics
import tenantry.operator.metrics

MONITORING = REPO / "manifests" / "monitoring"
METRIC = re.compile(r"\btenantry_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",), "unknown": ("",)}  # fmt: skip


def exposed() -> set[str]:
    """The sample names the two processes' registries can show (in this process, without
    PROMETHEUS_MULTIPROC_DIR: the same definitions, one registry)."""
    # Both modules' definitions are loaded, each registered as it is imported.
    assert tenantry.api.metrics.REQUEST_SECONDS
    assert tenantry.operator.metrics.TENANTS
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return {name for name in names if name.startswith("tenantry_")}


def rules() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    return document


def test_the_dashboard_and_the_rules_name_only_metrics_that_exist() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    expressions = [r["expr"] for g in rules()["spec"]["groups"] for r in g["rules"]]
    used = {name for expr in queries + expressions for name in METRIC.findall(expr)}
    available = exposed()
    assert used - available == set(), f"not exposed: {sorted(used - available)}"
    # And they watch both processes, and what the issue asks for.
    assert any(n.startswith("tenantry_api_") for n in used)
    assert any(n.startswith("tenantry_operator_") for n in used)
    assert {
        "tenantry_operator_license_expiry_timestamp_seconds",
        "tenantry_api_stripe_events_pending",
        "tenantry_operator_reconcile_duration_seconds_count",
    } <= used


def test_the_rules_are_a_prometheus_rule() -> None:
    document = rules()
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"]
    alerts = []
    for group in document["spec"]["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert rule["expr"].count("(") == rule["expr"].count(")")
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "1m"))
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    assert {"TenantryLicenseExpiringWithoutRenewal", "TenantryStripeWebhookBacklogGrowing",
            "TenantryReconcileErrors"} <= set(alerts)  # fmt: skip


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "tenantry"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


@pytest.mark.cluster
def test_the_charts_service_monitors_scrape_both_metrics_ports(kube: Kube) -> None:
    from test_chart import TEST_VALUES, by_kind, render

    documents = render(kube, "-f", str(TEST_VALUES), "--set", "serviceMonitor.enabled=true")
    services = by_kind(documents, "Service")
    monitors = by_kind(documents, "ServiceMonitor")
    api = by_kind(documents, "Deployment")["tenantry-api"]["spec"]["template"]["spec"]
    container = api["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {"name": "metrics", "containerPort": int(env["TENANTRY_API_METRICS_PORT"])} in (
        container["ports"]
    )
    # The public Service has no metrics port; one of its own has.
    assert [p["name"] for p in services["tenantry-api"]["spec"]["ports"]] == ["http"]
    assert services["tenantry-api-metrics"]["spec"]["type"] == "ClusterIP"
    for component in ("api", "operator"):
        [endpoint] = monitors[f"tenantry-{component}"]["spec"]["endpoints"]
        assert endpoint["port"] == "metrics"
        service = services[f"tenantry-{component}-metrics"]
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
