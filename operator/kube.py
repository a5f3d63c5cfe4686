"""The one adapter through which the operator changes Kubernetes objects.

Namespaces, license Secrets and nudges; no decisions are made here. API
errors are translated at this edge: a conflict or a server hiccup becomes
`kopf.TemporaryError` ("not yet"), a namespace owned by someone else
becomes `InvalidSpec`.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import kopf
import yaml
from lightkube import AsyncClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.core.exceptions import ApiError, LoadResourceError
from lightkube.core.generic_client import GenericAsyncClient
from lightkube.core.resource import NamespacedResource
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

from tenantry import license as lic
from tenantry.core.names import (
    EXPIRES_AT_ANNOTATION,
    ISSUED_AT_ANNOTATION,
    JWKS_ENTRY,
    LICENSE_ENTRY,
    LICENSE_ID_ANNOTATION,
    LICENSE_TERMS_ANNOTATION,
    MANAGED_BY,
    PLAN_ANNOTATION,
    RECONCILE_CAUSE_ANNOTATION,
    REVOKED_LICENSE_ANNOTATION,
    TENANT_LABEL,
    TENANT_NAMESPACE_LABEL,
)
from tenantry.core.resources import GROUP, VERSION, PlanKind, TenantKind
from tenantry.operator.errors import InvalidSpec, NotReady, not_found, retry_later
from tenantry.operator.provisioning import IssuedLicense

FIELD_MANAGER = "tenantry-operator"

Tenant = create_namespaced_resource(GROUP, VERSION, TenantKind.kind, TenantKind.plural)
Plan = create_global_resource(GROUP, VERSION, PlanKind.kind, PlanKind.plural)


@dataclass
class _PooledConnection(ConnectionParams):
    """lightkube's connection parameters, with the pool's size (passed on to httpx2)."""

    limits: httpx2.Limits | None = None


def client(*, connections: int, timeout: float, field_manager: str = FIELD_MANAGER) -> AsyncClient:
    """A client of the API server from $KUBECONFIG or the service account, with a pool
    of `connections`: requests beyond them queue for a connection, within `timeout`."""
    pooled = AsyncClient.__new__(AsyncClient)
    pooled._timeout = httpx2.Timeout(timeout)
    pooled._client = GenericAsyncClient(
        _PooledConnection(
            timeout=pooled._timeout,
            limits=httpx2.Limits(
                max_connections=connections, max_keepalive_connections=connections
            ),
        ),
        None,
        lazy=True,
        field_manager=field_manager,
    )
    return pooled


# Room for kopf's watch streams, one per watched kind (the operator watches about ten:
# its own kinds, CRDs for kopf's scanning, the peering object), beside its requests.
KOPF_WATCH_STREAMS = 16


def kopf_session(info: kopf.ConnectionInfo, *, connections: int) -> kopf.AiohttpSession:
    """kopf's session to the API server, as kopf builds it but with its connections bounded.

    kopf's own has no bound: a thousand objects arriving at once open a connection for
    each patch in flight (120 of them at 300 Tenants, 0.3 MB each). Beyond
    `connections` requests (and the watch streams), a request waits for a free one.
    """
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=connections + KOPF_WATCH_STREAMS, ssl=info.as_ssl_context()
        ),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None


@dataclass(frozen=True)
class ReleaseRecord:
    """What helm recorded about a release's latest revision, in its own Secret."""

    name: str
    revision: int
    status: str  # deployed, failed, pending-install, pending-upgrade...
    chart_name: str
    chart_version: str
    values: dict[str, Any]  # as given to helm (`helm get values`)
    objects: tuple[ObjectRef, ...]  # what the manifest holds
    hooks: int = 0  # hooks of the chart (a pre-delete hook runs on `helm uninstall` only)

    def confined_to(self, namespace: str) -> bool:
        """Whether deleting `namespace` removes everything of the release: every object
        is of a namespaced kind, in it, and no hook waits for an uninstall."""
        if self.hooks:
            return False
        for ref in self.objects:
            try:
                kind = resource_registry.load(ref.api_version, ref.kind)
            except (LoadResourceError, AttributeError, ValueError):
                return False  # a kind this client does not know: let helm remove it
            if not issubclass(kind, NamespacedResource) or ref.namespace != namespace:
                return False
        return True


def _decode_release(data: str, namespace: str) -> ReleaseRecord:
    raw = base64.b64decode(base64.b64decode(data))
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    release = json.loads(raw)
    objects = []
    for document in yaml.load_all(release.get("manifest") or "", Loader=yaml.CSafeLoader):
        if not isinstance(document, dict) or "kind" not in document:
            continue
        metadata = document.get("metadata") or {}
        objects.append(
            ObjectRef(
                document.get("apiVersion", ""),
                document["kind"],
                metadata.get("name", ""),
                metadata.get("namespace", namespace),
            )
        )
    chart = (release.get("chart") or {}).get("metadata") or {}
    return ReleaseRecord(
        name=release["name"],
        revision=int(release["version"]),
        status=(release.get("info") or {}).get("status", "unknown"),
        chart_name=chart.get("name", ""),
        chart_version=chart.get("version", ""),
        values=release.get("config") or {},
        objects=tuple(objects),
        hooks=len(release.get("hooks") or ()),
    )


