"""The one shape every handler's pass takes: parse, compute, apply, one status patch.

    async with reconciling(body, TenantStatus, logger) as r:
        spec = r.spec(TenantSpec)           # InvalidSpec names the field
        desired = desired_state(...)        # pure
        ...apply through the adapters, r.observe(condition(...)), r.set(field=...)
    patch.status.update(r.status())

`NotReady` and `InvalidSpec` raised inside end the pass with `Ready=False`
and their reason; everything observed before them is kept. A new problem
(a reason or message the object did not show before) is logged and
recorded as an Event once, not on every timer tick.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from tenantry.core.conditions import READY, Observed, condition, find, merge_conditions
from tenantry.core.resources import Condition, Model
from tenantry.operator.errors import InvalidSpec, NotReady, spec_error

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
S = TypeVar("S", bound=BaseModel)
P = TypeVar("P", bound=Model)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Reconcile:
    """What one pass over one object learned; written as one status patch."""

    def __init__(self, body: kopf.Body, prior_conditions: list[Condition], now: dt.datetime):
        self.body = body
        self.now = now
        self.generation: int | None = body.metadata.get("generation")
        self.prior_conditions = prior_conditions
        self.observed: list[Observed] = []
        self.fields: dict[str, Any] = {}
        self.changed: list[str] = []  # what this pass created or replaced, by name
        self.problem: NotReady | InvalidSpec | kopf.TemporaryError | None = None

    def spec(self, model: type[S]) -> S:
        try:
            return model.model_validate(dict(self.body.spec))
        except ValidationError as error:
            raise InvalidSpec(spec_error(error)) from error

    def observe(self, seen: Observed) -> None:
        self.observed.append(seen)

    def holds(self, type_: str) -> Observed | None:
        """The condition of `type_` the status will hold after this pass (observed now,
        or kept from the last pass, as `merge_conditions` decides); none if neither."""
        merged = merge_conditions(self.prior_conditions, self.observed, self.generation, self.now)
        found = find(merged, type_)
        return None if found is None else Observed(found.type, found.status, found.reason,
                                                   found.message)  # fmt: skip

    def set(self, **fields: Any) -> None:
        """Status fields, by their wire (camelCase) names."""
        self.fields.update(fields)

    @property
    def retry(self) -> str | None:
        """Why to try again soon, when the pass ended on something that recovers."""
        if isinstance(self.problem, NotReady):
            return self.problem.message
        if isinstance(self.problem, kopf.TemporaryError):
            return str(self.problem)
        return None

    def status(self) -> dict[str, Any]:
        conditions = merge_conditions(
            self.prior_conditions, self.observed, self.generation, self.now
        )
        return {
            **self.fields,
            "conditions": [c.to_wire() for c in conditions],
            "observedGeneration": self.generation,
        }


def prior_status(body: kopf.Body, model: type[P]) -> P:
    """The status as the last pass wrote it (empty if unreadable); kopf's own entry left out."""
    raw = {k: v for k, v in dict(body.status).items() if k != "kopf"}
    try:
        return model.model_validate(raw)
    except ValidationError:
        return model()


@asynccontextmanager
async def reconciling(
    body: kopf.Body,
    prior_conditions: list[Condition],
    logger: Logger,
    *,
    transient_as_condition: bool = False,
    now: dt.datetime | None = None,
) -> AsyncIterator[Reconcile]:
    """One pass at `now` (default: the system time); problems become the Ready condition.
    With `transient_as_condition`, a temporary error is shown too (`Ready=False, Retrying`)
    instead of only retried."""
    r = Reconcile(body, prior_conditions, now or utcnow())
    try:
        yield r
    except (NotReady, InvalidSpec) as problem:
        r.problem = problem
        r.observe(condition(READY, False, problem.reason, problem.message))
    except kopf.TemporaryError as problem:
        if not transient_as_condition:
            raise
        r.problem = problem
        r.observe(condition(READY, False, "Retrying", str(problem)))
    _note_new_problem(r, logger)


def _note_new_problem(r: Reconcile, logger: Logger) -> None:
    """Log and record an Event when Ready turns to a new problem."""
    before = find(r.prior_conditions, READY)
    for seen in r.observed:
        if seen.type != READY or seen.ok:
            continue
        if before is not None and (before.reason, before.message) == (seen.reason, seen.message):
            continue
        warning = isinstance(r.problem, InvalidSpec)
        (logger.warning if warning else logger.info)(seen.message)
        (kopf.warn if warning else kopf.info)(r.body, reason=seen.reason, message=seen.message)
