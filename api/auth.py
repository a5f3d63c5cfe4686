"""Who is calling: an instance with its API key, a gateway with the service token, an admin.

An unknown, revoked or expired key gets one and the same answer, so keys
cannot be probed; a key whose checksum fails is refused before any lookup.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tenantry.api.apikeys.service import lookup
from tenantry.api.errors import Forbidden, Unauthorized
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Tenant
from tenantry.core import clock, keyformat
from tenantry.db.apikeys import KeyRow
from tenantry.db.audit import Actor

_BEARER = {"WWW-Authenticate": "Bearer"}
SERVICE_TOKEN_SCHEME = "ServiceToken"  # noqa: S105 (a name, not a secret)
SERVICE_TOKEN = {
    "type": "http",
    "scheme": "bearer",
    "description": "The introspection service token (TENANTRY_INTROSPECTION_TOKEN).",
}

INVALID_KEY = (
    "The API key is not valid: it is unknown, revoked or expired. Use the key from the "
    "Secret written for your ApiKey resource, or ask for a new one."
)

_instance_bearer = HTTPBearer(
    scheme_name="InstanceKey",
    description="The instance's API key (`tnty_...`) as a bearer token.",
    auto_error=False,
)
_instance_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="InstanceKeyHeader",
    description="The instance's API key, in a header instead.",
    auto_error=False,
)
_admin_bearer = HTTPBearer(
    scheme_name="AdminToken",
    description="The admin token (TENANTRY_ADMIN_TOKEN).",
    auto_error=False,
)


async def runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain `def` dependency in a thread pool, which costs more.
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


# The process's clock: the system's, or moved forward for tests (core/clock.py).
_clock = clock.from_environment()


def utcnow() -> dt.datetime:
    return _clock()


@dataclass(frozen=True)
class Caller:
    """An instance, identified by its key, acting for its tenant."""

    key: KeyRow
    tenant: Tenant


def invalid_key() -> Unauthorized:
    return Unauthorized(INVALID_KEY, code="invalid_api_key", headers=_BEARER)


async def resolve_key(rt: Runtime, presented: str) -> Caller | None:
    """The caller behind a presented key, or None if the key is not usable."""
    if not keyformat.is_well_formed(presented):
        return None
    now = utcnow()
    row = await lookup(rt.keys, presented, now)
    if row is None:
        return None
    tenant = await rt.catalog.tenant(row.tenant_namespace, row.tenant_name)
    if tenant is None:
        return None  # the Tenant is gone, and its keys with it
    if row.tenant_uid is not None and row.tenant_uid != tenant.uid:
        return None  # a key of an earlier Tenant of the same name
    rt.last_used.note(row.id, now)
    return Caller(row, tenant)


async def instance(
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_instance_bearer)],
    header: Annotated[str | None, Depends(_instance_header)],
) -> Caller:
    presented = bearer.credentials if bearer else header
    if not presented:
        raise Unauthorized(
            "No API key: send it as `Authorization: Bearer tnty_...` or `X-API-Key: tnty_...`.",
            code="missing_api_key",
            headers=_BEARER,
        )
    if not keyformat.is_well_formed(presented.strip()):
        raise Unauthorized(
            "This is not a Tenantry API key: keys start with `tnty_`, are "
            f"{keyformat.KEY_LENGTH} characters long and end in a checksum, which does not match. "
            "Check the key for a typo or a truncated copy.",
            code="malformed_api_key",
            headers=_BEARER,
        )
    caller = await resolve_key(rt, presented.strip())
    if caller is None:
        raise invalid_key()
    return caller


InstanceDep = Annotated[Caller, Depends(instance)]


def scoped(scope: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency: the caller's key must carry `scope`."""

    async def check(caller: InstanceDep) -> Caller:
        if scope not in caller.key.scopes:
            raise Forbidden(
                f"The API key {caller.key.key_prefix}... lacks the scope {scope!r} this needs "
                f"(it has: {', '.join(sorted(caller.key.scopes)) or 'none'}). Add it to the "
                f"ApiKey {caller.key.resource_namespace}/{caller.key.resource_name}'s spec.scopes.",
                code="insufficient_scope",
                details={"required": scope, "granted": sorted(caller.key.scopes)},
            )
        return caller

    return check


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


def check_service_token(rt: Runtime, authorization: str | None) -> None:
    """The introspection service token, from an `Authorization: Bearer` header."""
    expected = rt.settings.introspection_token.get_secret_value()
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not expected or not _same(presented.strip(), expected):
        raise Unauthorized(
            "This endpoint is for gateways inside the cluster: send the introspection service "
            "token as `Authorization: Bearer <token>`.",
            code="invalid_service_token",
            headers=_BEARER,
        )


async def admin_token(
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    expected = rt.settings.admin_token.get_secret_value()
    if bearer is None or not expected or not _same(bearer.credentials, expected):
        raise Unauthorized(
            "Admin endpoints need the admin token as `Authorization: Bearer <token>`.",
            code="invalid_admin_token",
            headers=_BEARER,
        )


ACTOR_HEADER = "Tenantry-Actor"
"""Who is acting, as the admin says (a name or an email), for the audit trail."""


async def admin_actor(
    request: Request,
    _: Annotated[None, Depends(admin_token)],
    actor: Annotated[
        str | None,
        Header(
            alias=ACTOR_HEADER,
            max_length=128,
            description="Who is acting (a name or email), recorded in the audit trail.",
        ),
    ] = None,
) -> Actor:
    """The admin token's holder, as the audit trail records them."""
    name = f"admin:{actor.strip()}" if actor and actor.strip() else "admin"
    return Actor(name, request.client.host if request.client else None)


AdminActor = Annotated[Actor, Depends(admin_actor)]
