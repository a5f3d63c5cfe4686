"""Sharding (operator/sharding.py): which shard handles what, and two shards on the test bed.

The pure part: every Tenant has exactly one shard, its Subscriptions and ApiKeys
have the same, cluster-wide kinds are shard 0's, every handler carries the filter
of its kind, and the chart makes one Deployment per shard. The cluster part runs
two operators as the chart does (shards 0 and 1 of 2, with peering, under the
operator's own ServiceAccount) and checks that together they handle every Tenant
exactly once, each by the shard the predicate names, and delete them all.
"""

from __future__ import annotations

import collections
import json
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from pydantic import ValidationError
from support import (
    API,
    REPO,
    Kube,
    OperatorProcess,
    all_ready,
    dig,
    is_ready,
    license_secret,
    plan,
    service_account_kubeconfig,
    subscription,
    tenant,
    unique_names,
    wait_for,
)
from testbed import free_port

from tenantry.operator import main, sharding
from tenantry.operator.settings import OperatorSettings
from tenantry.operator.sharding import Shard

PER_TENANT: dict[str, Any] = {
    "tenants": sharding.tenants,
    "subscriptions": sharding.tenant_parts,
    "apikeys": sharding.tenant_parts,
}
CLUSTER_WIDE = {"plans", "coupons", "taxrates"}


def memo(shard: Shard) -> kopf.Memo:
    return kopf.Memo(shard=shard)


# ------------------------------------------------------------------ the predicate


def test_every_tenant_has_exactly_one_shard_and_the_shards_share_them() -> None:
    names = [f"tenant-{i}" for i in range(2000)]
    for count in (1, 2, 3, 5):
        shards = [Shard(i, count) for i in range(count)]
        owners = [
            [s.index for s in shards if sharding.tenants(namespace="c", name=n, memo=memo(s))]
            for n in names
        ]
        assert all(len(o) == 1 for o in owners)
        per_shard = collections.Counter(o[0] for o in owners)
        # A fair hash: each shard gets its share, give or take a few percent.
        assert all(abs(c - len(names) / count) < 0.15 * len(names) / count
                   for c in per_shard.values()), per_shard  # fmt: skip
        assert len(per_shard) == count


def test_the_shard_of_a_tenant_is_stable_and_depends_on_its_namespace_and_name() -> None:
    # SHA-256 of "customers/acme": the same in every process and Python version.
    assert sharding.owner("customers", "acme", 1000) == 411
    assert sharding.owner("customers", "acme", 1000) == sharding.owner("customers", "acme", 1000)
    assert len({sharding.owner(ns, "acme", 1 << 30) for ns in ("a", "b", "c", "d")}) == 4


def test_subscriptions_and_apikeys_go_to_their_tenants_shard() -> None:
    for count in (2, 3):
        for i in range(50):
            name = f"acme-{i}"
            part = {"tenantRef": {"name": name}, "planRef": {"name": "pro"}}
            for s in (Shard(k, count) for k in range(count)):
                assert sharding.tenant_parts(namespace="customers", spec=part, memo=memo(s)) == (
                    sharding.tenants(namespace="customers", name=name, memo=memo(s))
                )
    # One naming no Tenant still has one shard (which reports the missing Tenant).
    assert [sharding.tenant_parts(namespace="c", spec={}, memo=memo(Shard(i, 3)))
            for i in range(3)].count(True) == 1  # fmt: skip


def test_cluster_wide_work_is_shard_zeros_and_one_shard_does_everything() -> None:
    assert [sharding.cluster_wide(memo=memo(Shard(i, 3))) for i in range(3)] == [
        True,
        False,
        False,
    ]
    alone = memo(Shard())
    assert sharding.cluster_wide(memo=alone)
    assert sharding.tenants(namespace="x", name="y", memo=alone)
    assert sharding.tenant_parts(namespace="x", spec={"tenantRef": {"name": "y"}}, memo=alone)


