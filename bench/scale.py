"""The operator at scale: N Tenants at once, each figure beside its baseline from the same run.

Starts its own control plane (hack/testbed.py), then:

1. baseline: a script does what the operator does for each tenant (namespace,
   license Secret, `helm upgrade --install`), as many at once as the operator
   runs helm (`--parallel`, the operator's TENANTRY_OPERATOR_HELM_CONCURRENCY),
   then deletes the namespaces;
2. apply: one Plan, N Subscriptions and N Tenants in one `kubectl apply`;
   the time until every Tenant is Ready, the operator's peak memory (alone, and
   with its helm children), the API server's writes per tenant (its own
   `apiserver_request_total`, the bench's own applies left out);
3. resync: the operator restarted over N unchanged Tenants; the time until
   every Tenant was reconciled again, Helm upgrades, new licenses, API writes
   per tenant; and how long the operator took to stop (SIGTERM);
4. deletion: every Tenant deleted at once; the time until all are gone.

    .venv/bin/python bench/scale.py [N] [--parallel P]     # N = 100 by default

It loads the machine: run it where nothing else is measured. Goals (the
issue's, for 1,000 Tenants, applied at any N): all Ready within 10 minutes
and within 1.5x of the script; operator memory under 250 MB without its helm
children; resync under a minute with zero Helm upgrades, zero new licenses and
at most one API write per Tenant; deletion within 10 minutes; stop within a
Pod's 30 s grace.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from testbed import ControlPlane, ensure_tools, free_port  # noqa: E402

CONTROL = "bench-customers"
WRITES = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"}
PAGE = 4096  # /proc/PID/statm counts pages

SCRIPT = r"""
set -euo pipefail
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic tenantry-license \
  --from-literal=license.jwt="$TOKEN" >/dev/null
helm upgrade --install instance "$CHART" -n "$NS" \
  --set tenantry.tenant.name="$NAME" --set tenantry.license.secretName=tenantry-license \
  >/dev/null
"""


class Api:
    """The API server, read as the bench's admin (no kubectl process per poll)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.plane.url}{path}", headers={"Authorization": f"Bearer {self.plane.token}"}
        )
        with urllib.request.urlopen(request, context=self.tls, timeout=60) as response:
            data = response.read()
        return data if path == "/metrics" else json.loads(data)

    def tenants(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            f"/apis/tenantry.io/v1alpha1/namespaces/{CONTROL}/tenants"
        )["items"]
        return items

    def namespaces(self, prefix: str) -> int:
        items = self.get("/api/v1/namespaces")["items"]
        return sum(1 for n in items if n["metadata"]["name"].startswith(prefix))

    def writes(self) -> Counter[str]:
        """Write requests served so far, by resource."""
        counts: Counter[str] = Counter()
        text = self.get("/metrics").decode()
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_request":
                continue
            for sample in family.samples:
                if sample.name == "apiserver_request_total" and sample.labels["verb"] in WRITES:
                    counts[sample.labels.get("resource", "?")] += int(sample.value)
        return counts


def ready(tenant: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (tenant.get("status") or {}).get("conditions") or []
    )


