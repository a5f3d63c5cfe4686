"""What `pip install tenantry` ships: every package folder of the source tree."""

from __future__ import annotations

import tomllib

from support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def source_packages() -> set[str]:
    """`tenantry.*` names of every folder holding Python modules under a mapped root."""
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        root = REPO / folder
        for module in root.rglob("*.py"):
            if "__pycache__" in module.parts:
                continue
            relative = module.parent.relative_to(root).parts
            found.add(".".join((package, *relative)))
    return found


def test_every_package_folder_is_shipped() -> None:
    missing = source_packages() - set(SETUPTOOLS["packages"])
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_shipped_package_exists() -> None:
    assert set(SETUPTOOLS["packages"]) <= source_packages()


def test_migrations_are_package_data() -> None:
    migrations = REPO / SETUPTOOLS["package-dir"]["tenantry.db"] / "migrations"
    assert list(migrations.glob("*.sql"))
    assert "*.sql" in SETUPTOOLS["package-data"]["*"]


def test_the_customer_instance_chart_is_package_data() -> None:
    """A pip-installed operator finds the chart inside its package, without CHART_PATH:
    operator/charts/customer-instance links to charts/customer-instance, and every file
    of it matches a package-data pattern of tenantry.operator."""
    import fnmatch

    operator = REPO / SETUPTOOLS["package-dir"]["tenantry.operator"]
    link = operator / "charts" / "customer-instance"
    assert link.resolve() == (REPO / "charts" / "customer-instance").resolve()
    patterns = SETUPTOOLS["package-data"]["tenantry.operator"]
    files = [p.relative_to(operator).as_posix() for p in link.rglob("*") if p.is_file()]
    assert "charts/customer-instance/Chart.yaml" in files
    unshipped = [f for f in files if not any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    assert not unshipped, f"add to tenantry.operator's package-data: {unshipped}"
