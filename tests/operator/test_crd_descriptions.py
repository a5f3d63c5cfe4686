"""What `kubectl explain` and `kubectl get` show of the generated CRDs: every field
described, and printer columns that read right."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.core.resources import KINDS, Kind, TenantKind
from tenantry.operator import crds


def schema_of(kind: type[Kind]) -> dict[str, Any]:
    schema: dict[str, Any] = crds.crd_manifest(kind)["spec"]["versions"][0]["schema"]
    return schema["openAPIV3Schema"]  # type: ignore[no-any-return]


def undescribed(node: dict[str, Any], path: str) -> list[str]:
    """The paths of the fields under `node` that have no description, as `kubectl explain`
    names them (`spec.meteredPrices.tiers.upTo`)."""
    found = []
    for name, field in (node.get("properties") or {}).items():
        where = f"{path}.{name}"
        if name == "metadata" and path == "":
            continue  # ObjectMeta: the API server describes it
        if not field.get("description", "").strip():
            found.append(where.lstrip("."))
        found += undescribed(field, where)
    # An array's items and a map's values hold fields too.
    for inner in (node.get("items"), node.get("additionalProperties")):
        if isinstance(inner, dict):
            found += undescribed(inner, path)
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description(kind: type[Kind]) -> None:
    missing = undescribed(schema_of(kind), "")
    assert missing == [], (
        f"{kind.kind} fields without a description (add one in core/resources.py, then "
        f"`make crds`): {', '.join(missing)}"
    )


def test_the_walk_reaches_nested_fields_and_array_items() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "description": "d",
                "properties": {
                    "tiers": {
                        "description": "d",
                        "type": "array",
                        "items": {"properties": {"upTo": {"type": "integer"}}},
                    },
                    "limits": {
                        "description": "d",
                        "additionalProperties": {"properties": {"max": {"type": "integer"}}},
                    },
                    "plain": {"type": "string"},
                },
            }
        },
    }
    assert undescribed(schema, "") == ["spec.tiers.upTo", "spec.limits.max", "spec.plain"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_date_columns_show_only_past_times(kind: type[Kind]) -> None:
    # kubectl prints a `date` column as an age: a future time (a license's expiry, a
    # period's end) would read as <invalid>.
    dated = [c["jsonPath"] for c in kind.printer_columns if c["type"] == "date"]
    assert dated in ([], [".metadata.creationTimestamp"])


def test_the_instance_namespace_column_is_not_a_second_namespace() -> None:
    titles = [c["name"].upper() for c in TenantKind.printer_columns]
    assert "NAMESPACE" not in titles  # `kubectl get tenants -A` prints the Tenant's own
    assert "INSTANCE-NAMESPACE" in titles
