"""The one adapter through which the operator changes Kubernetes objects.

Namespaces, license Secrets and nudges; no decisions are made here. API
errors are translated at this edge: a conflict or a server hiccup becomes
`kopf.TemporaryError` ("not yet"), a namespace owned by someone else
becomes `InvalidSpec`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
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
from tenantry.core.resources import GROUP, VERSION, TenantKind
from tenantry.operator.errors import InvalidSpec, NotReady, not_found, retry_later
from tenantry.operator.provisioning import IssuedLicense

FIELD_MANAGER = "tenantry-operator"

Tenant = create_namespaced_resource(GROUP, VERSION, TenantKind.kind, TenantKind.plural)


class Cluster:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

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
        try:
            namespace = await self.client.get(Namespace, name)
        except ApiError as error:
            if not_found(error):
                return None
            raise retry_later(error, f"Reading namespace {name}") from error
        return (namespace.status and namespace.status.phase) or "Active"

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
