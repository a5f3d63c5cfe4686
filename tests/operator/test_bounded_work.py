"""The operator's work is bounded and cheap when nothing changed, as a user would check it:
a helm that records every process it runs (set through TENANTRY_OPERATOR_HELM), the
operator's metrics endpoint, and its log.

These tests stop the suite's operator and run one of their own beside the same
control plane, with at most two helm processes and two API requests at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import (
    Kube,
    OperatorProcess,
    all_ready,
    apply_tenants,
    license_secret,
    subscription,
    unique_names,
    wait_for,
)
from testbed import free_port

from tenantry.operator.kube import KOPF_WATCH_STREAMS

pytestmark = pytest.mark.cluster

HELM_LIMIT = 2
KUBE_CONNECTIONS = 2
TENANTS = 6

WRAPPER = """#!/bin/bash
# helm, counted: each process appends "<running now> <pid> <args>" to commands.
# While the file `hold` exists, a process waits before it starts helm.
dir={dir}
echo $$ >> "$dir/pids"
exec 9>>"$dir/lock"
flock 9
running=$(( $(cat "$dir/running" 2>/dev/null || echo 0) + 1 ))
echo $running > "$dir/running"
echo "$running $$ $*" >> "$dir/commands"
flock -u 9
child=
trap '[ -n "$child" ] && kill $child 2>/dev/null; exit 143' TERM INT
while [ -e "$dir/hold" ]; do sleep 0.1 & child=$!; wait $child; done
# In the background (so that TERM reaches it), with stdin kept: values come on it.
{helm} "$@" <&0 & child=$!
wait $child; status=$?
flock 9
echo $(( $(cat "$dir/running") - 1 )) > "$dir/running"
flock -u 9
exit $status
"""


@dataclass
class CountedHelm:
    """What the wrapper saw: every helm command, and how many ran at once."""

    dir: Path

    def commands(self) -> list[tuple[int, int, str]]:
        path = self.dir / "commands"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(n), int(pid), args) for n, pid, args in (line.split(" ", 2) for line in lines)]

    def most_at_once(self) -> int:
        return max((n for n, _, _ in self.commands()), default=0)

    def pids(self) -> list[int]:
        path = self.dir / "pids"
        return [int(p) for p in path.read_text().split()] if path.exists() else []


@dataclass
class Watched:
    process: OperatorProcess
    helm: CountedHelm
    metrics_port: int

    def metrics(self) -> dict[str, float]:
        """Every sample as `name{label="value",...}` -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` that carry `labels`."""
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(
            value
            for key, value in self.metrics().items()
            if key.split("{")[0] == name and all(w in key for w in wanted)
        )


@pytest.fixture(scope="module")
def watched(
    kube: Kube, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watched]:
    """An operator of the module's own with a counted helm, at most HELM_LIMIT at once."""
    counted = tmp_path_factory.mktemp("counted-helm")
    wrapper = counted / "helm"
    wrapper.write_text(WRAPPER.format(dir=counted, helm=kube.helm_binary))
    wrapper.chmod(0o755)
    port = free_port()
    own = OperatorProcess(
        kube,
        counted / "operator.log",
        {
            **operator.env,
            "TENANTRY_OPERATOR_HELM": str(wrapper),
            "TENANTRY_OPERATOR_HELM_CONCURRENCY": str(HELM_LIMIT),
            "TENANTRY_OPERATOR_KUBE_CONNECTIONS": str(KUBE_CONNECTIONS),
            "TENANTRY_OPERATOR_METRICS_PORT": str(port),
        },
    )
    operator.stop()
    try:
        own.start()
        yield Watched(own, CountedHelm(counted), port)
    finally:
        own.stop()
        operator.start()


def test_many_tenants_at_once_never_run_more_helm_than_the_limit(
    kube: Kube, watched: Watched
) -> None:
    tenants = apply_tenants(kube, TENANTS)
    all_ready(kube, tenants)

    installs = [args for _, _, args in watched.helm.commands() if args.startswith("upgrade")]
    assert len(installs) >= TENANTS, installs
    assert watched.helm.most_at_once() <= HELM_LIMIT
    # The chart's metadata is read from its Chart.yaml: no helm asked for it.
    assert not any(args.startswith("show chart") for _, _, args in watched.helm.commands())
    assert watched.metric("tenantry_operator_helm_operations_total", result="ok") >= TENANTS
    assert watched.metric("tenantry_operator_tenants", ready="True") >= TENANTS
    assert watched.metric("tenantry_operator_reconcile_duration_seconds_count", kind="Tenant") > 0
    # Each line about a Tenant names it.
    first = tenants[0]
    assert f"[Tenant {first['control']}/{first['tenant']}]" in watched.process.log_text()


def test_tenant_passes_beyond_twice_the_helm_limit_wait_their_turn(
    kube: Kube, watched: Watched
) -> None:
    hold = watched.helm.dir / "hold"
    hold.touch()
    try:
        tenants = apply_tenants(kube, TENANTS)
        # The cluster is the suite's: other Tenants' passes may wait beside these.
        wait_for(
            lambda: (
                watched.metric("tenantry_operator_helm_operations_in_flight") == HELM_LIMIT
                and watched.metric("tenantry_operator_tenant_passes_waiting", priority="urgent")
                >= TENANTS - 2 * HELM_LIMIT
            ),
            "helm slots taken and the passes beyond the limit waiting",
        )
        assert watched.metric("tenantry_operator_tenant_passes_in_flight") == 2 * HELM_LIMIT
    finally:
        hold.unlink(missing_ok=True)
    # Waiting, not dropped: each comes to its turn.
    all_ready(kube, tenants)


def test_a_burst_of_objects_opens_a_bounded_number_of_connections(
    kube: Kube, watched: Watched
) -> None:
    # A hundred Subscriptions at once: kopf adds its finalizer to each and the operator
    # writes each one's status (its Tenant does not exist), all together.
    names = unique_names(kube)
    count = 100
    server = yaml.safe_load(kube.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    port = urllib.parse.urlsplit(server).port
    assert port is not None
    process = watched.process.process
    assert process is not None
    most, done = 0, threading.Event()

    def sample() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, _connections(process.pid, port))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        kube.apply(*(subscription(f"burst-{i}", names["control"], f"missing-{i}", names["plan"])
                     for i in range(count)))  # fmt: skip
        wait_for(
            lambda: (
                sum(
                    bool(s.get("status", {}).get("conditions"))
                    for s in json.loads(
                        kube.kubectl("get", "subscriptions", "-n", names["control"], "-o", "json")
                    )["items"]
                )
                == count
            ),
            "every Subscription to have its status",
            timeout=120,
        )
    finally:
        done.set()
        sampler.join()
        kube.kubectl("delete", "namespace", names["control"], "--wait=false")
    # The operator's own client, and kopf's requests beside its watch streams.
    bound = KUBE_CONNECTIONS + KUBE_CONNECTIONS + KOPF_WATCH_STREAMS
    assert 0 < most <= bound, f"{most} connections to the API server at once (bound {bound})"


def _connections(pid: int, port: int) -> int:
    """The process's established TCP connections to `port`: its sockets' inodes,
    found in the kernel's table of connections."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            established = fields[3] == "01"
            if established and fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def test_drift_checks_run_no_helm_when_nothing_changed_and_repair_what_did(
    kube: Kube, watched: Watched
) -> None:
    tenants = apply_tenants(kube, 3)
    all_ready(kube, tenants)
    # Settled: the Subscriptions' first status writes have been followed.
    time.sleep(2)
    before = len(watched.helm.commands())
    checked = watched.metric("tenantry_operator_drift_checks_total", result="unchanged")
    wait_for(
        lambda: (
            watched.metric("tenantry_operator_drift_checks_total", result="unchanged")
            >= checked + 2 * len(tenants)
        ),
        "every Tenant to be checked for drift twice",
        timeout=60,
    )
    assert watched.helm.commands()[before:] == [], "helm ran although nothing changed"

    # A deleted Deployment of a release comes back, through helm.
    target = tenants[0]["target"]
    kube.delete("deployment", "instance-customer-instance", target, wait=True)
    wait_for(
        lambda: kube.get("deployment", "instance-customer-instance", target),
        "the release's Deployment to be restored",
        timeout=60,
    )
    assert any(args.startswith("upgrade") for _, _, args in watched.helm.commands()[before:])

    # A deleted license Secret comes back, with no helm at all.
    second = tenants[1]["target"]
    before = len(watched.helm.commands())
    kube.delete("secret", "tenantry-license", second, wait=True)
    wait_for(lambda: license_secret(kube, second), "the license Secret to be restored", 60)
    assert [a for _, _, a in watched.helm.commands()[before:] if "--namespace " + second in a] == []
    # The pass counts itself once it has returned, a moment after its write is visible.
    wait_for(
        lambda: watched.metric("tenantry_operator_drift_checks_total", result="repaired") >= 2,
        "both repairs to be counted",
        timeout=10,
    )


def test_shutdown_cancels_helm_in_flight_within_a_pods_grace(kube: Kube, watched: Watched) -> None:
    hold = watched.helm.dir / "hold"
    hold.touch()
    try:
        pids_before = set(watched.helm.pids())
        apply_tenants(kube, 3)
        wait_for(
            lambda: watched.metric("tenantry_operator_helm_operations_in_flight") >= 1,
            "a helm process to be in flight",
        )
        started = [p for p in watched.helm.pids() if p not in pids_before]
        assert started
        process = watched.process.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)  # Kubernetes' default terminationGracePeriodSeconds
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"the operator was still running 30 s after SIGTERM:\n"
                        f"{watched.process.tail()}")  # fmt: skip
        wait_for(
            lambda: not [p for p in started if _alive(p)],
            "the helm processes of the stopped operator to be gone",
            timeout=5,
        )
    finally:
        hold.unlink(missing_ok=True)
        watched.process.start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
