"""The operator's Prometheus metrics, served on a port of their own (`metrics_port`).

tenantry_operator_reconcile_duration_seconds{kind, trigger, result}
    one observation per reconcile pass; `_count` is the passes by result:
    ok, not_ready, invalid, retry (a temporary error), deleting (stopped: the
    object is being deleted), error; trigger: change, drift, timer
tenantry_operator_drift_checks_total{result}
    drift checks of Tenants: unchanged (no helm ran) or repaired
tenantry_operator_helm_operations_in_flight
tenantry_operator_helm_operations_waiting{priority}
    helm processes running, and waiting for a slot (back-pressure)
tenantry_operator_helm_operations_total{command, result}
    helm processes run, by command (upgrade, uninstall, show...) and
    result (ok, failed): failures are helm's own
tenantry_operator_kube_transport_errors_total{error}
    requests to the API server that failed below HTTP (pool exhausted,
    timeouts, resets), each retried shortly
tenantry_operator_tenants{ready, reason}
    Tenants by their Ready condition, as this operator last saw them
tenantry_operator_license_expiry_timestamp_seconds{namespace, tenant}
    when each Tenant's license in force expires (Unix time), as its last pass
    found it; renewed `license_renew_before` ahead, so one near is one not renewed
tenantry_operator_stripe_sync_errors_total{kind, reason}
    Stripe steps that failed: StripeUnavailable (an outage, retried), or
    Stripe's refusal (StripeRefused) or a spec Tenantry cannot follow
tenantry_operator_shard{shard, shards}
    1, labelled with this operator's shard and the number of shards
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("tenantry.operator")

RECONCILE_SECONDS = Histogram(
    "tenantry_operator_reconcile_duration_seconds",
    "Reconcile passes by kind, trigger (change or drift) and result.",
    ["kind", "trigger", "result"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DRIFT_CHECKS = Counter(
    "tenantry_operator_drift_checks",
    "Drift checks of Tenants: unchanged (no helm ran) or repaired.",
    ["result"],
)
HELM_IN_FLIGHT = Gauge("tenantry_operator_helm_operations_in_flight", "helm processes running now.")
HELM_WAITING = Gauge(
    "tenantry_operator_helm_operations_waiting",
    "helm operations waiting for a slot, by priority (urgent, periodic).",
    ["priority"],
)
PASSES_IN_FLIGHT = Gauge(
    "tenantry_operator_tenant_passes_in_flight", "Tenant reconcile passes running now."
)
PASSES_WAITING = Gauge(
    "tenantry_operator_tenant_passes_waiting",
    "Tenant reconcile passes waiting for a slot, by priority (urgent, periodic).",
    ["priority"],
)
HELM_OPERATIONS = Counter(
    "tenantry_operator_helm_operations",
    "helm processes run, by command and result (ok, failed).",
    ["command", "result"],
)
KUBE_TRANSPORT_ERRORS = Counter(
    "tenantry_operator_kube_transport_errors",
    "Requests to the Kubernetes API server that failed below HTTP, by error type.",
    ["error"],
)
SHARD = Gauge(
    "tenantry_operator_shard",
    "1, labelled with this operator's shard and the number of shards.",
    ["shard", "shards"],
)


class TenantReadiness(Collector):
    """Tenants by Ready status and reason, from the last pass over each."""

    def __init__(self) -> None:
        self._by_uid: dict[str, tuple[str, str]] = {}

    def set(self, uid: str, ready: str, reason: str) -> None:
        self._by_uid[uid] = (ready, reason)

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tenantry_operator_tenants",
            "Tenants by their Ready condition (True, False, Unknown) and its reason.",
            labels=["ready", "reason"],
        )
        counts: dict[tuple[str, str], int] = {}
        for key in list(self._by_uid.values()):
            counts[key] = counts.get(key, 0) + 1
        for (ready, reason), count in sorted(counts.items()):
            family.add_metric([ready, reason], count)
        yield family


TENANTS = TenantReadiness()
REGISTRY.register(TENANTS)


class LicenseExpiry(Collector):
    """Each Tenant's license expiry, from the last pass over it."""

    def __init__(self) -> None:
        self._by_uid: dict[str, tuple[str, str, float]] = {}

    def set(self, uid: str, namespace: str, tenant: str, license: Mapping[str, Any] | None) -> None:
        """`license`: the Tenant's `status.license`; None when it holds none."""
        if not license:
            self.forget(uid)
            return
        expires_at = dt.datetime.fromisoformat(license["expiresAt"]).timestamp()
        self._by_uid[uid] = (namespace, tenant, expires_at)

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tenantry_operator_license_expiry_timestamp_seconds",
            "When each Tenant's license in force expires (Unix time).",
            labels=["namespace", "tenant"],
        )
        entries = list(self._by_uid.values())  # a copy: passes change it from another thread
        for namespace, tenant, expires_at in sorted(entries):
            family.add_metric([namespace, tenant], expires_at)
        yield family


LICENSES = LicenseExpiry()
REGISTRY.register(LICENSES)
STRIPE_SYNC_ERRORS = Counter(
    "tenantry_operator_stripe_sync_errors",
    "Stripe steps that failed, by kind and reason (StripeUnavailable, StripeRefused...).",
    ["kind", "reason"],
)


def serve(port: int) -> None:
    """Serve `/metrics` on `port` (all interfaces) from a thread; 0 serves nothing."""
    if port == 0:
        return
    try:
        start_http_server(port)
    except OSError as error:
        # The operator's work matters more than its metrics: say so, and go on.
        log.error("Serving no metrics: port %d: %s", port, error)
        return
    log.info("Serving metrics on port %d (/metrics)", port)


class Pass:
    """The result of one reconcile pass, set by the code that knows it."""

    def __init__(self) -> None:
        self.result = "error"  # unless the pass says otherwise, or raises a temporary error


@contextmanager
def reconcile_pass(kind: str, trigger: str) -> Iterator[Pass]:
    """Time one reconcile pass of `kind` (`trigger`: change, drift, timer) by its result."""
    outcome, started = Pass(), time.monotonic()
    try:
        yield outcome
    except kopf.TemporaryError:
        outcome.result = "retry"
        raise
    finally:
        RECONCILE_SECONDS.labels(kind=kind, trigger=trigger, result=outcome.result).observe(
            time.monotonic() - started
        )
