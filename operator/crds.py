"""Render CustomResourceDefinitions from the typed models in `resources`.

Kubernetes wants a *structural* OpenAPI v3 schema: every `$ref` inlined, no
`anyOf` with null, no `additionalProperties: false` beside `properties`.
`structural_schema` turns pydantic's JSON Schema into that; the CRDs are never
edited by hand (`make crds`, and CI fails when the committed files differ).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tenantry.core.resources import GROUP, KINDS, VERSION, Kind

_DROPPED_KEYS = {"title", "$defs", "examples"}


def structural_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline references and drop what a structural schema may not hold."""
    definitions = schema.get("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node:
            target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
            # The field's own description wins over the model's docstring.
            node = {**target, **node}
        if "allOf" in node and len(node["allOf"]) == 1:
            node = {**convert(node.pop("allOf")[0]), **node}
        if "anyOf" in node:
            branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express a union in a CRD schema: {branches}")
            node = {**convert(branches[0]), **node}
            if node.get("default", ...) is None:
                del node["default"]
        if "patternProperties" in node:
            # Structural schemas have no patternProperties: the values' schema
            # goes to additionalProperties, the key pattern to a CEL rule.
            [(pattern, values)] = node.pop("patternProperties").items()
            node.pop("propertyNames", None)
            node["additionalProperties"] = values
            node["maxProperties"] = 128  # bounds the rule's cost, as the API server requires
            node["x-kubernetes-validations"] = [
                {
                    "rule": f"self.all(k, k.matches({json.dumps(pattern)}))",
                    "message": f"keys must match {pattern} (e.g. ota_updates)",
                }
            ]
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        if node.get("additionalProperties") is True or (
            node.get("type") == "object"
            and not ("properties" in node or "additionalProperties" in node)
        ):
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
        if node.get("type") == "integer":
            node.setdefault("format", "int64")
        return {
            key: value if key in ("enum", "default") else convert(value)
            for key, value in node.items()
            if key not in _DROPPED_KEYS
        }

    return convert(schema)  # type: ignore[no-any-return]


def _model_schema(model: type[Any]) -> dict[str, Any]:
    return structural_schema(model.model_json_schema(by_alias=True, mode="serialization"))


def crd_manifest(kind: type[Kind]) -> dict[str, Any]:
    spec_schema = _model_schema(kind.spec)
    status_schema = _model_schema(kind.status)
    # kopf keeps its progress in annotations (see operator settings); this
    # room only guards against a handler result being pruned in silence.
    status_schema["properties"]["kopf"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "Bookkeeping of the operator framework.",
    }
    spec_schema["description"] = (kind.spec.__doc__ or f"Desired state of the {kind.kind}.").strip()
    status_schema["description"] = f"Observed state of the {kind.kind}, written by Tenantry."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["tenantry"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"A Tenantry {kind.kind}.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": f"Always `{GROUP}/{VERSION}`.",
                                },
                                "kind": {"type": "string", "description": f"Always `{kind.kind}`."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: type[Kind]) -> str:
    header = "# Generated by `make crds` from core/resources.py. Do not edit.\n"
    return header + yaml.safe_dump(crd_manifest(kind), sort_keys=False, width=100)


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = directory / f"{GROUP}_{kind.plural}.yaml"
        path.write_text(render(kind))
        written.append(path)
    return written


def stale(directory: Path) -> list[Path]:
    """The CRD files that differ from what the models render (or are missing)."""
    return [
        directory / f"{GROUP}_{kind.plural}.yaml"
        for kind in KINDS
        if not (path := directory / f"{GROUP}_{kind.plural}.yaml").exists()
        or path.read_text() != render(kind)
    ]
