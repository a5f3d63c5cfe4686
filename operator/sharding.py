"""Sharding: several operators, each handling its own share of the Tenants.

`TENANTRY_OPERATOR_SHARDS=N` and `TENANTRY_OPERATOR_SHARD=i` (0 <= i < N) make
this process shard i of N. The invariants:

- Every Tenant belongs to exactly one shard: the one `owner(namespace, name, N)`
  names, from the SHA-256 of `namespace/name`. Not of the uid: a Subscription or
  an ApiKey names its Tenant (`spec.tenantRef.name`, in its own namespace) and
  never learns the uid, and what belongs to a Tenant must hash the same way.
- What belongs to a Tenant goes to the Tenant's shard: its reconciles and drift
  timer, its deletion, its Stripe Customer, its Subscriptions and ApiKeys (their
  timers and deletions), and the nudges they send it.
- Cluster-wide kinds (Plans, Coupons, TaxRates, and their Stripe objects) are
  handled by shard 0 alone. Every shard keeps the indexes of Plans, Coupons and
  TaxRates (its Tenants read them), and nudges its own Tenants when a Plan
  changes; the per-Tenant indexes hold its own share.
- Each shard is its own high-availability group: its replicas meet in a
  peering object of their own and mark objects with a finalizer of their own,
  so shard 1 never pauses shard 0, nor lifts shard 0's finalizer (kopf lifts its
  finalizer from every object none of its handlers match). Shard 0 keeps the
  unsharded names, so one operator can become shard 0 of several. Finalizers of
  shards that no longer exist (the count went down) are lifted by the object's
  shard, unless its deletion has begun.

`Shard` is pure. The kopf filters below (`when=` on every handler decorator) read
this process's Shard from kopf's memo, where the start-up handler puts it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import kopf

from tenantry.core.resources import GROUP, VERSION, ApiKeyKind, SubscriptionKind, TenantKind

FINALIZER = "tenantry.io/finalizer"
"""The finalizer of an unsharded operator and of shard 0."""

SHARD_FINALIZER_PREFIX = "tenantry.io/shard-"
"""The finalizer of shard i > 0 is this prefix and i."""


def owner(namespace: str | None, tenant: str, shards: int) -> int:
    """The shard of the Tenant `namespace/tenant` among `shards`: stable across
    processes, restarts and Python versions (not `hash()`, which is salted)."""
    digest = hashlib.sha256(f"{namespace or ''}/{tenant}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def tenant_of(namespace: str | None, spec: Any) -> tuple[str | None, str]:
    """The Tenant a Subscription or an ApiKey belongs to: the one it names in its namespace."""
    return namespace, ((spec or {}).get("tenantRef") or {}).get("name") or ""


@dataclass(frozen=True)
class Shard:
    """Which share of the work this process does."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"The number of shards must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"Shard {self.index} does not exist among {self.count}: shards are "
                f"numbered 0 to {self.count - 1}"
            )

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"

    @property
    def cluster_wide(self) -> bool:
        """Whether this shard does the cluster-wide work."""
        return self.index == 0

    def owns_tenant(self, namespace: str | None, name: str) -> bool:
        return self.count == 1 or owner(namespace, name, self.count) == self.index

    @property
    def finalizer(self) -> str:
        return FINALIZER if self.index == 0 else f"{SHARD_FINALIZER_PREFIX}{self.index}"

    def peering(self, name: str) -> str:
        """The peering object this shard's replicas meet in, named after the operator's."""
        return name if self.index == 0 else f"{name}-shard-{self.index}"

    def stale_finalizers(self, finalizers: list[str]) -> list[str]:
        """Finalizers left by shards that no longer exist (the count went down)."""
        return [
            f
            for f in finalizers
            if f.startswith(SHARD_FINALIZER_PREFIX)
            and not (
                (number := f.removeprefix(SHARD_FINALIZER_PREFIX)).isdigit()
                and int(number) < self.count
            )
        ]


# kopf filters, one per way of belonging. kopf runs the start-up handler, which
# puts the Shard in the memo, before it watches any object.


def of(memo: Any) -> Shard:
    shard: Shard = memo["shard"]
    return shard


def tenants(*, namespace: str | None, name: str, memo: Any, **_: Any) -> bool:
    """For handlers and indexes of Tenants."""
    return of(memo).owns_tenant(namespace, name)


def tenant_parts(*, namespace: str | None, spec: Any, memo: Any, **_: Any) -> bool:
    """For handlers and indexes of Subscriptions and ApiKeys: their Tenant's shard."""
    return of(memo).owns_tenant(*tenant_of(namespace, spec))


def cluster_wide(*, memo: Any, **_: Any) -> bool:
    """For handlers of cluster-wide kinds (Plans, Coupons, TaxRates): shard 0 only."""
    return of(memo).cluster_wide


def holds_stale_finalizers(*, meta: Any, memo: Any, **_: Any) -> bool:
    """Whether an object holds finalizers of shards that no longer exist."""
    return bool(of(memo).stale_finalizers(list(meta.get("finalizers") or ())))


def _remove(body: dict[str, Any], finalizers: list[str]) -> None:
    current = body.get("metadata", {}).get("finalizers") or []
    body["metadata"]["finalizers"] = [f for f in current if f not in finalizers]


def register(registry: kopf.OperatorRegistry) -> None:
    """Lift the finalizers of shards that no longer exist from this shard's objects.

    After the count went down, an object's new shard adds its own finalizer; the
    old one would keep a deletion waiting for ever. An object already being
    deleted keeps it (its cleanup never ran): the README says what to do then.
    """
    kinds = (
        (TenantKind.plural, tenants),
        (SubscriptionKind.plural, tenant_parts),
        (ApiKeyKind.plural, tenant_parts),
    )
    for plural, owned in kinds:
        # Filtered so that the handler runs (and kopf logs it) only when there is work.
        when = kopf.all_([owned, holds_stale_finalizers])

        @kopf.on.event(GROUP, VERSION, plural, id="stale-finalizers", when=when, registry=registry)
        def lift_stale_finalizers(
            body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
        ) -> None:
            stale = of(memo).stale_finalizers(list(body.metadata.get("finalizers") or ()))
            names = ", ".join(stale)
            if body.metadata.get("deletionTimestamp"):
                logger.warning(f"Deleted while a shard that no longer exists held it ({names}): "
                               "its cleanup has not run")  # fmt: skip
                return
            patch.fns.append(functools.partial(_remove, finalizers=stale))
            logger.info(f"Lifted finalizer(s) {names} of a shard that no longer exists")
