"""Stripe's events, stored as they arrive and processed in the background: each once,
on any number of replicas.

Storing: a delivery that finds no write on its way writes at once, on one of
STORE_CONNECTIONS connections kept for storing; one that finds a write on its
way queues, and the queue goes as one group when that write ends. So a light
load waits for no other write (one round trip each), and a heavy one is
written in groups as large as the load makes them (fewer statements than
deliveries: the work per event of both the API and the database falls). A
queue whose write has not ended within STALL seconds goes on another of the
connections: one slow write (a replay waiting for its event's processing)
holds up no other delivery for longer. A write is one statement in autocommit
(one round trip, one commit). Each request gets its answer only after the
commit that holds its event. A group that fails for a reason other than the
database being away is written again one event at a time, so an event
PostgreSQL refuses fails only its own request.

Processing. Invariant: an event's effects and the mark that it is done commit
together, in one transaction that holds the event's row lock from its claim
to its end. So one worker at a time processes an event (`FOR UPDATE SKIP
LOCKED`: the others take the next one), and a worker that dies mid-event
leaves nothing behind: its transaction rolls back, the event is pending again
and any replica takes it. The only effect that commits apart, a payment, is
recorded under a reference a retry repeats (see handlers.py).

A handler that fails runs under a savepoint, so the failure is recorded in the
same transaction: the event waits `BACKOFF_BASE * 2**(attempts-1)` seconds (at
most BACKOFF_CAP) and is retried; it is `failed` after MAX_ATTEMPTS, or at once
when the handler refuses it. Events are claimed in the order they fall due
(received, or retried), then by Stripe's `created`; between events of one
subscription, order is the handlers' concern (an older event never overwrites
a newer status, whatever the order they are processed in). A replay that
arrives while its event is processed waits for that transaction to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import stripe
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantry.api import metrics
from tenantry.api.billing.service import BillingService
from tenantry.api.errors import Unavailable, Unprocessable
from tenantry.api.stripe import handlers
from tenantry.api.stripe import repository as repo
from tenantry.api.stripe.settings import StripeSettings
from tenantry.api.tenants.kube import Kube

log = logging.getLogger("tenantry.api.stripe")

POLL_INTERVAL = 1.0
"""Seconds between looks for due events (retries, other replicas' events); an event
this replica stores wakes it at once."""
MAX_ATTEMPTS = 20
BACKOFF_BASE = 2.0
BACKOFF_CAP = 3600.0
"""With these, an event is retried for about nine hours: long enough for Tenantry's
billing run to draft and finalize the invoice a Stripe event names."""
ERROR_PAUSE = 5.0
"""Seconds the loop waits after the database failed it."""
MAX_GROUP = 500
"""Events stored in one statement at most."""
STORE_CONNECTIONS = 3
"""Connections each process keeps for storing: writes on their way at once, at most."""
STALL = 0.02
"""Seconds queued deliveries wait for the write on its way before another connection
writes them: far longer than a group's write takes (a few milliseconds), so under load
one write follows another and groups grow, and far shorter than Stripe's patience."""
QUIET = 0.05
MAX_DEFER = 1.0
"""Acknowledging comes first: Stripe waits for it, and retries what it does not get in
time. The worker processes an event only once nothing has been stored in this process
for QUIET seconds, or once it has waited MAX_DEFER, so a burst of deliveries is
answered first and processed right after, and a steady stream is still processed."""


def backoff(attempts: int) -> float:
    """Seconds before the next try of an event that has failed `attempts` times."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1)))


@dataclass
class _Lane:
    """A connection kept for storing, in autocommit: taking one from the pool for each
    write would cost as much again as the statement. Opened at its first write."""

    store: tuple[AsyncConnection, psycopg.AsyncConnection[Any]] | None = None
    busy: bool = False  # a request or a writer task writes on it


@dataclass
class _Pending:
    event: repo.NewEvent
    future: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class StripeWorker:
    """Stores received events (`store`) and processes them in the background."""

    def __init__(
        self, engine: AsyncEngine, settings: StripeSettings, billing: BillingService, kube: Kube
    ) -> None:
        assert settings.api_key is not None
        self.engine = engine
        self.settings = settings
        self.billing = billing
        self.kube = kube
        self._http = stripe.AIOHTTPClient()
        self.client = stripe.StripeClient(
            settings.api_key.get_secret_value(),
            http_client=self._http,
            base_addresses={"api": settings.api_base} if settings.api_base else None,
        )
        """Stripe's API, built once per process (aiohttp: asynchronous calls only)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: list[_Pending] = []
        self._lanes = tuple(_Lane() for _ in range(STORE_CONNECTIONS))
        self._writers: set[asyncio.Task[None]] = set()
        self._stored_at = 0.0  # the event loop's time of the last delivery

    @classmethod
    def start_if_enabled(
        cls, settings: StripeSettings, engine: AsyncEngine, billing: BillingService, kube: Kube
    ) -> StripeWorker | None:
        """The running worker when Stripe is configured (an API key); None otherwise."""
        if not settings.enabled:
            return None
        worker = cls(engine, settings, billing, kube)
        worker._task = asyncio.create_task(worker._run())
        if settings.webhook_secret is None:
            log.warning(
                "TENANTRY_STRIPE_WEBHOOK_SECRET is not set: POST /webhooks/stripe refuses "
                "every event until it is"
            )
        return worker

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lane in self._lanes:
            if lane.store is not None:
                await lane.store[0].close()
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------ storing

    async def store(self, event: repo.NewEvent) -> bool:
        """Store a verified event; True when it is new, False for a replay. Returns
        after the commit that holds it."""
        pending = _Pending(event)
        self._pending.append(pending)
        loop = asyncio.get_running_loop()
        self._stored_at = loop.time()
        if any(lane.busy for lane in self._lanes):
            if len(self._pending) == 1:  # the head of a new queue: watch that it goes
                loop.call_later(STALL, self._relieve, pending)
        else:
            # Nothing on its way: this request writes at once, and what queues meanwhile
            # goes after it (a task), so its own answer waits for no other.
            lane = self._lanes[0]
            lane.busy = True
            try:
                await self._write_next(lane)
            finally:
                self._after_write(lane)
        return await pending.future

    def _after_write(self, lane: _Lane) -> None:
        """The queue goes next on `lane` when no other write is on its way; otherwise
        `lane` is freed and the queue waits for that write, or STALL."""
        if self._pending and not any(other.busy for other in self._lanes if other is not lane):
            self._write_queue(lane)
            return
        lane.busy = False
        if self._pending:
            asyncio.get_running_loop().call_later(STALL, self._relieve, self._pending[0])

    def _relieve(self, head: _Pending) -> None:
        """The queue `head` leads has waited STALL: a free connection writes it (when
        every one is writing, the first to end watches the queue again)."""
        if not self._pending or self._pending[0] is not head:
            return  # it went with a write already
        lane = next((lane for lane in self._lanes if not lane.busy), None)
        if lane is not None:
            lane.busy = True
            self._write_queue(lane)

    def _write_queue(self, lane: _Lane) -> None:
        async def write() -> None:
            try:
                await self._write_next(lane)
            finally:
                self._after_write(lane)

        writer = asyncio.create_task(write())
        self._writers.add(writer)  # kept referenced while it runs
        writer.add_done_callback(self._writers.discard)

    async def _write_next(self, lane: _Lane) -> None:
        group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        if self._pending:  # beyond one group: the rest waits for this write, or STALL
            asyncio.get_running_loop().call_later(STALL, self._relieve, self._pending[0])
        try:
            await self._commit(lane, group)
        except _UNAVAILABLE as error:
            _fail(group, _unavailable(error))
        except Exception as error:
            if len(group) == 1:
                _fail(group, _refused(error))
                return
            for pending in group:  # find the event at fault: each on its own
                try:
                    await self._commit(lane, [pending])
                except _UNAVAILABLE as alone:
                    _fail([pending], _unavailable(alone))
                except Exception as alone:
                    _fail([pending], _refused(alone))
        except BaseException:
            # Cancelled mid-write: committed or not, nobody can tell; a replay is safe.
            _fail(group, _unavailable(None))
            raise

    async def _commit(self, lane: _Lane, group: Sequence[_Pending]) -> None:
        if lane.store is None:
            conn = await self.engine.connect()
            # One statement, its own transaction: committed when it returns.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = (await conn.get_raw_connection()).driver_connection
            assert isinstance(raw, psycopg.AsyncConnection)
            with contextlib.suppress(psycopg.Error):
                # Bodies are stored compressed: lz4 costs a third of PostgreSQL's default,
                # pglz, per event. (Without lz4 in the server, pglz it stays.)
                await raw.execute("SET default_toast_compression = lz4")
            lane.store = (conn, raw)
        conn, raw = lane.store
        try:
            new = await repo.store_events(raw, [p.event for p in group])
        except _UNAVAILABLE:
            lane.store = None
            with contextlib.suppress(Exception):  # the next write takes a new connection
                await conn.invalidate()
                await conn.close()
            raise
        if new:
            self._wake.set()
        for pending in group:
            # The same id twice in one group (racing deliveries): the first is new.
            fresh = pending.event.id in new
            new.discard(pending.event.id)
            if not pending.future.done():
                pending.future.set_result(fresh)

    # ------------------------------------------------------------ processing

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self._quiet() and await self.process_one():
                    pass
            except Exception as error:
                log.warning("Processing Stripe events failed: %s", error)
                await asyncio.sleep(ERROR_PAUSE)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)

    async def _quiet(self) -> bool:
        """Wait until no delivery has come for QUIET seconds, MAX_DEFER at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_DEFER
        for _ in range(round(MAX_DEFER / QUIET) + 1):
            wait = min(self._stored_at + QUIET, deadline) - loop.time()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        return True

    async def process_one(self) -> bool:
        """Claim the oldest due event and process it; False when none is due."""
        async with self.engine.begin() as conn:
            claimed = await repo.claim(conn)
            if claimed is None:
                return False
            ctx = handlers.Context(conn, self.billing, self.client, self.kube)
            try:
                async with conn.begin_nested():
                    event = handlers.StripeEvent.from_payload(claimed.payload)
                    outcome = await handlers.dispatch(ctx, event)
            except Exception as error:
                await self._failed(ctx, claimed, error)
                return True
            await repo.finish(conn, claimed.id, outcome.state)
        metrics.STRIPE_EVENTS_PROCESSED.labels(result=outcome.state).inc()
        metrics.STRIPE_EVENT_LAG.observe(max(0.0, time.time() - claimed.payload["created"]))
        log.info("%s Stripe event %s (%s): %s", outcome.state.capitalize(), claimed.id,
                 claimed.type, outcome.note)  # fmt: skip
        return True

    async def _failed(self, ctx: handlers.Context, claimed: repo.Claimed, error: Exception) -> None:
        attempts = claimed.attempts + 1
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, handlers.Refused) or attempts >= MAX_ATTEMPTS:
            await repo.fail(ctx.conn, claimed.id, message)
            metrics.STRIPE_EVENTS_PROCESSED.labels(result="failed").inc()
            log.error("Failed Stripe event %s (%s) after %d attempts: %s", claimed.id,
                      claimed.type, attempts, message)  # fmt: skip
            return
        delay = backoff(attempts)
        await repo.retry(ctx.conn, claimed.id, delay, message)
        metrics.STRIPE_EVENTS_PROCESSED.labels(result="retried").inc()
        if isinstance(error, handlers.NotYet):
            log.info("Postponed Stripe event %s (%s) by %.0f s: %s", claimed.id, claimed.type,
                     delay, error)  # fmt: skip
        else:
            log.warning("Stripe event %s (%s) failed (attempt %d, next in %.0f s): %s",
                        claimed.id, claimed.type, attempts, delay, message,
                        exc_info=error)  # fmt: skip


_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OperationalError, InterfaceError)
"""The database being away, not the event: storing goes on a new connection next time."""


def _unavailable(error: BaseException | None) -> Unavailable:
    log.warning("Could not store Stripe events: %s", error or "the write was interrupted")
    return Unavailable(
        "The event could not be stored (the database is unavailable): Stripe sends it again, "
        "and nothing is lost.",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    )


def _refused(error: Exception) -> Exception:
    """PostgreSQL refused the event itself (a value it cannot store): say so."""
    if not isinstance(error, psycopg.DataError):
        return error
    return Unprocessable(
        f"PostgreSQL cannot store this event ({str(error).strip().splitlines()[0]}); it was "
        "not stored.",
        code="unstorable_event",
    )


def _fail(group: Sequence[_Pending], error: Exception) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(error)
