"""Delivering webhooks: every replica sends what is due, none sends a row twice at once.

Invariant: a delivery is `delivered` only after its endpoint answered 2xx to
an attempt; until then it is tried again with growing delays, and after
`max_attempts` it is `failed` (an admin may queue it again). Delivery is at
least once: an answer lost on the way, or a replica dying between the answer
and its record, sends the event again, with the same `Tenantry-Event-Id`.
Rows are claimed with SKIP LOCKED and leased (`db/outbox.py`), so replicas
share the work. A replica sends only to endpoints it is configured with, at
the URL and with the secret it has now. The secret never leaves the
signature: it is not logged, nor is the signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.api.outbound.settings import WebhookSettings
from tenantry.core import outbound
from tenantry.db import outbox

log = logging.getLogger("tenantry.api.outbound")

USER_AGENT = "Tenantry-Webhooks/1"
ENVELOPE = ("id", "type", "created", "data")
MAX_ERROR = 300
"""Characters of a refusal's body kept in the delivery log."""


@dataclass(frozen=True)
class Attempt:
    url: str
    status: int | None
    error: str | None  # None: delivered


def body_of(delivery: outbox.Delivery) -> bytes:
    """The request body: the event's envelope in a fixed order, the same on every attempt."""
    envelope = {name: delivery.payload[name] for name in ENVELOPE}
    return json.dumps(envelope, separators=(",", ":")).encode()


class DeliveryWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: WebhookSettings,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.endpoints = {e.name: e for e in settings.endpoints}
        self.jitter = jitter
        # Past the time-out, with room for the records: then the row is due again.
        self.lease = max(60.0, 4 * settings.timeout)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Deliver in the background, if any endpoint is configured."""
        if not self.endpoints:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"User-Agent": USER_AGENT},
        )
        self._task = asyncio.create_task(self._run())
        log.info("Delivering webhooks to %s", ", ".join(sorted(self.endpoints)))

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.deliver_due()
            except Exception as error:
                log.warning("Could not deliver webhooks: %s", error)
                sent = 0
            if sent < self.settings.batch:  # a full batch: more may be due at once
                await asyncio.sleep(self.settings.poll_interval)

    async def deliver_due(self) -> int:
        """Send one batch of due deliveries and record how each went; how many."""
        async with self.engine.begin() as conn:
            claimed = await outbox.claim(
                conn, list(self.endpoints), limit=self.settings.batch, lease=self.lease
            )
        if not claimed:
            return 0
        attempts = await asyncio.gather(*(self._send(d) for d in claimed))
        async with self.engine.begin() as conn:
            for delivery, attempt in zip(claimed, attempts, strict=True):
                await outbox.record(
                    conn, delivery, url=attempt.url, status=attempt.status, error=attempt.error,
                    retry_in=self._retry_in(delivery, attempt),
                )  # fmt: skip
        return len(claimed)

    def _retry_in(self, delivery: outbox.Delivery, attempt: Attempt) -> float | None:
        where = f"{delivery.event_type} {delivery.event_id} to endpoint {delivery.endpoint}"
        if attempt.error is None:
            log.info("Delivered %s (attempt %d)", where, delivery.attempts)
            return None
        if delivery.attempts >= self.settings.max_attempts:
            log.warning("Failed to deliver %s after %d attempts: %s", where, delivery.attempts,
                        attempt.error)  # fmt: skip
            return None
        delay = outbound.retry_delay(
            delivery.attempts, base=self.settings.retry_base, cap=self.settings.retry_cap,
            jitter=self.jitter(),
        )  # fmt: skip
        log.info("Attempt %d of %s failed (%s); next in %.0f s", delivery.attempts, where,
                 attempt.error, delay)  # fmt: skip
        return delay

    async def _send(self, delivery: outbox.Delivery) -> Attempt:
        assert self._session is not None
        endpoint = self.endpoints[delivery.endpoint]
        body = body_of(delivery)
        headers = {
            "Content-Type": "application/json",
            outbound.SIGNATURE_HEADER: outbound.sign(
                endpoint.secret.get_secret_value(), int(time.time()), body
            ),
            outbound.EVENT_ID_HEADER: delivery.event_id,
            outbound.DELIVERY_ID_HEADER: delivery.id,
        }
        try:
            async with self._session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return Attempt(endpoint.url, response.status, None)
                said = (await response.content.read(MAX_ERROR)).decode(errors="replace").strip()
                error = f"HTTP {response.status}" + (f": {said}" if said else "")
                return Attempt(endpoint.url, response.status, error)
        except TimeoutError:
            return Attempt(endpoint.url, None, f"no answer within {self.settings.timeout:g} s")
        except aiohttp.ClientError as error:
            return Attempt(endpoint.url, None, f"{type(error).__name__}: {error}"[:MAX_ERROR])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
