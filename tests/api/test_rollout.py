"""Fleet rollouts on the test bed: 30 Tenants moved to a new chart version in waves.

The chart comes from a chart repository on loopback with versions 1.0.0 and
2.0.0. The instances are played by this test, as their SDK would: each sends a
heartbeat to the real API with its own API key once its release runs a new
version, healthy except for the one meant to fail its gate.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from api_harness import ApiServer, secret_key
from support import API, Kube, OperatorProcess, dig, events, is_ready, wait_for
from testbed import ChartRepository

pytestmark = pytest.mark.cluster

CHART = "fleet-app"
COUNT = 30
CANARY = 29  # labelled for the canary wave; the others go in order of name
FAILING = 15  # in wave 2 (tenants 10 to 19)
BEAT = 20.0  # seconds between an instance's heartbeats (the API's timeout is 180 s)


@pytest.fixture(scope="module")
def repository(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartRepository]:
    root = tmp_path_factory.mktemp("fleet-charts")
    served = ChartRepository(root / "repository", kube.helm_binary).start()
    try:
        for version in ("1.0.0", "2.0.0"):
            chart = root / version / CHART
            (chart / "templates").mkdir(parents=True)
            (chart / "Chart.yaml").write_text(
                yaml.safe_dump({"apiVersion": "v2", "name": CHART, "version": version})
            )
            (chart / "templates" / "configmap.yaml").write_text(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n"
                "data:\n  version: {{ .Chart.Version | quote }}\n"
            )
            served.add(chart)
        yield served
    finally:
        served.stop()


class Fleet:
    """30 Tenants of one Plan in one control namespace, and their instances."""

    def __init__(self, kube: Kube, control: str, plan: str, api: ApiServer, suffix: str) -> None:
        self.kube, self.control, self.plan, self.api = kube, control, plan, api
        self.names = [f"fleet-{suffix}-{i:02d}" for i in range(COUNT)]
        self.keys: dict[str, str] = {}
        self.reported: dict[str, str] = {}  # the version each instance last reported
        self.stopping = threading.Event()

    def tenants(self) -> dict[str, dict[str, Any]]:
        listed = json.loads(self.kube.kubectl("get", "tenants", "-n", self.control, "-o", "json"))
        return {t["metadata"]["name"]: t for t in listed["items"]}

    def running(self) -> dict[str, str | None]:
        """The version each Tenant's release is deployed at."""
        return {
            name: dig(t, "status", "release", "chartVersion")
            if dig(t, "status", "release", "status") == "deployed"
            else None
            for name, t in self.tenants().items()
        }

    def rollout(self) -> dict[str, Any]:
        return dig(self.kube.get("plan", self.plan), "status", "rollout") or {}

    def instances(self) -> None:
        """Each instance beats as the SDK does: at once when it comes to run another
        version, and every BEAT seconds (a silent one turns InstanceHealthy False, which
        fails a rollout too); the failing one, on 2.0.0, says it is unhealthy. Until
        `stopping` is set."""
        beaten: dict[str, float] = {}
        with httpx.Client(base_url=self.api.url, timeout=10) as client:
            while not self.stopping.is_set():
                for name, version in self.running().items():
                    if name not in self.keys or version is None:
                        continue
                    due = beaten.get(name, 0.0) + BEAT <= time.monotonic()
                    if self.reported.get(name) == version and not due:
                        continue
                    failing = name == self.names[FAILING] and version == "2.0.0"
                    answer = client.post(
                        "/v1/instance/heartbeat",
                        headers={"Authorization": f"Bearer {self.keys[name]}"},
                        json={"version": version, "health": "unhealthy" if failing else "healthy"},
                    )
                    assert answer.status_code == 202, answer.text
                    self.reported[name], beaten[name] = version, time.monotonic()
                time.sleep(0.3)


def set_plan(kube: Kube, plan: str, repository: str, version: str, paused: bool) -> None:
    annotations = {"tenantry.io/rollout-paused": "true"} if paused else {}
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": plan, "annotations": annotations},
            "spec": {
                "displayName": "Fleet",
                "price": {"amount": 4900, "currency": "USD", "interval": "month"},
                "chart": {"repository": repository, "name": CHART, "version": version},
                "rollout": {
                    "canary": 1,
                    "batchSize": 10,
                    "pauseSeconds": 3,
                    "gateTimeoutSeconds": 120,
                },
            },
        }
    )


