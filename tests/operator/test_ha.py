"""Two operator replicas, one acting: kopf peering under the operator's own role.

Both run as a user's Deployment would (no --standalone, the peering lifetime
the chart sets, the ServiceAccount of manifests/deploy). The first started acts;
the second pauses. The active one is killed without notice (SIGKILL, no chance
to leave the peering object) and the test measures how long the other takes to
act, and that the hand-over made no second Helm revision or license.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
from support import (
    REPO,
    Kube,
    OperatorProcess,
    dig,
    license_claims,
    provision,
    ready_tenant,
    service_account_kubeconfig,
    subscription,
    tenant,
    unique_names,
    wait_for,
)

pytestmark = pytest.mark.cluster

LIFETIME = 15
"""Seconds a keep-alive counts: the chart's default (operator.peeringLifetime)."""


def replica(kube: Kube, env: dict[str, str], log: Path, peering: str) -> OperatorProcess:
    return OperatorProcess(
        kube,
        log,
        {**env, "TENANTRY_OPERATOR_PEERING_LIFETIME": str(LIFETIME)},
        args=("--peering", peering),
    )


def in_log(process: OperatorProcess, text: str) -> bool:
    return text in process.log_text()


def test_one_replica_acts_and_the_other_takes_over_when_it_is_killed(
    kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    kube.kubectl("apply", "-f", str(REPO / "manifests" / "deploy" / "kopf-peering.yaml"))
    kube.kubectl("wait", "--for", "condition=Established",
                 "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")  # fmt: skip
    restricted = Kube(
        service_account_kubeconfig(kube, "tenantry-operator", tmp_path / "kubeconfig"),
        kube.helm_binary,
    )
    peering = f"ha-{uuid.uuid4().hex[:6]}"
    first = replica(restricted, operator.env, tmp_path / "first.log", peering)
    second = replica(restricted, operator.env, tmp_path / "second.log", peering)

    operator.stop()  # the suite's standalone operator would act beside them
    try:
        first.start()
        wait_for(lambda: in_log(first, "Resuming operations"), "the first replica to act")
        second.start()
        # With mandatory peering a replica starts paused, and resumes only when no
        # live peer outranks it: the second never does while the first lives.
        status = wait_for(
            lambda: (
                len(s := dig(kube.get("clusterkopfpeering", peering), "status") or {}) == 2 and s
            ),
            "both replicas' keep-alives in the peering object",
        )
        assert len({peer["priority"] for peer in status.values()}) == 2, status

        names = unique_names(kube)
        before = provision(kube, names)
        license_id = before["status"]["license"]["id"]
        assert kube.release(names["target"], "instance")["revision"] == "1"
        assert names["tenant"] in first.log_text()
        assert names["tenant"] not in second.log_text(), second.tail()
        assert not in_log(second, "Resuming operations"), second.tail()

        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        killed = time.monotonic()
        wait_for(lambda: in_log(second, "Resuming operations"),
                 "the second replica to take over", timeout=LIFETIME * 3)  # fmt: skip
        resumed = time.monotonic() - killed

        # A Tenant made now is provisioned by the second replica.
        later = {**names, "tenant": f"{names['tenant']}-b", "target": f"{names['target']}-b"}
        kube.apply(
            subscription(later["tenant"], names["control"], later["tenant"], names["plan"]),
            tenant(later["tenant"], names["control"]),
        )
        ready_tenant(kube, later, timeout=LIFETIME * 3)
        provisioned = time.monotonic() - killed
        print(
            f"\nfailover: the standby resumed {resumed:.1f} s after the active replica was "
            f"killed (peering lifetime {LIFETIME} s); a new Tenant was Ready after "
            f"{provisioned:.1f} s"
        )
        assert resumed <= LIFETIME + 5
        assert later["tenant"] in second.log_text()

        # The hand-over redid nothing: the first Tenant was resumed, unchanged.
        wait_for(lambda: in_log(second, names["tenant"]), "the second replica to resume it")
        time.sleep(2)
        after = kube.get("tenant", names["tenant"], names["control"])
        assert dig(after, "status", "license", "id") == license_id
        assert license_claims(kube, names["target"])["jti"] == license_id
        assert kube.release(names["target"], "instance")["revision"] == "1"
        assert kube.release(later["target"], "instance")["revision"] == "1"
        assert "Forbidden" not in second.log_text(), second.tail()
        kube.delete("tenant", later["tenant"], names["control"])
        kube.delete("tenant", names["tenant"], names["control"])
        wait_for(
            lambda: (
                kube.get("tenant", names["tenant"], names["control"]) is None
                and kube.get("tenant", later["tenant"], names["control"]) is None
            ),
            "the Tenants to be gone",
            timeout=60,
        )
    finally:
        first.stop()
        second.stop()
        operator.start()
