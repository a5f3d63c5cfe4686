"""The names both processes agree on: labels, annotations, Secret and ConfigMap entries.

The operator writes these objects and the API reads them (and a customer
instance mounts some): a name spelled once here cannot drift between them.
"""

from __future__ import annotations

from typing import Final

_A: Final = "tenantry.io/"

# ------------------------------------------------------------------ labels

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "tenantry"}
TENANT_LABEL: Final = _A + "tenant"
"""On a tenant's namespace and license Secret: the Tenant's name."""
TENANT_NAMESPACE_LABEL: Final = _A + "tenant-namespace"
"""On a tenant's namespace: the namespace of the Tenant object that owns it."""
APIKEY_UID_LABEL: Final = _A + "apikey-uid"
"""On an API key's Secret: the uid of the ApiKey that wrote it."""
SIGNUP_LABEL: Final = {_A + "signup": "true"}
"""On a Tenant and Subscription that `POST /v1/signup` made."""
SIGNING_KEYS_LABEL: Final = {_A + "signing-keys": "true"}
REVOCATIONS_LABEL: Final = {_A + "revocations": "true"}
PUBLIC_KEYS_LABEL: Final = {_A + "public-keys": "true"}

# ------------------------------------------------------------- annotations

LICENSE_ID_ANNOTATION: Final = _A + "license-id"
LICENSE_TERMS_ANNOTATION: Final = _A + "terms-sha256"
"""The fingerprint of the terms a license grants: a change re-issues it."""
PLAN_ANNOTATION: Final = _A + "plan"
ISSUED_AT_ANNOTATION: Final = _A + "issued-at"
EXPIRES_AT_ANNOTATION: Final = _A + "expires-at"
REVOKED_LICENSE_ANNOTATION: Final = _A + "revoked-license-id"
REVOKE_LICENSE_ANNOTATION: Final = _A + "revoke-license"
"""Set on a Tenant to the id of a leaked license: it is revoked and a new one issued."""
RECONCILE_CAUSE_ANNOTATION: Final = _A + "reconcile-cause"
"""Patched on a Tenant when a Plan or Subscription it uses changed (a nudge)."""
APIKEY_ANNOTATION: Final = _A + "apikey"
"""On an API key's Secret: `namespace/name` of the ApiKey that wrote it."""

# ------------------------------------------------- Secret and ConfigMap entries

LICENSE_ENTRY: Final = "license.jwt"
"""The tenant's license token, in Secret `<tenant namespace>/tenantry-license`."""
JWKS_ENTRY: Final = "jwks.json"
"""The public keys that verify licenses (beside the license, and in the public-keys ConfigMap)."""
ACTIVE_KID_ENTRY: Final = "active-kid"
REVOCATIONS_JWT_ENTRY: Final = "revocations.jwt"
REVOCATIONS_INDEX_ENTRY: Final = "revoked.json"
APIKEY_ENTRY: Final = "api-key"
"""The plaintext of an API key, in the Secret its ApiKey names."""