def test_a_new_version_rolls_out_in_waves_stops_at_a_failed_gate_and_rolls_it_back(
    kube: Kube, operator: OperatorProcess, api_server: ApiServer, repository: ChartRepository,
) -> None:  # fmt: skip
    suffix = uuid.uuid4().hex[:6]
    control, plan = f"fleet-{suffix}", f"fleet-{suffix}"
    kube.kubectl("create", "namespace", control)
    set_plan(kube, plan, repository.url, "1.0.0", paused=False)
    fleet = Fleet(kube, control, plan, api_server, suffix)
    documents: list[dict[str, Any]] = []
    for i, name in enumerate(fleet.names):
        labels = {"tenantry.io/canary": "true"} if i == CANARY else {}
        documents += [
            {"apiVersion": API, "kind": "Tenant",
             "metadata": {"name": name, "namespace": control, "labels": labels},
             "spec": {"displayName": name, "billingEmail": f"billing@{name}.example"}},
            {"apiVersion": API, "kind": "Subscription",
             "metadata": {"name": name, "namespace": control},
             "spec": {"tenantRef": {"name": name}, "planRef": {"name": plan}}},
            {"apiVersion": API, "kind": "ApiKey",
             "metadata": {"name": f"{name}-instance", "namespace": control},
             "spec": {"tenantRef": {"name": name}}},
        ]  # fmt: skip
    # One more, pinned to 1.0.0: left alone, and not counted.
    pinned = f"fleet-{suffix}-pinned"
    documents += [
        {"apiVersion": API, "kind": "Tenant",
         "metadata": {"name": pinned, "namespace": control},
         "spec": {"displayName": pinned, "billingEmail": f"billing@{pinned}.example",
                  "chartVersion": "1.0.0"}},
        {"apiVersion": API, "kind": "Subscription",
         "metadata": {"name": pinned, "namespace": control},
         "spec": {"tenantRef": {"name": pinned}, "planRef": {"name": plan}}},
    ]  # fmt: skip
    kube.apply(*documents)
    wait_for(
        lambda: (
            all(is_ready(t) for t in fleet.tenants().values())
            and set(fleet.running().values()) == {"1.0.0"}
        ),
        "31 Tenants Ready on 1.0.0",
        timeout=240,
    )
    for name in fleet.names:
        key = wait_for(
            lambda n=name: dig(kube.get("apikey", f"{n}-instance", control), "status", "secretRef"),
            f"the instance key of {name}",
        )
        fleet.keys[name] = secret_key(kube, *key.split("/"))
    instances = threading.Thread(target=fleet.instances, daemon=True)
    instances.start()
    try:
        # Paused from the start: the new version is announced, nobody moves.
        set_plan(kube, plan, repository.url, "2.0.0", paused=True)
        paused = wait_for(lambda: (r := fleet.rollout()).get("phase") == "Paused" and r,
                          "the rollout to show Paused")  # fmt: skip
        assert (paused["targetVersion"], paused["previousVersion"]) == ("2.0.0", "1.0.0")
        time.sleep(3)
        assert set(fleet.running().values()) == {"1.0.0"}, "a paused rollout moved a Tenant"
        assert not any("tenantry.io/rollout" in (t["metadata"].get("annotations") or {})
                       for t in fleet.tenants().values())  # fmt: skip

        # Resumed: the labelled canary first, alone.
        set_plan(kube, plan, repository.url, "2.0.0", paused=False)
        wait_for(lambda: fleet.running()[fleet.names[CANARY]] == "2.0.0", "the canary on 2.0.0")
        assert sum(v == "2.0.0" for v in fleet.running().values()) == 1

        # Paused between two waves: the next wave waits for the resume.
        wait_for(lambda: fleet.rollout().get("phase") == "Waiting", "the canary wave to pass")
        set_plan(kube, plan, repository.url, "2.0.0", paused=True)
        wait_for(lambda: fleet.rollout().get("phase") == "Paused", "the pause between waves")
        time.sleep(4)  # past the 3 s between waves
        assert sum(v == "2.0.0" for v in fleet.running().values()) == 1
        set_plan(kube, plan, repository.url, "2.0.0", paused=False)

        failed = wait_for(lambda: (r := fleet.rollout()).get("phase") == "Failed" and r,
                          "the rollout to fail at wave 2", timeout=240)  # fmt: skip
        bad = fleet.names[FAILING]
        assert failed["failedTenants"] == [f"{control}/{bad}"]
        assert failed["currentWave"] == 2
        assert "not healthy after the move" in failed["message"]
        # The failed tenant goes back to 1.0.0; the rest of its wave and the waves
        # before stay on 2.0.0; the waves after were never started.
        moved = {fleet.names[CANARY], *fleet.names[:20]} - {bad}
        expected = {name: "2.0.0" if name in moved else "1.0.0" for name in fleet.names}
        expected[pinned] = "1.0.0"
        wait_for(lambda: fleet.running() == expected, "the failed tenant rolled back to 1.0.0",
                 timeout=60)  # fmt: skip
        final = fleet.rollout()
        assert (final["updated"], final["failed"], final["pending"]) == (20, 1, 9)
        assert "1 pinned left alone" in final["message"]
        printed = kube.kubectl("get", "plan", plan).splitlines()
        assert printed[0].split()[-6:] == ["VERSION", "ROLLOUT", "UPDATED", "PENDING", "FAILED",
                                           "AGE"]  # fmt: skip
        assert printed[1].split()[-6:-1] == ["2.0.0", "Failed", "20", "9", "1"]
        told = " | ".join(e["message"] for e in events(kube, "default", "Plan", plan))
        for story in ("Started the rollout of 2.0.0", "Paused the rollout", "Resumed the rollout",
                      "Moved the canary wave to 2.0.0", "Wave 1 passed its gate",
                      "Failed the rollout of 2.0.0"):  # fmt: skip
            assert story in told, f"no Event says {story!r}: {told}"

        # Failed is final until the Plan names another version.
        time.sleep(2)
        assert fleet.running() == expected, "a failed rollout moved someone else"
    finally:
        fleet.stopping.set()
        instances.join(timeout=10)
        # 30 Tenants' timers would load the operator the later tests share.
        kube.kubectl("delete", "tenants", "--all", "-n", control, "--wait=false")
