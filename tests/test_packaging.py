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
