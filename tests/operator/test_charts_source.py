"""Which chart a Tenant runs, the chart cache, suspension's scaling, the values contract.

The decisions are tested as plain data; the cache pulls with the real helm from
a chart repository on loopback (no cluster needed).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pyhelm3 import Command
from pyhelm3 import errors as helm_errors
from testbed import ChartRepository

from tenantry.core.resources import ChartSpec, PlanSpec, SubscriptionSpec, TenantSpec
from tenantry.operator.charts_source import (
    ChartCache,
    ChartNotFound,
    ChartRef,
    ChartUnavailable,
    backoff,
    chart_ref,
    pull_failure,
)
from tenantry.operator.errors import InvalidSpec
from tenantry.operator.helm import schema_refusal
from tenantry.operator.provisioning import Chart, SubscriptionView, desired_state
from tenantry.operator.settings import OperatorSettings
from tenantry.operator.suspension import Scale, Workload, scaling

BUNDLED = OperatorSettings().chart_path
REPO = "https://charts.example.com"


def plan(**chart: Any) -> PlanSpec:
    return PlanSpec.model_validate(
        {
            "displayName": "Pro",
            "price": {"amount": 9900, "currency": "USD"},
            "features": {"sso": True},
            "limits": {"devices": 50},
            "chart": chart,
        }
    )


# ------------------------------------------------------------ the Plan's chart


def test_a_plan_without_a_chart_runs_the_bundled_one() -> None:
    assert plan().chart == ChartSpec()
    assert chart_ref("pro", plan().chart, None, BUNDLED) == ChartRef("bundled", str(BUNDLED))


@pytest.mark.parametrize(
    ("chart", "message"),
    [
        ({"oci": "oci://r.example/charts/app", "path": "/charts/app"}, "name one source"),
        ({"oci": "oci://r.example/charts/app"}, "chart.oci needs chart.version"),
        ({"repository": REPO, "version": "1.0.0"}, "chart.name goes with chart.repository"),
        ({"oci": "r.example/charts/app", "version": "1.0.0"}, "is no OCI reference"),
        ({"oci": "oci://r.example/charts/app", "version": "latest"}, "not an exact chart"),
        ({"repository": REPO, "name": "app", "version": "^1.2"}, "not an exact chart"),
        ({"path": "charts/app"}, "must be absolute"),
        ({"version": "1.0.0"}, "needs a source"),
    ],
)
def test_a_chart_block_names_one_source_and_an_exact_version(
    chart: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        plan(**chart)


def test_a_tenant_pins_a_version_of_a_remote_chart_only() -> None:
    oci = plan(oci="oci://r.example/charts/app", version="2.0.0").chart
    assert chart_ref("pro", oci, None, BUNDLED).version == "2.0.0"
    assert chart_ref("pro", oci, "1.0.0", BUNDLED) == ChartRef(
        "oci", "oci://r.example/charts/app", version="1.0.0"
    )
    repo = plan(repository=REPO + "/", name="app", version="v2.0.0").chart
    pinned = chart_ref("pro", repo, "1.9.0-rc.1", BUNDLED)
    assert (pinned.source, pinned.version) == (f"{REPO} app", "1.9.0-rc.1")
    with pytest.raises(InvalidSpec, match=r"spec\.chartVersion: Plan pro runs the bundled chart"):
        chart_ref("pro", plan().chart, "1.0.0", BUNDLED)
    with pytest.raises(ValidationError, match="chartVersion 'stable' is not an exact"):
        TenantSpec.model_validate(
            {"displayName": "A", "billingEmail": "a@b.example", "chartVersion": "stable"}
        )


def test_helm_failures_are_missing_charts_or_unreachable_sources() -> None:
    ref = ChartRef("repository", REPO, "app", "9.9.9")
    missing = pull_failure(
        ref, f'Error: chart "app" version "9.9.9" not found in {REPO} repository\n', 5
    )
    assert isinstance(missing, ChartNotFound)
    assert missing.reason == "ChartNotFound"
    assert missing.message.startswith(f"Chart {REPO} app 9.9.9 does not exist")
    down = pull_failure(
        ChartRef("oci", "oci://127.0.0.1:9/charts/app", version="1.0.0"),
        'Error: failed to perform "FetchReference" on source: Get "http://127.0.0.1:9/v2/'
        'charts/app/manifests/1.0.0": dial tcp 127.0.0.1:9: connect: connection refused',
        20,
    )
    assert isinstance(down, ChartUnavailable)
    assert down.message.endswith("trying again in 20 s.")
    assert [backoff(n) for n in (1, 2, 3, 7, 20)] == [5, 10, 20, 300, 300]


def test_helms_schema_refusal_is_kept_whole() -> None:
    error = helm_errors.Error(
        1,
        b"",
        b"Error: values don't meet the specifications of the schema(s) in the following "
        b"chart(s):\nbyo-app:\n- at '/replicaCount': got string, want integer\n",
    )
    assert schema_refusal(error) == (
        "values don't meet the specifications of the schema(s) in the following chart(s): "
        "byo-app: - at '/replicaCount': got string, want integer"
    )
    assert schema_refusal(helm_errors.Error(1, b"", b"Error: etcdserver: timeout")) is None


# ---------------------------------------------------------- the values contract


def test_the_contract_is_one_key_over_the_plans_and_the_tenants_values(tmp_path: Path) -> None:
    chart = write_chart(tmp_path, "1.0.0")
    spec = TenantSpec.model_validate(
        {"displayName": "Acme", "billingEmail": "b@acme.example", "values": {"b": 2}}
    )
    subscription = SubscriptionView(
        name="acme",
        spec=SubscriptionSpec.model_validate(
            {"tenantRef": {"name": "acme"}, "planRef": {"name": "pro"}}
        ),
    )
    pro = plan(path=str(chart), values={"a": 1, "b": 1})
    desired = desired_state(
        tenant_id="uid-1",
        tenant_name="acme",
        tenant_namespace_prefix="tenant-",
        spec=spec,
        subscription=subscription,
        plans={"pro": pro},
        chart=Chart.load(chart),
        license_secret="tenantry-license",
        api_url="http://api.example:8000",
        key_secret="instance-key",
    )
    assert desired.values == {
        "a": 1,
        "b": 2,
        "tenantry": {
            "tenant": {
                "id": "uid-1",
                "name": "acme",
                "displayName": "Acme",
                "namespace": "tenant-acme",
            },
            "plan": {
                "name": "pro",
                "displayName": "Pro",
                "features": {"sso": True},
                "limits": {"devices": 50},
            },
            "license": {
                "secretName": "tenantry-license",
                "key": "license.jwt",
                "jwksKey": "jwks.json",
            },
            "api": {
                "url": "http://api.example:8000",
                "keySecretName": "instance-key",
                "keySecretKey": "api-key",
            },
            "suspended": False,
        },
    }
    with pytest.raises(
        InvalidSpec, match=r"Plan pro sets spec\.chart\.values\.tenantry"
    ) as refused:
        desired_state(
            tenant_id="uid-1",
            tenant_name="acme",
            tenant_namespace_prefix="tenant-",
            spec=spec,
            subscription=subscription,
            plans={"pro": plan(values={"tenantry": {}})},
            chart=Chart.load(chart),
            license_secret="tenantry-license",
        )
    assert refused.value.reason == "InvalidPlan"


def test_the_sample_chart_accepts_the_whole_contract() -> None:
    Chart.load(BUNDLED).validate({"tenantry": _contract()})
    contract = {**_contract(), "suspended": "yes"}
    with pytest.raises(InvalidSpec, match=r"spec\.values\.tenantry\.suspended: 'yes' is not of"):
        Chart.load(BUNDLED).validate({"tenantry": contract})


def _contract() -> dict[str, Any]:
    return {
        "tenant": {"id": "u", "name": "acme", "displayName": "Acme", "namespace": "t-acme"},
        "plan": {"name": "pro", "displayName": "Pro", "features": {}, "limits": {"d": -1}},
        "license": {"secretName": "l", "key": "license.jwt", "jwksKey": "jwks.json"},
        "api": {"url": "", "keySecretName": "k", "keySecretKey": "api-key"},
        "suspended": True,
    }


# ------------------------------------------------------------------ suspension


def test_suspension_scales_running_workloads_to_zero_and_remembers_them() -> None:
    workloads = [
        Workload("Deployment", "web", 3, None),
        Workload("StatefulSet", "db", 1, None),
        Workload("Deployment", "honours-suspended", 0, None),  # the chart scaled it itself
        Workload("Deployment", "reset-by-helm", 2, 5),  # an upgrade put its count back
    ]
    assert scaling(workloads, suspended=True) == [
        Scale("Deployment", "web", 0, 3),
        Scale("StatefulSet", "db", 0, 1),
        Scale("Deployment", "reset-by-helm", 0, 2),
    ]


def test_resume_restores_what_suspension_remembered_and_nothing_else() -> None:
    workloads = [
        Workload("Deployment", "web", 0, 3),
        Workload("StatefulSet", "db", 0, 1),
        Workload("Deployment", "scaled-by-hand", 4, 3),
        Workload("Deployment", "never-touched", 0, None),
    ]
    assert scaling(workloads, suspended=False) == [
        Scale("Deployment", "web", 3, None),
        Scale("StatefulSet", "db", 1, None),
        Scale("Deployment", "scaled-by-hand", 4, None),
    ]
    assert scaling([Workload("Deployment", "web", 2, None)], suspended=False) == []


# ------------------------------------------------------------------ the cache


def write_chart(root: Path, version: str) -> Path:
    chart = root / version / "cached-app"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "cached-app", "version": version})
    )
    (chart / "values.yaml").write_text("greeting: hi\n")
    return chart


class CountingCommand(Command):
    """pyhelm3's own runner with the real helm, counting pulls."""

    pulls = 0

    async def run(self, command: list[str], input: bytes | None = None) -> bytes:
        if command and command[0] == "pull":
            self.pulls += 1
        output: bytes = await super().run(command, input)
        return output