class Cluster:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._records: dict[str, tuple[str, str, ReleaseRecord]] = {}  # by Secret uid

    async def release_record(self, namespace: str, name: str) -> ReleaseRecord | None:
        """The latest revision of release `name`, read from helm's own Secrets (labels
        `owner=helm,name=NAME`), or None when there is none; no helm process runs."""
        try:
            latest = None
            async for secret in self.client.list(
                Secret, namespace=namespace, labels={"owner": "helm", "name": name}
            ):
                version = int(
                    ((secret.metadata and secret.metadata.labels) or {}).get("version", 0)
                )
                if latest is None or version > latest[0]:
                    latest = (version, secret)
        except ApiError as error:
            if not_found(error):
                return None
            raise retry_later(error, f"Listing the release Secrets in {namespace}") from error
        if latest is None:
            return None
        secret = latest[1]
        assert secret.metadata is not None
        # Decoded once per Secret version: a drift check of an unchanged release parses nothing.
        uid, seen = secret.metadata.uid or "", secret.metadata.resourceVersion or ""
        cached = self._records.get(uid)
        if cached is None or cached[0] != seen:
            record = _decode_release((secret.data or {}).get("release", ""), namespace)
            cached = self._records[uid] = (seen, namespace, record)
        return cached[2]

    def forget_records(self, namespace: str) -> None:
        """Drop what was decoded of the releases in `namespace` (its Tenant is gone)."""
        self._records = {k: v for k, v in self._records.items() if v[1] != namespace}

    async def missing(self, objects: Sequence[ObjectRef]) -> list[ObjectRef]:
        """The objects that do not exist (kinds this client does not know are not checked)."""
        gone = []
        for ref in objects:
            try:
                kind = resource_registry.load(ref.api_version, ref.kind)
            except (LoadResourceError, AttributeError, ValueError):
                continue
            try:
                await self.client.get(kind, ref.name, namespace=ref.namespace)  # type: ignore[type-var]
            except ApiError as error:
                if not not_found(error):
                    raise retry_later(
                        error, f"Reading {ref.kind} {ref.namespace}/{ref.name}"
                    ) from error
                gone.append(ref)
        return gone

    async def ensure_namespace(self, name: str, tenant_namespace: str, tenant_name: str) -> bool:
        """Create the tenant's namespace if missing; True when this call created it."""
        try:
            existing = await self.client.get(Namespace, name)
        except ApiError as error:
            if not not_found(error):
                raise retry_later(error, f"Reading namespace {name}") from error
            existing = None
        if existing is not None:
            labels = (existing.metadata and existing.metadata.labels) or {}
            owner = (labels.get(TENANT_NAMESPACE_LABEL), labels.get(TENANT_LABEL))
            if owner != (tenant_namespace, tenant_name):
                whose = (
                    f"Tenant {owner[0]}/{owner[1]}" if owner[1] else "something other than Tenantry"
                )
                raise InvalidSpec(
                    f"spec.namespace: namespace {name} already exists and belongs to {whose}; "
                    "choose another spec.namespace.",
                    reason="NamespaceConflict",
                )
            if existing.status and existing.status.phase == "Terminating":
                raise NotReady(
                    "NamespaceTerminating",
                    f"Namespace {name} is still being deleted; it is re-created once it is gone.",
                )
            return False
        namespace = Namespace(
            metadata=ObjectMeta(
                name=name,
                labels={
                    **MANAGED_BY,
                    TENANT_LABEL: tenant_name,
                    TENANT_NAMESPACE_LABEL: tenant_namespace,
                },
            )
        )
        try:
            await self.client.create(namespace, field_manager=FIELD_MANAGER)
        except ApiError as error:
            raise retry_later(error, f"Creating namespace {name}") from error
        return True

    async def read_license(self, namespace: str, name: str) -> IssuedLicense | None:
        """What the license Secret's annotations say, or None when it is missing or unreadable."""
        try:
            secret = await self.client.get(Secret, name, namespace=namespace)
        except ApiError as error:
            if not_found(error):
                return None
            raise retry_later(error, f"Reading Secret {namespace}/{name}") from error
        annotations = (secret.metadata and secret.metadata.annotations) or {}
        encoded = (secret.data or {}).get(LICENSE_ENTRY)
        if not encoded:
            return None
        try:
            return IssuedLicense(
                license_id=annotations[LICENSE_ID_ANNOTATION],
                fingerprint=annotations[LICENSE_TERMS_ANNOTATION],
                issued_at=dt.datetime.fromisoformat(annotations[ISSUED_AT_ANNOTATION]),
                expires_at=dt.datetime.fromisoformat(annotations[EXPIRES_AT_ANNOTATION]),
                plan=annotations[PLAN_ANNOTATION],
                token_sha256=lic.sha256_token(base64.b64decode(encoded).decode()),
            )
        except (KeyError, ValueError):
            return None  # hand-edited: replace it with a license we can vouch for

    async def write_license(
        self,
        namespace: str,
        name: str,
        token: str,
        jwks: dict[str, Any],
        issued: IssuedLicense,
        tenant_name: str,
    ) -> None:
        secret = Secret(
            metadata=ObjectMeta(
                name=name,
                namespace=namespace,
                labels={**MANAGED_BY, TENANT_LABEL: tenant_name},
                annotations={
                    LICENSE_ID_ANNOTATION: issued.license_id,
                    LICENSE_TERMS_ANNOTATION: issued.fingerprint,
                    ISSUED_AT_ANNOTATION: issued.issued_at.isoformat(),
                    EXPIRES_AT_ANNOTATION: issued.expires_at.isoformat(),
                    PLAN_ANNOTATION: issued.plan,
                },
            ),
            type="Opaque",
            stringData={LICENSE_ENTRY: token, JWKS_ENTRY: json.dumps(jwks, sort_keys=True)},
        )
        try:
            await self.client.apply(secret, field_manager=FIELD_MANAGER, force=True)
        except ApiError as error:
            raise retry_later(error, f"Writing Secret {namespace}/{name}") from error

    async def clear_license(self, namespace: str, name: str, revoked_id: str) -> None:
        """Take the (revoked) token out of the Secret; the instance falls back to unlicensed."""
        patch = {
            "data": {LICENSE_ENTRY: None},
            "metadata": {
                "annotations": {
                    LICENSE_ID_ANNOTATION: None,
                    LICENSE_TERMS_ANNOTATION: None,
                    REVOKED_LICENSE_ANNOTATION: revoked_id,
                }
            },
        }
        try:
            await self.client.patch(
                Secret, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as error:
            if not not_found(error):
                raise retry_later(error, f"Clearing Secret {namespace}/{name}") from error

    async def namespace_phase(self, name: str) -> str | None:
        """`Active`, `Terminating`, or None when the namespace is gone."""
        state = await self.namespace_state(name)
        return state[0] if state else None

    async def namespace_state(self, name: str) -> tuple[str, tuple[str, str] | None] | None:
        """The namespace's phase and the Tenant it belongs to, as (namespace, name) from
        its labels (None when it is no Tenant's); None when the namespace is gone."""
        try:
            namespace = await self.client.get(Namespace, name)
        except ApiError as error:
            if not_found(error):
                return None
            raise retry_later(error, f"Reading namespace {name}") from error
        labels = (namespace.metadata and namespace.metadata.labels) or {}
        tenant_namespace, tenant = labels.get(TENANT_NAMESPACE_LABEL), labels.get(TENANT_LABEL)
        owner = (tenant_namespace, tenant) if tenant_namespace and tenant else None
        return (namespace.status and namespace.status.phase) or "Active", owner

    async def delete_namespace(self, name: str, tenant_namespace: str, tenant_name: str) -> bool:
        """Delete the namespace if, and only if, it is this Tenant's; True while it still exists."""
        try:
            namespace = await self.client.get(Namespace, name)
        except ApiError as error:
            if not_found(error):
                return False
            raise retry_later(error, f"Reading namespace {name}") from error
        labels = (namespace.metadata and namespace.metadata.labels) or {}
        if (labels.get(TENANT_NAMESPACE_LABEL), labels.get(TENANT_LABEL)) != (
            tenant_namespace,
            tenant_name,
        ):
            return False
        if namespace.metadata and namespace.metadata.deletionTimestamp:
            return True
        try:
            await self.client.delete(Namespace, name)
        except ApiError as error:
            if not_found(error):
                return False
            raise retry_later(error, f"Deleting namespace {name}") from error
        return True

    async def nudge_tenant(self, namespace: str, name: str, cause: str) -> None:
        """Make the Tenant's handlers run now (a Plan or Subscription it uses changed)."""
        patch = {"metadata": {"annotations": {RECONCILE_CAUSE_ANNOTATION: cause}}}
        try:
            await self.client.patch(
                Tenant, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as error:
            if not not_found(error):
                raise retry_later(error, f"Nudging Tenant {namespace}/{name}") from error

    async def annotate_tenant(self, namespace: str, name: str, key: str, value: str) -> bool:
        """Set one annotation of a Tenant; False when the Tenant is gone."""
        patch = {"metadata": {"annotations": {key: value}}}
        try:
            await self.client.patch(
                Tenant, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as error:
            if not_found(error):
                return False
            raise retry_later(error, f"Annotating Tenant {namespace}/{name}") from error
        return True

    async def patch_plan_status(self, name: str, status: dict[str, Any]) -> None:
        """Merge `status` into a Plan's status (fields not named are left as they are)."""
        try:
            await self.client.patch(
                Plan.Status, name, {"status": status}, patch_type=PatchType.MERGE
            )
        except ApiError as error:
            if not not_found(error):
                raise retry_later(error, f"Writing the status of Plan {name}") from error
