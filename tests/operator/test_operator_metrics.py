"""The operator's metrics as Prometheus scrapes them from its port, and its log lines
naming the object each is about."""

from __future__ import annotations

import datetime as dt
import logging
import re
import urllib.request

import kopf
import pytest
from prometheus_client.core import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support import Kube, OperatorProcess, provision, unique_names, wait_for

from tenantry.operator import metrics  # noqa: F401 - the operator's metrics, registered
from tenantry.operator.errors import StripeUnavailable
from tenantry.operator.reconcile import Reconcile
from tenantry.operator.stripe.sync import syncing

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> Samples:
    port = operator.env["TENANTRY_OPERATOR_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labelled(samples: Samples, name: str, **labels: str) -> list[float]:
    wanted = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and wanted <= ls]


@pytest.mark.cluster
def test_a_provisioned_tenant_shows_in_the_operators_metrics(
    kube: Kube, operator: OperatorProcess
) -> None:
    names = unique_names(kube)
    ready = provision(kube, names)
    expires = dt.datetime.fromisoformat(ready["status"]["license"]["expiresAt"]).timestamp()
    where = frozenset({("namespace", names["control"]), ("tenant", names["tenant"])})
    license_key = ("tenantry_operator_license_expiry_timestamp_seconds", where)
    # Read after the pass that wrote the status has ended and counted.
    samples = wait_for(
        lambda: s if license_key in (s := scrape(operator)) else None,
        "the Tenant's license expiry in the operator's metrics",
        timeout=10,
    )
    assert samples[license_key] == pytest.approx(expires, abs=1)
    # Reconciles by kind and result, with their durations.
    passes = labelled(samples, "tenantry_operator_reconcile_duration_seconds_count",
                      kind="Tenant", result="ok")  # fmt: skip
    assert sum(passes) >= 1
    assert labelled(samples, "tenantry_operator_reconcile_duration_seconds_sum", kind="Tenant")
    assert sum(labelled(samples, "tenantry_operator_tenants", ready="True")) >= 1
    assert sum(labelled(samples, "tenantry_operator_helm_operations_total", result="ok")) >= 1

    # The operator's lines about an object name it: `[Kind namespace/name]`.
    lines = [line for line in operator.log_text().splitlines() if names["tenant"] in line]
    objects = [line for line in lines if " kopf.objects: " in line]
    assert objects, lines
    assert all(re.search(r" kopf\.objects: \[[A-Z]\w+ [a-z0-9.-]+(/[a-z0-9.-]+)?\] ", line)
               for line in objects), objects  # fmt: skip
    assert any(f"[Tenant {names['control']}/{names['tenant']}] " in line for line in objects)


async def test_a_stripe_outage_counts_as_a_sync_error() -> None:
    body = kopf.Body({"apiVersion": "tenantry.io/v1alpha1", "kind": "Plan",
                      "metadata": {"name": "pro", "generation": 1}, "spec": {}})  # fmt: skip
    r = Reconcile(body, [], dt.datetime.now(dt.UTC))
    counted = {"kind": "Plan", "reason": "StripeUnavailable"}
    name = "tenantry_operator_stripe_sync_errors_total"
    before = REGISTRY.get_sample_value(name, counted) or 0.0
    async with syncing(r, logging.getLogger("test")) as step:
        raise StripeUnavailable("Stripe answered 503")
    assert step.retry is not None
    assert REGISTRY.get_sample_value(name, counted) == before + 1
    assert any(re.search("Stripe answered 503", o.message) for o in r.observed)