def test_each_shard_has_its_own_finalizer_and_peering_and_shard_zero_keeps_the_unsharded_ones(
) -> None:  # fmt: skip
    assert (Shard().finalizer, Shard().peering("tenantry")) == ("tenantry.io/finalizer", "tenantry")
    shards = [Shard(i, 3) for i in range(3)]
    assert [s.finalizer for s in shards] == [
        "tenantry.io/finalizer",
        "tenantry.io/shard-1",
        "tenantry.io/shard-2",
    ]
    assert [s.peering("tenantry") for s in shards] == [
        "tenantry",
        "tenantry-shard-1",
        "tenantry-shard-2",
    ]


def test_finalizers_of_shards_that_no_longer_exist_are_stale() -> None:
    held = ["tenantry.io/finalizer", "tenantry.io/shard-1", "tenantry.io/shard-2",
            "tenantry.io/shard-x", "example.com/other"]  # fmt: skip
    assert Shard(0, 2).stale_finalizers(held) == ["tenantry.io/shard-2", "tenantry.io/shard-x"]
    assert Shard(0, 1).stale_finalizers(held) == [
        "tenantry.io/shard-1",
        "tenantry.io/shard-2",
        "tenantry.io/shard-x",
    ]
    assert Shard(1, 3).stale_finalizers(held) == ["tenantry.io/shard-x"]


def test_a_shard_that_does_not_exist_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="SHARD is 2, but with TENANTRY_OPERATOR_SHARDS=2 "
                       "the shards are numbered 0 to 1"):  # fmt: skip
        OperatorSettings(shard=2, shards=2)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        OperatorSettings(shards=0)
    with pytest.raises(ValueError, match="numbered 0 to 1"):
        Shard(-1, 2)
    assert OperatorSettings(shard=1, shards=2).sharding == Shard(1, 2)
    assert OperatorSettings().sharding == Shard(0, 1)


def test_every_handler_carries_its_kinds_filter() -> None:
    """A handler without the filter would run on every shard: twice the work, or worse."""
    registry = main.build_registry(OperatorSettings(stripe_api_key="sk_test_sharding"))
    kinds: list[tuple[Any, bool]] = [
        (registry._changing, True),
        (registry._spawning, True),
        (registry._watching, False),
        (registry._indexing, False),
    ]
    seen = set()
    for handlers, acts in kinds:
        for handler in handlers.get_all_handlers():
            plural = handler.selector.any_name or handler.selector.plural
            seen.add(plural)
            where = f"{type(handler).__name__} {handler.id} of {plural}"
            if handler.id == "stale-finalizers":
                # The object's shard, and only when there is a finalizer to lift.
                stale, fine = {"finalizers": ["tenantry.io/shard-5"]}, {"finalizers": []}
                obj = {"namespace": "c", "name": "acme", "spec": {"tenantRef": {"name": "acme"}}}
                runs = [handler.when(**obj, meta=stale, memo=memo(Shard(i, 2))) for i in (0, 1)]
                assert runs.count(True) == 1, where
                assert runs.index(True) == sharding.owner("c", "acme", 2), where
                assert not any(
                    handler.when(**obj, meta=fine, memo=memo(Shard(i, 2))) for i in (0, 1)
                ), where
            elif (plural, handler.id) in {("plans", "rollout"), ("tenants", "tenants_by_plan")}:
                # Each Plan's rollout loop runs on shard 0 alone, over all its Tenants.
                assert handler.when is sharding.cluster_wide, where
            elif plural in PER_TENANT:
                assert handler.when is PER_TENANT[plural], where
            elif plural in CLUSTER_WIDE:
                # Every shard reads Plans, Coupons and TaxRates; shard 0 alone writes them.
                assert handler.when is (sharding.cluster_wide if acts else None), where
            else:
                raise AssertionError(f"{where}: a kind sharding does not know")
    assert seen == set(PER_TENANT) | CLUSTER_WIDE


