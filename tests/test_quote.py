"""`tenantry quote`: a Plan from a manifest or the cluster, priced as the reference prices it.

Most runs call `tenantry.cli.main` in-process (the same code the entry point
runs, minus a new interpreter); a few run `.venv/bin/tenantry` to prove the
entry point. The independent reference and the plan strategies are the ones
of tests/core/test_pricing.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REPO, Kube

from tenantry.cli import main
from tenantry.core.money import plain
from tenantry.core.resources import PlanSpec

TENANTRY = str(REPO / ".venv" / "bin" / "tenantry")


def _load_pricing_tests() -> Any:
    path = Path(__file__).parent / "core" / "test_pricing.py"
    spec = importlib.util.spec_from_file_location("pricing_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pricing = _load_pricing_tests()

PLAN: dict[str, Any] = {
    "apiVersion": "tenantry.io/v1alpha1",
    "kind": "Plan",
    "metadata": {"name": "professional"},
    "spec": {
        "displayName": "Professional",
        "price": {"amount": 9900, "currency": "USD", "interval": "month"},
        "metrics": [
            {"name": "messages"},
            {"name": "devices", "aggregation": "max"},
            {"name": "storage_gb", "aggregation": "latest"},
            {"name": "exports", "aggregation": "count"},
            {"name": "users", "aggregation": "unique_count", "field": "user"},
        ],
        "meteredPrices": [
            {
                "metric": "messages",
                "model": "graduated",
                "tiers": [
                    {"upTo": 100, "unitAmount": "10"},
                    {"upTo": 500, "unitAmount": "5", "flatAmount": 100},
                    {"unitAmount": "0.000000000001", "flatAmount": 1000},
                ],
            },
            {
                "metric": "devices",
                "model": "volume",
                "tiers": [{"upTo": 10, "unitAmount": "500"}, {"unitAmount": "400"}],
            },
            {"metric": "storage_gb", "allowance": 10, "unitAmount": "12.5"},
            {"metric": "exports", "model": "package", "packageSize": 100, "packageAmount": 250},
        ],
    },
}


def write(path: Path, *documents: Any) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def tenantry(*args: str) -> tuple[int, str, str]:
    """`tenantry ARGS` in-process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as exit:  # argparse's own usage errors
            status = int(exit.code or 0)
    return status, out.getvalue(), err.getvalue()


def usage_args(usage: dict[str, int | Decimal]) -> list[str]:
    return [
        arg
        for metric, qty in usage.items()
        for arg in ("--usage", f"{metric}={plain(Decimal(qty))}")
    ]


def assert_matches_reference(
    answer: dict[str, Any], name: str, plan: PlanSpec, usage: dict[str, int | Decimal]
) -> None:
    expected = pricing.reference_quote(plan, usage)
    assert (answer["plan"], answer["currency"]) == (name, plan.price.currency)
    assert [
        (line["metric"], Fraction(line["billable"]), Fraction(line["unrounded"]), line["amount"],
         tuple((t["tier"], Fraction(t["units"])) for t in line["tiers"]))
        for line in answer["lines"]
    ] == expected["lines"]  # fmt: skip
    quantities = [Fraction(line["quantity"]) for line in answer["lines"][1:]]
    assert quantities == [Fraction(usage.get(p.metric, 0)) for p in plan.metered_prices]
    assert answer["total"] == expected["total"]


# ------------------------------------------------------------------ from a file


