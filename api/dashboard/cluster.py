"""What the dashboard reads and writes in Kubernetes beyond the API's adapter
(api/tenants/kube.py): the fleet's LISTs and an ApiKey's `spec.revoked`.

Kubernetes failing (refusing, unreachable, timing out) is the API's own 503
`kubernetes_unavailable`, mapped here once (`kubernetes()`), as the adapter does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx2
from lightkube import AsyncClient, ConfigError
from lightkube.core.exceptions import ApiError as KubeApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from tenantry.api.tenants.kube import kube_unavailable
from tenantry.core.resources import GROUP, VERSION, ApiKeyKind

FIELD_MANAGER = "tenantry-dashboard"
"""The field manager of the dashboard's writes: `kubectl get -o yaml --show-managed-fields`
and the audit trail of a revocation the operator applies (db/audit.py) name it."""

ApiKeyResource = create_namespaced_resource(GROUP, VERSION, ApiKeyKind.kind, ApiKeyKind.plural)


@contextlib.contextmanager
def kubernetes() -> Iterator[None]:
    """lightkube's and its transport's exceptions as the API's 503 (see the adapter's
    `_boundary` for which is which)."""
    try:
        yield
    except KubeApiError as error:
        raise kube_unavailable(f"{error.status.code} {error.status.message}") from error
    except (httpx2.HTTPError, ConfigError) as error:
        raise kube_unavailable(f"{type(error).__name__}: {error}") from error


async def list_all(client: AsyncClient, kind: Any) -> list[dict[str, Any]]:
    """Every object of a namespaced kind, in all namespaces."""
    with kubernetes():
        return [dict(obj) async for obj in client.list(kind, namespace="*")]


async def mark_revoked(client: AsyncClient, namespace: str, name: str, uid: str) -> bool:
    """Set `spec.revoked` on the ApiKey `namespace/name` whose uid is `uid`, as `kubectl
    patch` would; False when that ApiKey is gone (deleted, or replaced by another of its
    name: the uid in the patch is a precondition the API server checks)."""
    with kubernetes():
        try:
            await client.patch(
                ApiKeyResource,
                name,
                {"metadata": {"uid": uid}, "spec": {"revoked": True}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=FIELD_MANAGER,
            )
        except KubeApiError as error:
            if error.status.code == 404 or _other_object(error):
                return False
            raise
    return True


def _other_object(error: KubeApiError) -> bool:
    """The API server's answer to a uid that is not the object's: 422, `metadata.uid`."""
    causes = (error.status.details and error.status.details.causes) or []
    return error.status.code == 422 and any(c.field == "metadata.uid" for c in causes)
