"""Provisioning latency: `kubectl apply` of a Tenant to `Ready`, beside a script.

Starts its own control plane (hack/testbed.py), installs the CRDs, runs the
operator as a user would (`tenantry operator`), and provisions N tenants one
after another, timing each from the apply to the moment `Ready=True` is
visible. The baseline, in the same run and on the same cluster, does the same
steps as a shell script with kubectl and helm: create the namespace, create
the license Secret, `helm upgrade --install` the chart.

    .venv/bin/python bench/provision.py [--tenants 20]

The operator's log is kept at $TENANTRY_BENCH_LOG when that is set.

Goals: p50 under 3 s, and within 1.5x of the scripted baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from testbed import ControlPlane, ensure_tools, free_port  # noqa: E402

PLAN = {
    "apiVersion": "tenantry.io/v1alpha1",
    "kind": "Plan",
    "metadata": {"name": "bench"},
    "spec": {
        "displayName": "Bench",
        "price": {"amount": 100, "currency": "USD"},
        "features": {"ota_updates": True},
        "limits": {"devices": 10},
    },
}

BASELINE = r"""
set -euo pipefail
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic tenantry-license \
  --from-literal=license.jwt="$TOKEN" >/dev/null
helm upgrade --install instance "$CHART" -n "$NS" \
  --set tenant.name="$NAME" --set license.secretName=tenantry-license >/dev/null
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=input, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def tenant_ready(plane: ControlPlane, namespace: str, name: str) -> bool:
    """Read the Tenant straight from the API (a kubectl process per poll would add ~60 ms)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"{plane.url}/apis/tenantry.io/v1alpha1/namespaces/{namespace}/tenants/{name}",
        headers={"Authorization": f"Bearer {plane.token}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        body = json.load(response)
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return bool(condition["status"] == "True")
    return False


def operator_run(plane: ControlPlane, count: int) -> list[float]:
    kubeconfig = plane.kubeconfig
    kubectl(kubeconfig, "create", "namespace", "bench-customers")
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(PLAN))
    timings = []
    for i in range(count):
        name = f"op-{i}"
        subscription = {
            "apiVersion": "tenantry.io/v1alpha1",
            "kind": "Subscription",
            "metadata": {"name": name, "namespace": "bench-customers"},
            "spec": {"tenantRef": {"name": name}, "planRef": {"name": "bench"}},
        }
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(subscription))
        tenant = {
            "apiVersion": "tenantry.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "namespace": "bench-customers"},
            "spec": {"displayName": name, "billingEmail": f"{name}@bench.example"},
        }
        started = time.perf_counter()
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(tenant))
        deadline = started + 60
        while not tenant_ready(plane, "bench-customers", name):
            if time.perf_counter() > deadline:
                raise SystemExit(f"Tenant {name} not Ready after 60 s")
            time.sleep(0.01)
        timings.append(time.perf_counter() - started)
    return timings


def baseline_run(kubeconfig: Path, helm: Path, count: int) -> list[float]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{helm.parent}:{os.environ['PATH']}",
        "CHART": str(REPO / "charts/customer-instance"),
        "TOKEN": "header.payload.signature",
    }
    timings = []
    for i in range(count):
        started = time.perf_counter()
        subprocess.run(
            ["bash", "-c", BASELINE],
            env={**env, "NS": f"script-{i}", "NAME": f"script-{i}"},
            check=True,
        )
        timings.append(time.perf_counter() - started)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    tools = ensure_tools("etcd", "kube-apiserver", "kube-controller-manager", "helm")
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-") as tmp:
        plane = ControlPlane(Path(tmp) / "cluster").start()
        operator = None
        try:
            kubectl(plane.kubeconfig, "apply", "-f", str(REPO / "crds"))
            kubectl(plane.kubeconfig, "wait", "--for", "condition=Established", "crd", "--all")
            port = free_port()
            log_path = Path(os.environ.get("TENANTRY_BENCH_LOG", Path(tmp) / "operator.log"))
            with log_path.open("wb") as log:
                operator = subprocess.Popen(
                    [str(REPO / ".venv/bin/tenantry"), "operator", "--standalone",
                     "--liveness", f"http://127.0.0.1:{port}/healthz"],
                    stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "KUBECONFIG": str(plane.kubeconfig),
                         "TENANTRY_OPERATOR_HELM": str(tools["helm"])},
                )  # fmt: skip
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            baseline = baseline_run(plane.kubeconfig, tools["helm"], args.tenants)
            measured = operator_run(plane, args.tenants)
        finally:
            if operator:
                operator.terminate()
                operator.wait(20)
            plane.stop()

    rows = [("operator (apply -> Ready)", measured), ("script (kubectl + helm)", baseline)]
    print(f"{'path':28} {'n':>3} {'p50 s':>7} {'p95 s':>7} {'mean s':>7}")
    for label, values in rows:
        print(
            f"{label:28} {len(values):>3} {percentile(values, 0.5):>7.3f} "
            f"{percentile(values, 0.95):>7.3f} {statistics.mean(values):>7.3f}"
        )
    p50 = percentile(measured, 0.5)
    ratio = p50 / percentile(baseline, 0.5)
    print(f"\nGoal: p50 under 3 s: {p50:.3f} s  {'PASS' if p50 < 3 else 'MISS'}")
    print(
        f"Goal: within 1.5x of the script (p50 ratio): {ratio:.2f}x  "
        f"{'PASS' if ratio <= 1.5 else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