def test_the_chart_makes_one_deployment_per_shard(tools: dict[str, Path]) -> None:
    def deployments(*values: str) -> dict[str, dict[str, Any]]:
        out = subprocess.run(
            [str(tools["helm"]), "template", "t", str(REPO / "charts" / "tenantry"),
             "--kube-version", "1.34.2", "-f", str(REPO / "charts" / "tenantry" / "ci" /
             "test-values.yaml"), *values],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
        return {d["metadata"]["name"]: d for d in docs if "operator" in d["metadata"]["name"]}

    def env(deployment: dict[str, Any]) -> dict[str, str]:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    one = deployments()
    assert list(one) == ["t-tenantry-operator"]
    assert "TENANTRY_OPERATOR_SHARDS" not in env(one["t-tenantry-operator"])

    two = deployments("--set", "operator.shards=2")
    assert sorted(two) == ["t-tenantry-operator-0", "t-tenantry-operator-1"]
    for i in range(2):
        d = two[f"t-tenantry-operator-{i}"]
        assert env(d)["TENANTRY_OPERATOR_SHARDS"] == "2"
        assert env(d)["TENANTRY_OPERATOR_SHARD"] == str(i)
        assert d["spec"]["selector"]["matchLabels"]["tenantry.io/shard"] == str(i)
        assert d["spec"]["template"]["metadata"]["labels"]["tenantry.io/shard"] == str(i)


# ------------------------------------------------------------------- the test bed

SHARDS = 2
PER_SHARD = 3
"""Tenants per shard: enough to show the split, few enough for a 2-core machine."""


def apikey(name: str, namespace: str, tenant_name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ApiKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tenantRef": {"name": tenant_name}},
    }


def tenants_per_shard(control: str, prefix: str) -> dict[int, list[str]]:
    """Tenant names, PER_SHARD for each shard, by the predicate's own hash."""
    chosen: dict[int, list[str]] = {i: [] for i in range(SHARDS)}
    n = 0
    while any(len(names) < PER_SHARD for names in chosen.values()):
        name = f"{prefix}-{n}"
        owner = sharding.owner(control, name, SHARDS)
        if len(chosen[owner]) < PER_SHARD:
            chosen[owner].append(name)
        n += 1
    return chosen


def ref(kind: str, namespace: str, name: str) -> str:
    """How the operator's log names an object (main.ObjectFormatter)."""
    return f"[{kind} {namespace}/{name}]"


@pytest.mark.cluster
def test_two_shards_handle_every_tenant_once_and_delete_them(
    kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    kube.kubectl("apply", "-f", str(REPO / "manifests" / "deploy" / "kopf-peering.yaml"))
    kube.kubectl("wait", "--for", "condition=Established",
                 "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")  # fmt: skip
    restricted = Kube(
        service_account_kubeconfig(kube, "tenantry-operator", tmp_path / "kubeconfig"),
        kube.helm_binary,
    )
    peering = f"shards-{uuid.uuid4().hex[:6]}"
    env = {**operator.env, "TENANTRY_OPERATOR_SHARDS": str(SHARDS)}
    metrics_ports = [free_port() for _ in range(SHARDS)]
    shards = [
        OperatorProcess(
            restricted,
            tmp_path / f"shard-{i}.log",
            {
                **env,
                "TENANTRY_OPERATOR_SHARD": str(i),
                "TENANTRY_OPERATOR_METRICS_PORT": str(metrics_ports[i]),
            },
            args=("--peering", peering),
        )
        for i in range(SHARDS)
    ]
    names = unique_names(kube)
    control, plan_name = names["control"], names["plan"]
    chosen = tenants_per_shard(control, names["tenant"])
    owner_of = {name: i for i, group in chosen.items() for name in group}

    operator.stop()  # the suite's operator would handle them all beside the shards
    try:
        for shard in shards:
            shard.start()
        for i, shard in enumerate(shards):
            wait_for(lambda shard=shard: "Resuming operations" in shard.log_text(),
                     f"shard {i} to act")  # fmt: skip
            assert f"Running as shard {i} of {SHARDS}" in shard.log_text()
            url = f"http://127.0.0.1:{metrics_ports[i]}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                metrics = response.read().decode()
            assert f'tenantry_operator_shard{{shard="{i}",shards="{SHARDS}"}} 1.0' in metrics
        # Each shard is alone in a peering object of its own: neither pauses the other.
        for name in (peering, f"{peering}-shard-1"):
            peers = wait_for(lambda name=name: dig(kube.get("clusterkopfpeering", name), "status"),
                             f"keep-alives in {name}")  # fmt: skip
            assert len(peers) == 1, (name, peers)

        documents = [plan(plan_name)]
        for name in owner_of:
            documents += [
                subscription(name, control, name, plan_name),
                tenant(name, control),
                apikey(name, control, name),
            ]
        kube.apply(*documents)
        everyone = [{**names, "tenant": n, "target": f"tenant-{n}"} for n in owner_of]
        all_ready(kube, everyone, timeout=240)
        for name in owner_of:
            wait_for(lambda name=name: is_ready(kube.get("apikey", name, control)),
                     f"ApiKey {name} to be Ready")  # fmt: skip

        logs = [shard.log_text() for shard in shards]
        for name, owner in owner_of.items():
            expected = Shard(owner, SHARDS).finalizer
            target = f"tenant-{name}"
            # Handled once: one release at revision 1, one license, and only the
            # owner's finalizer on the Tenant and on what belongs to it.
            releases = kube.releases(target, all_states=True)
            assert [(r["name"], r["revision"]) for r in releases] == [("instance", "1")], releases
            assert license_secret(kube, target) is not None
            for kind in ("tenant", "subscription", "apikey"):
                obj = kube.get(kind, name, control)
                assert dig(obj, "metadata", "finalizers") == [expected], (kind, name, obj)
            # ...by the shard the predicate names, and never by the other.
            for kind in ("Tenant", "Subscription", "ApiKey"):
                line = ref(kind, control, name)
                assert line in logs[owner], (line, shards[owner].tail())
                assert line not in logs[1 - owner], (line, shards[1 - owner].tail())
        # The Plan is cluster-wide: shard 0's alone (each shard only nudges its own
        # Tenants when it changes).
        assert is_ready(kube.get("plan", plan_name))
        assert f"[Plan {plan_name}] Handler 'reconcile" in logs[0]
        assert f"[Plan {plan_name}] Handler 'reconcile" not in logs[1]

        # A finalizer left by a shard that no longer exists (the count went down) is
        # lifted by the Tenant's shard; otherwise it would hold the deletion for ever.
        name, owner = next(iter(owner_of.items()))
        own = Shard(owner, SHARDS).finalizer
        stale = {"metadata": {"finalizers": [own, "tenantry.io/shard-5"]}}
        kube.kubectl("patch", "tenant", name, "-n", control, "--type", "merge", "-p",
                     json.dumps(stale))  # fmt: skip
        wait_for(lambda: dig(kube.get("tenant", name, control), "metadata", "finalizers") == [own],
                 "the stale finalizer to be lifted")  # fmt: skip
        assert "Lifted finalizer(s) tenantry.io/shard-5" in shards[owner].log_text()

        for name in owner_of:
            kube.delete("tenant", name, control)
            kube.delete("subscription", name, control)
            kube.delete("apikey", name, control)
        for kind in ("tenant", "subscription", "apikey"):
            wait_for(
                lambda kind=kind: (
                    not json.loads(kube.kubectl("get", kind, "-n", control, "-o", "json"))["items"]
                ),
                f"every {kind} to be gone",
                timeout=180,
            )
        logs = [shard.log_text() for shard in shards]
        for name, owner in owner_of.items():
            line = f"{ref('Tenant', control, name)} Handler 'finalize' succeeded"
            assert line in logs[owner], shards[owner].tail()
            assert line not in logs[1 - owner]
        assert "Forbidden" not in "".join(s.log_text() for s in shards)
    finally:
        for shard in shards:
            shard.stop()
        kube.delete("plan", plan_name)
        operator.start()
