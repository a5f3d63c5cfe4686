"""A fleet rollout beside a script doing the same helm upgrades in the same waves.

Starts its own control plane (hack/testbed.py) and a chart repository on
loopback holding versions 1.0.0 and 2.0.0 of a small chart, then, alternating
script and operator for `--rounds` turns (2 by default), each turn on fresh
namespaces:

* script: N releases installed at 1.0.0 (not timed); then, timed, waves of
  `--wave` (10): every release of the wave upgraded to 2.0.0 at once with
  `helm upgrade --version 2.0.0` (its gate: helm said deployed), the next wave
  when the whole wave is through;
* operator: one Plan on 1.0.0 with N Tenants, all Ready (not timed); then,
  timed, the Plan's `chart.version` set to 2.0.0 with `rollout: {canary: 0,
  batchSize: <wave>, pauseSeconds: 0, requireHeartbeat: false}` (the same waves,
  the same gate: no instance runs here to send heartbeats), until the Plan's
  `status.rollout` says Complete and every release is deployed at 2.0.0.

Both sides run the same helm binary with as many processes at once as the
wave holds. The figure is the median time of each side and the ratio. Goal
(the issue's): within 1.5x of the script.

    .venv/bin/python bench/rollout.py [N] [--wave W] [--rounds R]   # N = 100

It loads the machine: run it where nothing else is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "bench"))

from scale import Api, Operator, kubectl, ready, wait  # noqa: E402
from testbed import ChartRepository, ControlPlane, ensure_tools  # noqa: E402

GOAL = 1.5
CHART = "bench-app"
API_GROUP = "tenantry.io/v1alpha1"


def write_chart(root: Path, version: str) -> Path:
    chart = root / version / CHART
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {CHART}\nversion: {version}\n")
    (chart / "templates" / "app.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n"
        "data:\n  version: {{ .Chart.Version | quote }}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n"
        "spec:\n  replicas: 1\n  selector:\n    matchLabels: {app: bench}\n"
        "  template:\n    metadata:\n      labels: {app: bench}\n"
        "    spec:\n      containers:\n        - name: app\n"
        "          image: registry.example/bench:{{ .Chart.Version }}\n"
    )
    return chart


def helm(helm_binary: Path, plane: ControlPlane, *args: str) -> None:
    subprocess.run(
        [str(helm_binary), "--kubeconfig", str(plane.kubeconfig), *args],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


def script_turn(
    plane: ControlPlane, helm_binary: Path, repository: str, count: int, wave: int, turn: int
) -> float:
    names = [f"script-{turn}-{i:03d}" for i in range(count)]
    chart = [CHART, "--repo", repository]

    def install(name: str) -> None:
        helm(helm_binary, plane, "upgrade", "--install", "instance", *chart,
             "--version", "1.0.0", "-n", name, "--create-namespace")  # fmt: skip

    def upgrade(name: str) -> None:
        helm(helm_binary, plane, "upgrade", "instance", *chart, "--version", "2.0.0", "-n", name)

    with ThreadPoolExecutor(wave) as pool:
        list(pool.map(install, names))
        started = time.monotonic()
        for first in range(0, count, wave):
            list(pool.map(upgrade, names[first : first + wave]))
        elapsed = time.monotonic() - started
    kubectl(plane, "delete", "namespace", "--wait=false", *names)
    return elapsed


def plan(name: str, repository: str, version: str, wave: int) -> dict[str, Any]:
    return {
        "apiVersion": API_GROUP,
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {
            "displayName": "Bench",
            "price": {"amount": 100, "currency": "USD"},
            "chart": {"repository": repository, "name": CHART, "version": version},
            "rollout": {
                "canary": 0,
                "batchSize": wave,
                "pauseSeconds": 0,
                "requireHeartbeat": False,
            },
        },
    }


def operator_turn(
    plane: ControlPlane, api: Api, repository: str, count: int, wave: int, turn: int
) -> float:
    name, control = f"bench-{turn}", f"rollout-{turn}"
    kubectl(plane, "create", "namespace", control)
    documents: list[dict[str, Any]] = [plan(name, repository, "1.0.0", wave)]
    for i in range(count):
        tenant = f"r{turn}-{i:03d}"
        documents += [
            {"apiVersion": API_GROUP, "kind": "Subscription",
             "metadata": {"name": tenant, "namespace": control},
             "spec": {"tenantRef": {"name": tenant}, "planRef": {"name": name}}},
            {"apiVersion": API_GROUP, "kind": "Tenant",
             "metadata": {"name": tenant, "namespace": control},
             "spec": {"displayName": tenant, "billingEmail": f"{tenant}@bench.example"}},
        ]  # fmt: skip
    kubectl(plane, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": documents}))  # fmt: skip

    def tenants() -> list[dict[str, Any]]:
        path = f"/apis/tenantry.io/v1alpha1/namespaces/{control}/tenants"
        items: list[dict[str, Any]] = api.get(path)["items"]
        return items

    def on(version: str) -> bool:
        found = tenants()
        return len(found) == count and all(
            ready(t) and (t.get("status") or {}).get("release", {}).get("chartVersion") == version
            for t in found
        )

    wait(lambda: on("1.0.0"), f"{count} Tenants Ready on 1.0.0", 1200)
    started = time.monotonic()
    kubectl(plane, "apply", "-f", "-", input=json.dumps(plan(name, repository, "2.0.0", wave)))

    def complete() -> bool:
        rollout = (api.get(f"/apis/tenantry.io/v1alpha1/plans/{name}").get("status") or {}).get(
            "rollout"
        ) or {}
        if rollout.get("phase") == "Failed":
            raise SystemExit(f"bench: the rollout failed: {rollout.get('message')}")
        return rollout.get("targetVersion") == "2.0.0" and rollout.get("phase") == "Complete"

    wait(lambda: complete() and on("2.0.0"), "the rollout to complete", 1800)
    elapsed = time.monotonic() - started
    kubectl(plane, "delete", "tenants", "--all", "-n", control, "--wait=false")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tenants", type=int, nargs="?", default=100)
    parser.add_argument("--wave", type=int, default=10, help="tenants per wave")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each side")
    args = parser.parse_args()
    count, wave = args.tenants, args.wave
    tools = ensure_tools("etcd", "kube-apiserver", "kube-controller-manager", "helm")
    script: list[float] = []
    operator: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tenantry-rollout-") as tmp:
        root = Path(tmp)
        repository = ChartRepository(root / "repository", tools["helm"]).start()
        for version in ("1.0.0", "2.0.0"):
            repository.add(write_chart(root / "charts", version))
        plane = ControlPlane(root / "cluster").start()
        log = Path(os.environ.get("TENANTRY_BENCH_LOG", root / "operator.log"))
        runner = Operator(plane, tools["helm"], wave, log)
        try:
            kubectl(plane, "apply", "-f", str(REPO / "crds"))
            kubectl(plane, "wait", "--for", "condition=Established", "crd", "--all")
            api = Api(plane)
            runner.start()
            print(f"{count} tenants in waves of {wave}, {args.rounds} turns each, "
                  f"{os.cpu_count()} CPUs")  # fmt: skip
            for turn in range(args.rounds):
                script.append(script_turn(plane, tools["helm"], repository.url, count, wave, turn))
                print(f"  turn {turn}: script {script[-1]:.1f} s", flush=True)
                operator.append(operator_turn(plane, api, repository.url, count, wave, turn))
                print(f"  turn {turn}: operator {operator[-1]:.1f} s", flush=True)
        finally:
            runner.stop()
            plane.stop()
            repository.stop()
    mine, theirs = statistics.median(operator), statistics.median(script)
    ratio = mine / theirs
    print(f"rollout of 2.0.0 to {count} tenants in waves of {wave}:")
    print(f"  script (helm upgrade, wave by wave)  {theirs:7.1f} s   (turns: "
          f"{', '.join(f'{s:.1f}' for s in script)})")  # fmt: skip
    print(f"  operator (Plan chart.version)        {mine:7.1f} s   (turns: "
          f"{', '.join(f'{s:.1f}' for s in operator)})")  # fmt: skip
    print(f"  ratio {ratio:.2f}x (goal within {GOAL}x): {'PASS' if ratio <= GOAL else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
