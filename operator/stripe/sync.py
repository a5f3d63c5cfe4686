"""How a Stripe step sits in a reconcile pass: the `StripeSynced` condition.

`StripeSynced=True` says the object's Stripe counterpart was brought in step
at the condition's `observedGeneration`, and its message names what Stripe
holds ("Stripe Customer cus_123."). A pass over an object that has not
changed since, and would write the same message, calls Stripe not at all
(`in_step`); any other pass brings Stripe in step again, so the condition
is level, not edge: a pass that failed after Stripe answered simply repeats
its requests under the same idempotency keys.

A refusal (`StripeRefused`, carrying Stripe's message, or another
`InvalidSpec` about what Stripe holds), an outage
(`StripeUnavailable`) or a missing prerequisite (`NotReady`) becomes the
condition and ends only the Stripe step, never the rest of the pass: a
Tenant is provisioned whether or not Stripe answers. The step tells its
handler to retry (`Step.retry`) when Stripe was unavailable; handlers with a
timer leave the retry to it.
"""

from __future__ import annotations

from types import TracebackType

import kopf

from tenantry.core.conditions import condition, find
from tenantry.core.resources import ConditionStatus
from tenantry.operator import metrics
from tenantry.operator.errors import InvalidSpec, NotReady, StripeUnavailable
from tenantry.operator.reconcile import Logger, Reconcile

STRIPE_SYNCED = "StripeSynced"


def in_step(r: Reconcile, message: str) -> bool:
    """Whether the last pass brought Stripe in step with this generation, to `message`."""
    synced = find(r.prior_conditions, STRIPE_SYNCED)
    return (
        synced is not None
        and synced.status == ConditionStatus.TRUE
        and synced.observed_generation == r.generation
        and synced.message == message
    )


def synced(r: Reconcile, message: str) -> None:
    r.observe(condition(STRIPE_SYNCED, True, "Synced", message))


class Step:
    """One Stripe step of a pass (`async with syncing(r, logger) as step:`): what stops it
    becomes `StripeSynced=False`, and the code after the block runs."""

    def __init__(self, r: Reconcile, logger: Logger) -> None:
        self.r = r
        self.logger = logger
        self.retry: StripeUnavailable | None = None

    async def __aenter__(self) -> Step:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> bool:
        if isinstance(error, InvalidSpec):  # StripeRefused, or what Tenantry cannot follow
            _counted(self.r, error.reason)
            _not_synced(self.r, self.logger, error.reason, error.message, warn=True)
        elif isinstance(error, StripeUnavailable):
            _counted(self.r, "StripeUnavailable")
            self.retry = error
            _not_synced(self.r, self.logger, "StripeUnavailable", str(error), warn=False)
        elif isinstance(error, NotReady):
            _not_synced(self.r, self.logger, error.reason, error.message, warn=False)
        else:
            return False
        return True


def syncing(r: Reconcile, logger: Logger) -> Step:
    return Step(r, logger)


def _counted(r: Reconcile, reason: str) -> None:
    metrics.STRIPE_SYNC_ERRORS.labels(kind=r.body.get("kind", ""), reason=reason).inc()


def _not_synced(r: Reconcile, logger: Logger, reason: str, message: str, *, warn: bool) -> None:
    r.observe(condition(STRIPE_SYNCED, False, reason, message))
    before = find(r.prior_conditions, STRIPE_SYNCED)
    if before is not None and (before.reason, before.message) == (reason, message):
        return  # said already, on an earlier pass
    if warn:
        logger.warning(message)
        kopf.warn(r.body, reason=reason, message=message)
    else:
        logger.info(message)
