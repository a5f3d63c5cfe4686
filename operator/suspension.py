"""Suspension for charts that ignore `tenantry.suspended`: workloads scaled to zero.

A chart that honours the values contract scales itself to zero when
`tenantry.suspended` is true, and finds nothing here to do. For one that
does not, a suspended instance's namespace has its Deployments and
StatefulSets scaled to zero by the operator, each remembering its replica
count in an annotation; on resume each gets that count back and loses the
annotation. `scaling` decides, without I/O; `Workloads` lists and patches.

A helm upgrade while suspended may put a chart's replica count back: the same
pass scales it down again and remembers the new count. A workload someone
scaled up by hand while suspended keeps that count on resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.types import PatchType

from tenantry.operator.errors import retry_later

REPLICAS_ANNOTATION = "tenantry.io/replicas-before-suspension"
"""On a workload the operator scaled to zero: its replica count before."""

Kind = Literal["Deployment", "StatefulSet"]
_KINDS: dict[Kind, type[Deployment] | type[StatefulSet]] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
}


@dataclass(frozen=True)
class Workload:
    kind: Kind
    name: str
    replicas: int
    remembered: int | None  # the annotation's count, when the operator scaled it down


@dataclass(frozen=True)
class Scale:
    """Set `replicas`; remember `remember` in the annotation (None: remove it)."""

    kind: Kind
    name: str
    replicas: int
    remember: int | None


def scaling(workloads: Iterable[Workload], suspended: bool) -> list[Scale]:
    """What to change so that a suspended namespace runs nothing, and a resumed one runs
    what it ran before."""
    if suspended:
        return [Scale(w.kind, w.name, 0, w.replicas) for w in workloads if w.replicas > 0]
    return [
        Scale(w.kind, w.name, w.remembered if w.replicas == 0 else w.replicas, None)
        for w in workloads
        if w.remembered is not None
    ]


class Workloads:
    """The Deployments and StatefulSets of an instance namespace."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def scale(self, namespace: str, suspended: bool) -> list[Scale]:
        """Scale the namespace's workloads down or back; what changed."""
        changes = scaling(await self._list(namespace), suspended)
        for change in changes:
            patch = {
                "metadata": {
                    "annotations": {
                        REPLICAS_ANNOTATION: None
                        if change.remember is None
                        else str(change.remember)
                    }
                },
                "spec": {"replicas": change.replicas},
            }
            try:
                await self.client.patch(
                    _KINDS[change.kind],
                    change.name,
                    patch,
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
            except ApiError as error:
                raise retry_later(
                    error, f"Scaling {change.kind} {namespace}/{change.name}"
                ) from error
        return changes

    async def _list(self, namespace: str) -> list[Workload]:
        found = []
        for kind, resource in _KINDS.items():
            try:
                async for item in self.client.list(resource, namespace=namespace):
                    metadata, spec = item.metadata, item.spec
                    assert metadata is not None
                    assert spec is not None
                    remembered = str((metadata.annotations or {}).get(REPLICAS_ANNOTATION, ""))
                    found.append(
                        Workload(
                            kind=kind,
                            name=metadata.name or "",
                            replicas=1 if spec.replicas is None else spec.replicas,
                            remembered=int(remembered) if remembered.isdigit() else None,
                        )
                    )
            except ApiError as error:
                raise retry_later(error, f"Listing {kind}s in {namespace}") from error
        return found
