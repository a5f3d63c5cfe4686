"""The API's one adapter to Kubernetes: Tenants, Plans, Secrets, the Tenant usage summary."""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import httpx2
from lightkube import AsyncClient, ConfigError
from lightkube.core.exceptions import ApiError as KubeApiError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from tenantry.api.errors import Unavailable
from tenantry.core.resources import GROUP, VERSION, PlanKind, SubscriptionKind, TenantKind

FIELD_MANAGER = "tenantry-api"

TenantResource = create_namespaced_resource(GROUP, VERSION, TenantKind.kind, TenantKind.plural)
PlanResource = create_global_resource(GROUP, VERSION, PlanKind.kind, PlanKind.plural)
SubscriptionResource = create_namespaced_resource(
    GROUP, VERSION, SubscriptionKind.kind, SubscriptionKind.plural
)


P = ParamSpec("P")
R = TypeVar("R")


def _boundary(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Kubernetes failing (refusing, unreachable, timing out) is the service unavailable.

    Callers see the service's own 503 with Retry-After, never lightkube's or
    its transport's exceptions (which would be a bare 500). lightkube 1.x talks
    over httpx2, not httpx: a refused connection or a DNS failure is
    `httpx2.ConnectError`, a timeout `httpx2.TimeoutException`, a proxy's
    non-JSON error page `httpx2.HTTPStatusError`, all `httpx2.HTTPError`;
    the API server's own refusals are lightkube's `ApiError` (itself an
    `httpx2.HTTPStatusError`, so caught first), and credentials that cannot be
    read or refreshed (a token file, an exec plugin) its `ConfigError`.
    """

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except KubeApiError as error:
            raise kube_unavailable(f"{error.status.code} {error.status.message}") from error
        except (httpx2.HTTPError, ConfigError) as error:
            raise kube_unavailable(f"{type(error).__name__}: {error}") from error

    return call


def kube_unavailable(reason: str) -> Unavailable:
    return Unavailable(
        f"Kubernetes could not be read or written ({reason}); retry shortly.",
        code="kubernetes_unavailable",
        details={"reason": reason},
        headers={"Retry-After": "1"},
    )


class Kube:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    @_boundary
    async def tenant(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.get(TenantResource, name, namespace=namespace)
        except KubeApiError as error:
            if error.status.code == 404:
                return None
            raise
        return dict(obj)

    @_boundary
    async def plan(self, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.get(PlanResource, name)
        except KubeApiError as error:
            if error.status.code == 404:
                return None
            raise
        return dict(obj)

    @_boundary
    async def plans(self) -> list[dict[str, Any]]:
        return [dict(plan) async for plan in self.client.list(PlanResource)]

    @_boundary
    async def secret(
        self, namespace: str, name: str
    ) -> tuple[dict[str, str], dict[str, str]] | None:
        """A Secret's entries (decoded) and annotations; None when it does not exist."""
        try:
            secret = await self.client.get(Secret, name, namespace=namespace)
        except KubeApiError as error:
            if error.status.code == 404:
                return None
            raise
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        return data, dict((secret.metadata and secret.metadata.annotations) or {})

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = await self.secret(namespace, name)
        return None if found is None else found[0]

    @_boundary
    async def patch_tenant_usage(self, namespace: str, name: str, usage: dict[str, Any]) -> None:
        """Merge-patch `status.usage` only: the operator owns the rest of the status."""
        await self.client.patch(
            TenantResource.Status,
            name,
            {"status": {"usage": usage}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=FIELD_MANAGER,
        )

    @_boundary
    async def create(self, kind: type[Any], body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Tenant or Subscription (`TenantResource`, `SubscriptionResource`) from its
        manifest; None when one of that name exists already."""
        try:  # the namespace is the manifest's
            made = await self.client.create(kind(body), field_manager=FIELD_MANAGER)
        except KubeApiError as error:
            if error.status.code == 409:
                return None
            raise
        return dict(made)

    @_boundary
    async def delete_tenant(self, namespace: str, name: str) -> None:
        try:
            await self.client.delete(TenantResource, name, namespace=namespace)
        except KubeApiError as error:
            if error.status.code != 404:
                raise

    @_boundary
    async def patch_subscription_spec(
        self, namespace: str, name: str, spec: dict[str, Any]
    ) -> bool:
        """Merge-patch a Subscription's spec; False when it does not exist."""
        try:
            await self.client.patch(
                SubscriptionResource,
                name,
                {"spec": spec},
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=FIELD_MANAGER,
            )
        except KubeApiError as error:
            if error.status.code == 404:
                return False
            raise
        return True

    async def close(self) -> None:
        await self.client.close()