def test_concurrent_callers_pull_once_and_a_restart_pulls_nothing(
    tools: dict[str, Path], tmp_path: Path
) -> None:
    repository = ChartRepository(tmp_path / "repository", tools["helm"]).start()
    try:
        package = repository.add(write_chart(tmp_path, "1.0.0"))
        digest = "sha256:" + hashlib.sha256(package.read_bytes()).hexdigest()
        ref = ChartRef("repository", repository.url, "cached-app", "1.0.0")
        cache_dir = tmp_path / "cache"

        async def resolve_together(command: CountingCommand) -> list[Chart]:
            cache = ChartCache(command, cache_dir, Chart.load(BUNDLED))
            return await asyncio.gather(*(cache.resolve(ref) for _ in range(8)))

        first = CountingCommand(executable=str(tools["helm"]))
        charts = asyncio.run(resolve_together(first))
        assert first.pulls == 1
        assert {(c.name, c.version, c.digest) for c in charts} == {("cached-app", "1.0.0", digest)}
        assert charts[0].path == cache_dir / digest.replace(":", "-") / "cached-app"
        assert charts[0].defaults == {"greeting": "hi"}

        restarted = CountingCommand(executable=str(tools["helm"]))
        again = asyncio.run(resolve_together(restarted))
        assert restarted.pulls == 0
        assert again[0].digest == digest

        async def missing_twice(command: CountingCommand) -> None:
            cache = ChartCache(command, cache_dir, Chart.load(BUNDLED))
            for _ in range(2):  # the second within the backoff: no second pull
                with pytest.raises(ChartNotFound, match="does not exist"):
                    await cache.resolve(
                        ChartRef("repository", repository.url, "cached-app", "9.0.0")
                    )

        missing = CountingCommand(executable=str(tools["helm"]))
        asyncio.run(missing_twice(missing))
        assert missing.pulls == 1
    finally:
        repository.stop()
