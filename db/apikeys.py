"""All SQL of API keys. The operator writes keys; the API reads them.

A key acts for one Tenant, named by its uid: a Tenant re-created under the
same name is another tenant, and its predecessor's keys do not work for it.
Keys issued before uids were recorded have none until the operator next
reconciles their ApiKey (`adopt_tenant_uid`); until then their name decides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class KeyRow:
    id: int
    resource_uid: str | None
    resource_namespace: str
    resource_name: str
    tenant_namespace: str
    tenant_name: str
    tenant_uid: str | None
    key_prefix: str
    key_hash: str
    scopes: frozenset[str]
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None

    def active(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


_COLUMNS = (
    "id, resource_uid, resource_namespace, resource_name, tenant_namespace, tenant_name, "
    "tenant_uid, key_prefix, key_hash, scopes, expires_at, revoked_at, created_at, last_used_at"
)


def _row(r: Any) -> KeyRow:
    return KeyRow(
        id=r.id,
        resource_uid=r.resource_uid,
        resource_namespace=r.resource_namespace,
        resource_name=r.resource_name,
        tenant_namespace=r.tenant_namespace,
        tenant_name=r.tenant_name,
        tenant_uid=r.tenant_uid,
        key_prefix=r.key_prefix,
        key_hash=r.key_hash,
        scopes=frozenset(r.scopes),
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        created_at=r.created_at,
        last_used_at=r.last_used_at,
    )


_BY_HASH = text(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = :h")  # noqa: S608
_BY_RESOURCE = text(f"SELECT {_COLUMNS} FROM api_keys WHERE resource_uid = :uid")  # noqa: S608
_BY_TENANT = text(
    f"SELECT {_COLUMNS} FROM api_keys"  # noqa: S608
    " WHERE tenant_uid = :uid"
    " OR (tenant_uid IS NULL AND tenant_namespace = :ns AND tenant_name = :name)"
    " ORDER BY created_at, id"
)


async def find_by_hash(conn: AsyncConnection, key_hash: str) -> KeyRow | None:
    row = (await conn.execute(_BY_HASH, {"h": key_hash})).first()
    return None if row is None else _row(row)


async def find_by_resource(conn: AsyncConnection, resource_uid: str) -> KeyRow | None:
    row = (await conn.execute(_BY_RESOURCE, {"uid": resource_uid})).first()
    return None if row is None else _row(row)


async def list_for_tenant(
    conn: AsyncConnection, namespace: str, name: str, uid: str
) -> list[KeyRow]:
    """The keys of the Tenant `namespace/name` whose uid is `uid` (not its predecessors')."""
    rows = await conn.execute(_BY_TENANT, {"ns": namespace, "name": name, "uid": uid})
    return [_row(r) for r in rows]


async def insert_key(
    conn: AsyncConnection,
    *,
    resource_uid: str,
    resource_namespace: str,
    resource_name: str,
    tenant_namespace: str,
    tenant_name: str,
    tenant_uid: str | None,
    key_prefix: str,
    key_hash: str,
    scopes: Sequence[str],
    expires_at: dt.datetime | None,
) -> bool:
    """Record a key's hash for an ApiKey object; False if that object already has one."""
    result = await conn.execute(
        text(
            "INSERT INTO api_keys (resource_uid, resource_namespace, resource_name,"
            " tenant_namespace, tenant_name, tenant_uid, key_prefix, key_hash, scopes,"
            " expires_at)"
            " VALUES (:uid, :rns, :rname, :tns, :tname, :tuid, :prefix, :hash, :scopes, :expires)"
            " ON CONFLICT (resource_uid) DO NOTHING"
        ),
        {
            "uid": resource_uid,
            "rns": resource_namespace,
            "rname": resource_name,
            "tns": tenant_namespace,
            "tname": tenant_name,
            "tuid": tenant_uid,
            "prefix": key_prefix,
            "hash": key_hash,
            "scopes": list(scopes),
            "expires": expires_at,
        },
    )
    return bool(result.rowcount)


async def update_terms(
    conn: AsyncConnection, resource_uid: str, scopes: Sequence[str], expires_at: dt.datetime | None
) -> None:
    """Scopes and expiry follow the ApiKey's spec."""
    await conn.execute(
        text(
            "UPDATE api_keys SET scopes = :scopes, expires_at = :expires"
            " WHERE resource_uid = :uid"
            " AND (scopes IS DISTINCT FROM :scopes OR expires_at IS DISTINCT FROM :expires)"
        ),
        {"uid": resource_uid, "scopes": list(scopes), "expires": expires_at},
    )


async def adopt_tenant_uid(conn: AsyncConnection, resource_uid: str, tenant_uid: str) -> None:
    """Record the uid of the Tenant a key issued before uids were recorded acts for."""
    await conn.execute(
        text(
            "UPDATE api_keys SET tenant_uid = :tuid"
            " WHERE resource_uid = :uid AND tenant_uid IS NULL"
        ),
        {"uid": resource_uid, "tuid": tenant_uid},
    )


async def revoke(conn: AsyncConnection, resource_uid: str, at: dt.datetime) -> dt.datetime | None:
    """Revoke for good (the first time counts); the revocation time, or None if no such key."""
    row = (
        await conn.execute(
            text(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, :at)"
                " WHERE resource_uid = :uid RETURNING revoked_at"
            ),
            {"uid": resource_uid, "at": at},
        )
    ).first()
    return None if row is None else row.revoked_at


async def revoke_first(conn: AsyncConnection, resource_uid: str, at: dt.datetime) -> bool:
    """Revoke for good, as `revoke`; True only for the call that revoked it (the one to
    audit): a second revocation, by whichever path, finds it done and changes nothing."""
    result = await conn.execute(
        text(
            "UPDATE api_keys SET revoked_at = :at WHERE resource_uid = :uid AND revoked_at IS NULL"
        ),
        {"uid": resource_uid, "at": at},
    )
    return bool(result.rowcount)


async def revoke_tenant_keys(
    conn: AsyncConnection, namespace: str, name: str, uid: str, at: dt.datetime
) -> int:
    """Revoke every key of a tenant (it is being deleted); how many were still active."""
    result = await conn.execute(
        text(
            "UPDATE api_keys SET revoked_at = :at WHERE revoked_at IS NULL AND (tenant_uid = :uid"
            " OR (tenant_uid IS NULL AND tenant_namespace = :ns AND tenant_name = :name))"
        ),
        {"ns": namespace, "name": name, "uid": uid, "at": at},
    )
    return int(result.rowcount)


async def record_last_used(conn: AsyncConnection, used: Mapping[int, dt.datetime]) -> None:
    if not used:
        return
    ids, times = zip(*sorted(used.items()), strict=True)
    await conn.execute(
        text(
            "UPDATE api_keys k SET last_used_at = u.at"
            " FROM unnest(CAST(:ids AS bigint[]), CAST(:times AS timestamptz[])) AS u(id, at)"
            " WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)"
        ),
        {"ids": list(ids), "times": list(times)},
    )
