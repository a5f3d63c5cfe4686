"""High availability: several operator replicas, exactly one acting, by kopf peering.

Every replica writes a keep-alive with its priority into the status of one
ClusterKopfPeering object every few seconds; a replica that sees a live peer of
higher priority pauses (finishes what it is doing and starts nothing new). A
replica that stops cleanly removes itself and the next takes over at once; one
killed without notice is presumed dead once its keep-alive is older than the
peering lifetime (`TENANTRY_OPERATOR_PEERING_LIFETIME`).

Priorities must differ (kopf pauses every replica when two live ones share the
highest), yet replicas of one Deployment share their arguments: by default a
replica's priority is minus the millisecond it started, so the oldest live
replica acts and a newly started one (a rolling update, a rescheduled Pod)
never preempts it. A developer's operator run with `--priority 0` outranks
them all and pauses the cluster's while it runs.

Shards (operator/sharding.py) are separate groups, each with one acting
replica: shard 0 meets in the object named by `--peering`, shard i in
`<name>-shard-<i>`. Were they to share one, all but one shard would pause.
"""

from __future__ import annotations

import logging
import time

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.models.meta_v1 import ObjectMeta

log = logging.getLogger("tenantry.operator")

ClusterKopfPeering = create_global_resource(
    "kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings"
)


def oldest_first_priority() -> int:
    """Minus this process's start in milliseconds: the earliest started ranks highest."""
    return -time.time_ns() // 1_000_000


async def ensure_object(name: str) -> None:
    """Create the peering object when missing: with mandatory peering, kopf
    pauses every replica until the object exists."""
    client = AsyncClient(field_manager="tenantry-operator")
    try:
        await client.create(ClusterKopfPeering(metadata=ObjectMeta(name=name)))
        # Named as kopf's per-object logger names objects (`k8s_ref`), in text and JSON.
        log.info("Created ClusterKopfPeering %s", name,
                 extra={"k8s_ref": {"kind": "ClusterKopfPeering", "name": name}})  # fmt: skip
    except ApiError as error:
        if error.status.code != 409:
            raise
    finally:
        await client.close()