def wait(check: Callable[[], bool], what: str, timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(1)
    return time.monotonic() - started


class Memory:
    """Peak resident memory of a process, alone and with its descendants (sampled)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.alone = 0
        self.tree = 0
        self.children = 0  # most descendants at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            parents: dict[int, int] = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        stat = (entry / "stat").read_text()
                        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
            tree = {self.pid}
            grew = True
            while grew:
                grew = False
                for pid, parent in parents.items():
                    if parent in tree and pid not in tree:
                        tree.add(pid)
                        grew = True
            sizes = {pid: rss(pid) for pid in tree}
            self.alone = max(self.alone, sizes.get(self.pid, 0))
            self.tree = max(self.tree, sum(sizes.values()))
            self.children = max(self.children, len(tree) - 1)


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def kubectl(plane: ControlPlane, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(plane.kubeconfig), *args],
        input=input, capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip


# ------------------------------------------------------------------ baseline


def baseline(
    plane: ControlPlane, api: Api, helm: Path, count: int, parallel: int
) -> dict[str, Any]:
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "PATH": f"{helm.parent}:{os.environ['PATH']}",
        "CHART": str(REPO / "charts/customer-instance"),
        "TOKEN": "header.payload.signature",
    }

    def one(i: int) -> bool:
        result = subprocess.run(
            ["bash", "-c", SCRIPT],
            env={**env, "NS": f"script-{i}", "NAME": f"script-{i}"},
            capture_output=True, check=False,
        )  # fmt: skip
        return result.returncode == 0

    writes_before = api.writes()
    memory = Memory(os.getpid())
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, range(count)))
    elapsed = time.monotonic() - started
    memory.stop()
    # Settled: the controllers' ReplicaSets and the like are part of the cost.
    time.sleep(5)
    writes = sum((api.writes() - writes_before).values())

    started = time.monotonic()
    kubectl(plane, "delete", "namespace", "--wait=false", *(f"script-{i}" for i in range(count)))
    wait(lambda: api.namespaces("script-") == 0, "the script's namespaces to go", 3600)
    return {
        "ready": elapsed,
        "failed": results.count(False),
        "writes": writes / count,
        "memory": memory.tree,
        "delete": time.monotonic() - started,
    }


# ------------------------------------------------------------------ operator


class Operator:
    def __init__(self, plane: ControlPlane, helm: Path, parallel: int, log: Path) -> None:
        self.plane = plane
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "TENANTRY_OPERATOR_HELM": str(helm),
            "TENANTRY_OPERATOR_HELM_CONCURRENCY": str(parallel),
            "TENANTRY_OPERATOR_METRICS_PORT": str(self.metrics_port),
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(REPO / ".venv/bin/tenantry"), "operator", "--standalone",
                 "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        wait(self._alive, "the operator to start", 120)

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise SystemExit(f"bench: the operator exited; see {self.log}")
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> float:
        """SIGTERM, and the seconds until the process was gone."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


def manifests(count: int) -> str:
    documents: list[dict[str, Any]] = [
        {
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
    ]
    for i in range(count):
        name = f"t-{i}"
        documents.append(
            {
                "apiVersion": "tenantry.io/v1alpha1",
                "kind": "Subscription",
                "metadata": {"name": name, "namespace": CONTROL},
                "spec": {"tenantRef": {"name": name}, "planRef": {"name": "bench"}},
            }
        )
        documents.append(
            {
                "apiVersion": "tenantry.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": name, "namespace": CONTROL},
                "spec": {"displayName": name, "billingEmail": f"{name}@bench.example"},
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})


def revisions(api: Api) -> dict[str, int]:
    """The latest helm revision of each tenant's release, from helm's own Secrets."""
    latest: dict[str, int] = {}
    items = api.get("/api/v1/secrets?labelSelector=owner%3Dhelm")["items"]
    for secret in items:
        namespace = secret["metadata"]["namespace"]
        version = int(secret["metadata"]["labels"].get("version", 0))
        latest[namespace] = max(latest.get(namespace, 0), version)
    return latest


def licenses(api: Api) -> dict[str, str]:
    return {
        t["metadata"]["name"]: ((t.get("status") or {}).get("license") or {}).get("id", "")
        for t in api.tenants()
    }


def operator_runs(
    plane: ControlPlane, api: Api, helm: Path, count: int, parallel: int, log: Path
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    operator = Operator(plane, helm, parallel, log)
    operator.start()
    assert operator.process is not None
    memory = Memory(operator.process.pid)

    # Apply: everything at once.
    kubectl(plane, "create", "namespace", CONTROL)
    writes_before = api.writes()
    started = time.monotonic()
    kubectl(plane, "apply", "--server-side", "-f", "-", input=manifests(count))
    figures["ready"] = (time.monotonic() - started) + wait(
        lambda: sum(ready(t) for t in api.tenants()) == count, "every Tenant to be Ready", 3600
    )
    time.sleep(5)
    writes = api.writes() - writes_before
    memory.stop()
    figures["memory_alone"], figures["memory_tree"] = memory.alone, memory.tree
    figures["helm_at_once"] = memory.children
    own = 2 * count + 1  # the bench's own apply
    figures["writes"] = (sum(writes.values()) - own) / count
    figures["writes_by_resource"] = writes.most_common(6)
    failed_revisions = sum(1 for r in revisions(api).values() if r > 1)
    figures["upgraded_at_install"] = failed_revisions

    # Resync: the same Tenants, unchanged, after a restart.
    before_revisions, before_licenses = revisions(api), licenses(api)
    figures["stop"] = operator.stop()
    time.sleep(2)
    writes_before = api.writes()
    started = time.monotonic()
    operator.start()

    def resumed() -> bool:
        return (
            operator.metric(
                "tenantry_operator_reconcile_duration_seconds_count",
                kind="Tenant",
                trigger="change",
            )
            >= count
        )

    figures["resync"] = (time.monotonic() - started) + wait(
        resumed, "every Tenant to be resumed", 3600
    )
    time.sleep(5)
    writes = api.writes() - writes_before
    figures["resync_writes"] = sum(writes.values()) / count
    figures["resync_writes_by_resource"] = writes.most_common(6)
    after_revisions = revisions(api)
    figures["resync_upgrades"] = sum(
        after_revisions.get(ns, 0) - r for ns, r in before_revisions.items()
    )
    after_licenses = licenses(api)
    figures["resync_licenses"] = sum(
        1 for name, lid in before_licenses.items() if after_licenses.get(name) != lid
    )
    figures["resync_helm"] = operator.metric("tenantry_operator_helm_operations_total")

    # Deletion: all at once.
    started = time.monotonic()
    kubectl(plane, "delete", "tenants", "--all", "-n", CONTROL, "--wait=false")
    # A Tenant goes once its release and its namespace have gone.
    figures["delete"] = wait(lambda: not api.tenants(), "every Tenant to be gone", 3600)
    operator.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tenants", type=int, nargs="?", default=100)
    parser.add_argument(
        "--parallel",
        type=int,
        default=max(2, 4 * (os.cpu_count() or 1)),
        help="helm processes at once, for the script and the operator alike",
    )
    args = parser.parse_args()
    count, parallel = args.tenants, args.parallel
    tools = ensure_tools("etcd", "kube-apiserver", "kube-controller-manager", "helm")
    with tempfile.TemporaryDirectory(prefix="tenantry-scale-") as tmp:
        log = Path(os.environ.get("TENANTRY_BENCH_LOG", Path(tmp) / "operator.log"))
        plane = ControlPlane(Path(tmp) / "cluster").start()
        try:
            kubectl(plane, "apply", "-f", str(REPO / "crds"))
            kubectl(plane, "wait", "--for", "condition=Established", "crd", "--all")
            api = Api(plane)
            print(f"{count} tenants, {parallel} helm processes at once, {os.cpu_count()} CPUs")
            script = baseline(plane, api, tools["helm"], count, parallel)
            print(f"  script done: {script['ready']:.0f} s, {script['failed']} failed")
            op = operator_runs(plane, api, tools["helm"], count, parallel, log)
        finally:
            plane.stop()
    report(count, script, op)
    return 0


def report(count: int, script: dict[str, Any], op: dict[str, Any]) -> None:
    ratio = op["ready"] / script["ready"]
    rows = [
        ("apply -> all Ready", f"{op['ready']:.0f} s",
         f"{script['ready']:.0f} s ({script['failed']} of {count} failed)"),
        ("  releases upgraded while installing", str(op["upgraded_at_install"]), "-"),
        ("API writes per tenant (apply)", f"{op['writes']:.1f}", f"{script['writes']:.1f}"),
        ("peak memory, operator alone", mb(op["memory_alone"]), "-"),
        ("peak memory, with helm children", mb(op["memory_tree"]),
         f"{mb(script['memory'])} (the script's helm and kubectl)"),
        ("most helm children at once", str(op["helm_at_once"]), "-"),
        ("resync after a restart", f"{op['resync']:.0f} s", "goal: under 60 s"),
        ("  Helm upgrades", f"{op['resync_upgrades']:.0f}", "goal: 0"),
        ("  helm processes", f"{op['resync_helm']:.0f}", "-"),
        ("  new licenses", str(op["resync_licenses"]), "goal: 0"),
        ("  API writes per tenant", f"{op['resync_writes']:.2f}", "goal: at most 1"),
        ("deleting them all", f"{op['delete']:.0f} s",
         f"{script['delete']:.0f} s (the script's namespaces)"),
        ("stopping (SIGTERM)", f"{op['stop']:.1f} s", "goal: within 30 s"),
    ]  # fmt: skip
    print(f"\n{'':40} {'operator':>12}   baseline")
    for label, value, base in rows:
        print(f"{label:40} {value:>12}   {base}")
    print(f"\nwrites by resource, apply:  {op['writes_by_resource']}")
    print(f"writes by resource, resync: {op['resync_writes_by_resource']}")

    goals = [
        ("all Ready within 10 minutes", op["ready"] <= 600),
        (f"within 1.5x of the script ({ratio:.2f}x)", ratio <= 1.5),
        ("operator memory under 250 MB without helm", op["memory_alone"] < 250 * 2**20),
        ("resync under a minute", op["resync"] < 60),
        ("resync: zero Helm upgrades", op["resync_upgrades"] == 0),
        ("resync: zero new licenses", op["resync_licenses"] == 0),
        ("resync: at most one API write per Tenant", op["resync_writes"] <= 1),
        ("deletion within 10 minutes", op["delete"] <= 600),
        ("stops within a Pod's 30 s grace", op["stop"] <= 30),
    ]
    print()
    for goal, met in goals:
        print(f"{'PASS' if met else 'MISS'}  {goal}")


if __name__ == "__main__":
    sys.exit(main())
