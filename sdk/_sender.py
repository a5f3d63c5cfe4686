"""The background sender: queued usage to `POST /v1/usage`, in batches, until acknowledged.

A thread, not an asyncio task: instances are written both ways, and a thread
sends whether or not the application runs an event loop (and never blocks
one). `record` only commits to the queue and wakes it.

What the API answers decides each event's fate (see `_queue.py`):

- 200: every event counted or a duplicate: deleted.
- 422 `invalid_events`: the named events are parked with their reasons, the
  rest (counted beside them) deleted.
- any other 400/413/422 refuses the whole batch without saying which event is at
  fault: the batch is sent again one event at a time, and a lone event refused
  is parked. Nothing valid is lost for sharing a batch with something invalid.
- no answer, 5xx, 429: retried, after a delay that doubles per failure up to
  `max_delay`, drawn at random below it ("full jitter", so a fleet coming back
  from an outage does not return in step), or the API's Retry-After if longer.
- 401/403: the key is refused; sending stops, the events stay queued, and the
  error is kept (`Client.flush` raises it). A new process with a good key sends them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from tenantry.sdk._errors import ApiUnavailable, AuthError, InvalidRequest, TenantryError
from tenantry.sdk._queue import Queued, UsageQueue

log = logging.getLogger("tenantry.sdk")

MAX_BATCH = 1000
"""The API's largest batch."""


def backoff(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after `failures` failures in a row: uniform below base * 2^(n-1),
    capped (full jitter)."""
    ceiling = min(cap, base * 2 ** max(failures - 1, 0))
    return rng.uniform(0, ceiling)


def refusals(batch: list[Queued], error: InvalidRequest) -> list[tuple[Queued, str, str]] | None:
    """The events a 422 `invalid_events` names, with code and reason; None when the
    refusal is of the whole batch."""
    rejected = error.details.get("rejected") if error.code == "invalid_events" else None
    if not isinstance(rejected, list):
        return None
    named = []
    for entry in rejected:
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(batch):
            return None  # not an answer about this batch: treat it as whole
        named.append((batch[index], str(entry.get("code")), str(entry.get("message"))))
    return named


class Sender(threading.Thread):
    def __init__(
        self,
        queue: UsageQueue,
        post: Callable[[list[dict[str, Any]]], Any],
        *,
        batch_size: int = 500,
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name="tenantry-usage-sender", daemon=True)
        self.queue = queue
        self.post = post
        self.batch_size = min(batch_size, MAX_BATCH)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self.error: AuthError | None = None
        self.failures = 0
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._one_by_one = 0  # events left to send alone after a whole-batch refusal

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            limit = 1 if self._one_by_one > 0 else self.batch_size
            batch = self.queue.peek(limit)
            if not batch:
                self._woken.wait(1.0)
                self._woken.clear()
                continue
            delay = self._send(batch)
            if self.error is not None:
                return
            if delay:
                self._stopping.wait(delay)

    def _send(self, batch: list[Queued]) -> float:
        """Send one batch and settle it; seconds to wait before the next try."""
        try:
            self.post([row.event() for row in batch])
        except InvalidRequest as error:
            return self._refused(batch, error)
        except AuthError as error:
            self.error = error
            log.error(
                "Usage sending stopped: the API refused the key (%s). %d events stay queued "
                "in %s.", error.message, self.queue.pending(), self.queue.path,
            )  # fmt: skip
            return 0
        except (ApiUnavailable, TenantryError) as error:
            self.failures += 1
            wait = backoff(self.failures, self.base_delay, self.max_delay, self.rng)
            if isinstance(error, ApiUnavailable) and error.retry_after:
                wait = max(wait, min(error.retry_after, self.max_delay))
            (log.warning if self.failures in (1, 10) or self.failures % 100 == 0 else log.debug)(
                "Usage not sent (%s); try %d again in %.1f s, %d events queued",
                error.message, self.failures + 1, wait, self.queue.pending(),
            )  # fmt: skip
            return wait
        if self.failures:
            log.info("Usage sent again after %d failed tries", self.failures)
        self.failures = 0
        self.queue.settle(batch)
        self._one_by_one = max(self._one_by_one - len(batch), 0)
        return 0

    def _refused(self, batch: list[Queued], error: InvalidRequest) -> float:
        self.failures = 0
        named = refusals(batch, error)
        if named is None and len(batch) > 1:
            # Which event is at fault is unknown: each goes alone, and only it is parked.
            if error.status == 413:
                self.batch_size = max(self.batch_size // 2, 1)
            self._one_by_one = len(batch)
            log.warning("A batch of %d events was refused as a whole (%s); sending them one "
                        "at a time", len(batch), error.message)  # fmt: skip
            return 0
        if named is None:
            named = [(batch[0], error.code or f"http_{error.status}", error.message)]
        parked = {row.seq for row, _, _ in named}
        for row, code, reason in named:
            log.warning("Usage event %s refused and parked (%s): %s",
                        row.transaction_id, code, reason)  # fmt: skip
        self.queue.settle([row for row in batch if row.seq not in parked], named)
        self._one_by_one = max(self._one_by_one - len(batch), 0)
        return 0
