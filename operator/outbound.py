"""Webhooks out from the operator: subscription states and tenants' readiness.

The operator only enqueues (`db/outbox.py`); the API delivers. An event is
enqueued by the pass that sees the change, before its status patch: if that
patch is lost, the next pass sees the same change again, and the event's id,
derived from the object's resourceVersion and the change, makes it one event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.core import outbound
from tenantry.core.conditions import Observed
from tenantry.core.lifecycle import Terms
from tenantry.core.resources import Condition, ConditionStatus, SubscriptionState
from tenantry.db import outbox
from tenantry.operator import errors
from tenantry.operator.context import Context

PROVISIONED = "Provisioned"
SUSPENDED = "Suspended"


async def emit(
    ctx: Context,
    event_type: str,
    data: Mapping[str, Any],
    *,
    key: str,
    conn: AsyncConnection | None = None,
) -> None:
    """Enqueue an event in `conn`'s transaction, or one of its own (nothing without
    endpoints wanting it, or without a database)."""
    endpoints = ctx.settings.webhooks
    if ctx.database is None or not outbound.wanting(endpoints, event_type):
        return
    event = outbound.event(event_type, data, ctx.clock(), key=key)
    if conn is not None:
        await outbox.enqueue(conn, endpoints, event)
        return
    async with errors.database(), ctx.database.begin() as own:
        await outbox.enqueue(own, endpoints, event)


async def subscription_changed(
    ctx: Context,
    body: kopf.Body,
    terms: Terms,
    before: SubscriptionState | None,
    after: SubscriptionState,
    amount_due: int,
    conn: AsyncConnection | None = None,
) -> None:
    """`subscription.state_changed`, from `before` (None: new) to `after`."""
    data = {
        "subscription": {"namespace": terms.namespace, "name": terms.name, "uid": terms.uid},
        "tenant": {"namespace": terms.namespace, "name": terms.tenant_name,
                   "uid": terms.tenant_uid},
        "plan": terms.plan_name,
        "previousState": before.value if before else None,
        "state": after.value,
        "amountDue": amount_due,
        "currency": terms.currency,
        "endedAt": outbound.iso(terms.ended_at) if terms.ended_at else None,
    }  # fmt: skip
    version = body.metadata.get("resourceVersion")
    key = f"{terms.uid}:{version}:{before.value if before else ''}:{after.value}"
    await emit(ctx, outbound.SUBSCRIPTION_STATE_CHANGED, data, key=key, conn=conn)


def tenant_event(before: Condition | None, after: Observed) -> str | None:
    """What a Tenant's new Ready condition tells: `tenant.ready` when it turns True as
    provisioned, `tenant.suspended` when it turns to suspended; otherwise nothing."""
    if after.reason == PROVISIONED and after.ok:
        was_ready = (
            before is not None
            and before.reason == PROVISIONED
            and before.status == ConditionStatus.TRUE
        )
        return None if was_ready else outbound.TENANT_READY
    if after.reason == SUSPENDED and (before is None or before.reason != SUSPENDED):
        return outbound.TENANT_SUSPENDED
    return None


async def tenant_changed(
    ctx: Context,
    body: kopf.Body,
    before: Condition | None,
    after: Observed,
    *,
    plan: str,
    namespace: str,
    state: SubscriptionState,
) -> None:
    """`tenant.ready` or `tenant.suspended`, if the Ready condition says so."""
    event_type = tenant_event(before, after)
    if event_type is None:
        return
    uid = body.metadata.uid or ""
    data = {
        "tenant": {"namespace": body.metadata.namespace, "name": body.metadata.name, "uid": uid},
        "plan": plan,
        "instanceNamespace": namespace,
        "subscriptionState": state.value,
        "message": after.message,
    }
    key = f"{uid}:{body.metadata.get('resourceVersion')}"
    await emit(ctx, event_type, data, key=key)