def test_readable_quote_shows_each_line_and_its_tiers(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.yaml", PLAN)
    status, out, err = tenantry(
        "quote", "--plan", str(plan), "--usage", "messages=500", "--usage", "devices=12",
        "--usage", "storage_gb=37", "--usage", "exports=250",
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert "Plan professional (Professional): one full month in USD" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["base", "fee", "1", "1", "99.00"] in lines
    assert ["messages", "500", "500", "31.00", "graduated"] in lines
    assert "    tier 1: 100 × 0.10 = 10.00" in out
    assert "    tier 2: 400 × 0.05 = 20.00 + flat 1.00" in out
    assert ["devices", "12", "12", "48.00", "volume"] in lines
    assert "    tier 2: 12 × 4.00 = 48.00" in out
    assert ["storage_gb", "37", "27", "3.38", "per_unit,", "allowance", "10"] in lines
    assert "    27 × 0.125 = 3.375" in out
    assert "    3 × package of 100 at 2.50 = 7.50" in out
    assert ["total", "188.88", "USD"] in lines


def test_readable_quote_keeps_every_exact_digit_of_a_tiny_price(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.yaml", PLAN)
    status, out, _ = tenantry("quote", "--plan", str(plan), "--usage", "messages=1000000000000000")
    assert status == 0
    assert "    tier 3: 999,999,999,999,500 × 0.00000000000001 = 9.999999999995 + flat 10.00" in out


def test_json_quote_is_one_object_with_the_exact_figures(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.yaml", PLAN)
    status, out, _ = tenantry(
        "quote", "--plan", str(plan), "--usage", "messages=501", "--usage", "storage_gb=10.5",
        "--json",
    )  # fmt: skip
    assert status == 0
    answer = json.loads(out)
    assert answer["lines"][0] == {
        "metric": None, "quantity": "1", "billable": "1", "amount": 9900, "unrounded": "9900",
        "tiers": [],
    }  # fmt: skip
    messages = answer["lines"][1]
    assert (messages["amount"], messages["unrounded"]) == (4100, "4100.000000000001")
    assert messages["tiers"][2] == {
        "tier": 3, "upTo": None, "units": "1", "unitAmount": "0.000000000001",
        "flatAmount": 1000, "amount": "1000.000000000001",
    }  # fmt: skip
    assert answer["lines"][3]["billable"] == "0.5"
    assert answer["total"] == 9900 + 4100 + 0 + 6 + 0
    usage: dict[str, int | Decimal] = {"messages": 501, "storage_gb": Decimal("10.5")}
    assert_matches_reference(answer, "professional", PlanSpec.model_validate(PLAN["spec"]), usage)


def test_a_file_with_other_kinds_beside_one_plan(tmp_path: Path) -> None:
    tenant = {"apiVersion": "tenantry.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "a"}}
    plan = write(tmp_path / "all.yaml", tenant, PLAN, None)
    status, out, _ = tenantry("quote", "--plan", str(plan), "--json")
    assert (status, json.loads(out)["total"]) == (0, 9900)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plans")


@settings(max_examples=200, deadline=None)
@given(case=pricing.plans(), data=st.data())
def test_json_quotes_of_random_plans_match_the_reference(
    plan_dir: Path, case: PlanSpec, data: st.DataObject
) -> None:
    manifest = {
        "apiVersion": "tenantry.io/v1alpha1", "kind": "Plan", "metadata": {"name": "random"},
        "spec": case.to_wire(),
    }  # fmt: skip
    path = write(plan_dir / "random.yaml", manifest)
    for _ in range(8):
        usage = {
            price.metric: data.draw(pricing.quantities(price))
            for price in case.metered_prices
            if data.draw(st.integers(0, 5))
        }
        status, out, err = tenantry("quote", "--plan", str(path), *usage_args(usage), "--json")
        assert (status, err) == (0, "")
        assert_matches_reference(json.loads(out), "random", case, usage)


def test_the_entry_point(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.yaml", PLAN)
    run = subprocess.run(
        [TENANTRY, "quote", "--plan", str(plan), "--usage", "messages=501", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (run.returncode, run.stderr) == (0, "")
    usage: dict[str, int | Decimal] = {"messages": 501}
    assert_matches_reference(
        json.loads(run.stdout), "professional", PlanSpec.model_validate(PLAN["spec"]), usage
    )
    run = subprocess.run(
        [TENANTRY, "quote", "--plan", str(plan), "--usage", "users=3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith("tenantry quote: plan 'professional' has no metered price")


# ------------------------------------------------------------------- the errors


def broken(**spec: Any) -> dict[str, Any]:
    return {**PLAN, "spec": {**PLAN["spec"], **spec}}


FILE_ERRORS: list[tuple[str, Any, str]] = [
    ("not-yaml", "spec: [unclosed\n", "is not valid YAML: "),
    ("not-utf8", b"\xff\xfe\x00kind: Plan", "cannot read "),
    ("no-plan", [{"kind": "Tenant"}], "holds no Plan: give a manifest with a `kind: Plan`"),
    ("two-plans", [PLAN, {**PLAN, "metadata": {"name": "b"}}], "holds 2 Plans (professional, b)"),
    ("api-version", [{**PLAN, "apiVersion": "v1"}], "Plan professional has apiVersion 'v1'; write"),
    ("no-name", [{**PLAN, "metadata": {}}], "the Plan has no metadata.name: add one"),
    ("no-spec", [{**PLAN, "spec": None}], "Plan professional has no spec"),
    (
        "tiers-descending",
        [
            broken(
                meteredPrices=[
                    {
                        "metric": "messages",
                        "model": "graduated",
                        "tiers": [{"upTo": 50}, {"upTo": 10}, {}],
                    }
                ]
            )
        ],
        "Plan professional is invalid: spec.meteredPrices[0]: meteredPrices[messages]: tiers "
        "must have strictly ascending upTo values",
    ),
    (
        "bad-unit-amount",
        [broken(meteredPrices=[{"metric": "messages", "unitAmount": "1e-3"}])],
        "Plan professional is invalid: spec.meteredPrices[0].unitAmount: String should match",
    ),
    (
        "two-problems",
        [broken(price={"currency": "usd"})],
        "invalid: spec.price.amount: Field required; spec.price.currency: String should match",
    ),
]


@pytest.mark.parametrize(
    ("content", "message"),
    [pytest.param(content, message, id=name) for name, content, message in FILE_ERRORS],
)
def test_a_bad_plan_file_is_one_line_and_exit_1(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "plan.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        write(path, *content)
    status, out, err = tenantry("quote", "--plan", str(path), "--usage", "messages=1")
    assert (status, out) == (1, "")
    assert err.startswith("tenantry quote: ")
    assert err.count("\n") == 1, err
    assert message in err


def test_a_directory_or_a_missing_file(tmp_path: Path) -> None:
    status, _, err = tenantry("quote", "--plan", str(tmp_path))
    assert (status, err) == (1, f"tenantry quote: {tmp_path} is not a file: give a Plan manifest "
                                "or a Plan's name\n")  # fmt: skip
    missing = str(tmp_path / "plan.yaml")
    status, _, err = tenantry("quote", "--plan", missing)
    assert (status, err) == (2, f"tenantry quote: cannot read {missing}: no such file\n")


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        ("messages=abc", "--usage 'messages=abc': the quantity must be a number ≥ 0 such as 1000"),
        ("messages=-5", "--usage 'messages=-5': the quantity must be a number ≥ 0"),
        ("messages=1e3", "the quantity must be a number ≥ 0 such as 1000 or 2.5, not '1e3'"),
        ("messages", "--usage 'messages': write METRIC=QTY, e.g. messages=1000"),
        ("=5", "--usage '=5': write METRIC=QTY"),
        (
            "users=1",
            "plan 'professional' has no metered price for 'users': it prices messages, "
            "devices, storage_gb, exports; fix --usage",
        ),
        ("storage=1", "has no metered price for 'storage'"),
        (f"messages={'9' * 70}", "too many digits to price exactly: give quantities up to 10^15"),
        ("storage_gb=1." + "1" * 70, "too many digits to price exactly"),
    ],
)
def test_a_bad_usage_is_one_line_and_exit_2(tmp_path: Path, usage: str, message: str) -> None:
    plan = write(tmp_path / "plan.yaml", PLAN)
    status, out, err = tenantry("quote", "--plan", str(plan), "--usage", usage)
    assert (status, out) == (2, "")
    assert err.startswith("tenantry quote: ")
    assert err.count("\n") == 1, err
    assert message in err


def test_a_metric_given_twice(tmp_path: Path) -> None:
    plan = write(tmp_path / "plan.yaml", PLAN)
    status, _, err = tenantry(
        "quote", "--plan", str(plan), "--usage", "devices=1", "--usage", "devices=2"
    )
    assert (status, err) == (2, "tenantry quote: --usage names 'devices' twice: give each "
                                "metric once\n")  # fmt: skip


def test_no_kubernetes_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    status, _, err = tenantry("quote", "--plan", "professional")
    assert status == 1
    assert err.startswith("tenantry quote: no Kubernetes configuration to read Plan professional")
    assert err.endswith("set KUBECONFIG, or give a Plan manifest file\n")


def test_an_unreachable_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kubeconfig = write(tmp_path / "kubeconfig", {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    })  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    status, _, err = tenantry("quote", "--plan", "professional")
    assert status == 1
    assert err.startswith(
        "tenantry quote: cannot reach Kubernetes at https://127.0.0.1:1 to read Plan professional"
    )
    assert err.endswith("check KUBECONFIG and the cluster, or give a Plan manifest file\n")


# ------------------------------------------------------------- from the cluster


@pytest.mark.cluster
def test_a_plan_by_name_from_the_cluster(kube: Kube, tmp_path: Path) -> None:
    name = "quote-professional"
    kube.apply({**PLAN, "metadata": {"name": name}})
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    usage = ["--usage", "messages=501", "--usage", "devices=11", "--json"]
    run = subprocess.run(
        [TENANTRY, "quote", "--plan", name, *usage],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (run.returncode, run.stderr) == (0, "")
    from_file = write(tmp_path / "plan.yaml", {**PLAN, "metadata": {"name": name}})
    assert json.loads(run.stdout) == json.loads(
        tenantry("quote", "--plan", str(from_file), *usage)[1]
    )

    run = subprocess.run(
        [TENANTRY, "quote", "--plan", "no-such-plan"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "tenantry quote: no file no-such-plan here and no Plan no-such-plan in the cluster: "
        "`kubectl get plans` lists the Plans\n"
    )
