"""Quota counters in Redis: `quota:<tenant uid>:<metric>:<period start>`, one per billing
period of the tenant's cycle (e.g. `quota:5f0c…:api_calls:20261115T0000Z`).

Redis is a cache here: every counter can be rebuilt from PostgreSQL, and is,
whenever it is missing (first use in a period, Redis restarted or flushed).
Each operation is one Lua script, so a check and its increment are one
atomic step and one round trip.

When Redis fails, the fault is recorded (log, /readyz, /metrics) and callers
fall back per the failure mode; the counters written meanwhile only in
PostgreSQL are remembered and dropped from Redis once it answers again, so
they are rebuilt rather than trusted stale.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tenantry.api import metrics
from tenantry.api.errors import Unavailable
from tenantry.api.usage.repository import CounterDelta
from tenantry.core.periods import period_key
from tenantry.core.resources import Aggregation

log = logging.getLogger("tenantry.api.quotas")

KEEP_AFTER_PERIOD = dt.timedelta(days=40)
"""Counters outlive their period by this much: late reports still find them."""

_CONSUME = """
local v = redis.call('GET', KEYS[1])
if not v then return {-1, 0} end
v = tonumber(v)
local limit, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit >= 0 and v + amount > limit then return {0, v} end
-- The amount as sent (a string), not `amount`: Lua numbers are doubles.
return {1, redis.call('INCRBY', KEYS[1], ARGV[2])}
"""

# Per key: op, value, time (ms). Counters that do not exist are left alone:
# the rebuild that creates them reads PostgreSQL, which has these events.
# Values are written as sent (strings): Lua numbers are doubles, exact only to 2^53.
_APPLY = """
for i, key in ipairs(KEYS) do
  local op, raw, at = ARGV[3*i-2], ARGV[3*i-1], tonumber(ARGV[3*i])
  local current = redis.call('GET', key)
  if current then
    if op == 'add' then
      redis.call('INCRBY', key, raw)
    elseif op == 'max' then
      if tonumber(raw) > tonumber(current) then redis.call('SET', key, raw, 'KEEPTTL') end
    elseif op == 'latest' then
      local seen = tonumber(redis.call('GET', key .. ':at') or '-1')
      if at >= seen then
        redis.call('SET', key, raw, 'KEEPTTL')
        redis.call('SET', key .. ':at', ARGV[3*i], 'KEEPTTL')
      end
    end
  end
end
return 0
"""

_SEED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  if ARGV[2] ~= '' then redis.call('SET', KEYS[1] .. ':at', ARGV[2], 'EX', ARGV[3]) end
  return 1
end
return 0
"""


class Outcome(IntEnum):
    MISSING = -1
    REFUSED = 0
    ADMITTED = 1


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    value: int  # the counter after an admission, or as it stood when refused


class CountersDown(Exception):
    """Redis did not answer; the caller falls back per the failure mode."""


def counters_unavailable() -> Unavailable:
    return Unavailable(
        "Quota counters are unavailable (Redis is unreachable) and this service is set to fail "
        "closed (TENANTRY_REDIS_FAILURE_MODE=fail_closed). Retry shortly.",
        code="counters_unavailable",
        headers={"Retry-After": "1"},
    )


OUTAGE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
"""What counts as Redis being away. Any other error (a script's ResponseError:
a corrupt counter, an overflow) is about one request's data, not Redis's
health: it must not switch every request to the fallback."""


def counter_key(tenant: str, metric: str, period_start: dt.datetime) -> str:
    return f"quota:{tenant}:{metric}:{period_key(period_start)}"


def _op(aggregation: Aggregation) -> str:
    if aggregation == Aggregation.MAX:
        return "max"
    if aggregation == Aggregation.LATEST:
        return "latest"
    return "add"


def _number(raw: bytes | str | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def expiry_seconds(period_end: dt.datetime, now: dt.datetime) -> int:
    return max(60, int((period_end + KEEP_AFTER_PERIOD - now).total_seconds()))


class Counters:
    def __init__(
        self,
        redis: Redis,
        probe_interval: float = 1.0,
        on_recovery: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.redis = redis
        self.probe_interval = probe_interval
        # Drops what other processes counted in PostgreSQL alone (the durable mark).
        self.on_recovery = on_recovery
        self.up = True
        metrics.REDIS_UP.set(1)
        self.failures = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self._last_probe = 0.0
        self._touched: set[str] = set()
        self._probe_lock = asyncio.Lock()
        self._reads: list[tuple[Sequence[str], asyncio.Future[list[int | None]]]] = []
        self._reader: asyncio.Task[None] | None = None
        self._consume = redis.register_script(_CONSUME)
        self._apply = redis.register_script(_APPLY)
        self._seed = redis.register_script(_SEED)

    # ------------------------------------------------------------- health

    def _fault(self, error: Exception) -> CountersDown:
        self.failures += 1
        metrics.REDIS_FAILURES.inc()
        self.last_error = f"{type(error).__name__}: {error}"
        if self.up:
            self.up = False
            metrics.REDIS_UP.set(0)
            self.down_since = time.monotonic()
            self._last_probe = time.monotonic()
            log.error(
                "Redis is unreachable (%s): quota counters fall back per the failure mode",
                self.last_error,
            )
        return CountersDown(self.last_error)

    def _recovered(self) -> bool:
        return self.up

    def touched(self, keys: Iterable[str]) -> None:
        """Counters written only in PostgreSQL: dropped from Redis once it is back."""
        self._touched.update(keys)

    async def available(self) -> bool:
        """Whether to use Redis now; while it is down, probe at most once per interval."""
        if self.up:
            return True
        if time.monotonic() - self._last_probe < self.probe_interval:
            return False
        async with self._probe_lock:
            if self._recovered():  # another request's probe won while we waited
                return True
            self._last_probe = time.monotonic()
            try:
                await self.redis.ping()
                dropped = await self._drop_touched()
                # What other processes, perhaps gone since, counted in PostgreSQL
                # alone: dropped before any request trusts Redis again.
                if self.on_recovery is not None:
                    dropped += await self.on_recovery()
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"
                return False
            self.up = True
            metrics.REDIS_UP.set(1)
            down = time.monotonic() - (self.down_since or time.monotonic())
            self.down_since = None
            try:
                # Requests that found Redis down while the probe ran wrote only to
                # PostgreSQL and touched their counters after the first drop.
                dropped += await self._drop_touched()
                # What other processes, perhaps gone since, counted meanwhile.
                if self.on_recovery is not None:
                    dropped += await self.on_recovery()
            except Exception as error:
                self._fault(error)
                return False
            log.warning(
                "Redis is reachable again after %.1f s; dropped %d counters written meanwhile, "
                "rebuilt from PostgreSQL on next use",
                down,
                dropped,
            )
            return True

    async def _drop_touched(self) -> int:
        """Delete the touched counters until none are left; how many were dropped."""
        dropped = 0
        while self._touched:
            stale = list(self._touched)
            await self.redis.delete(*stale, *(k + ":at" for k in stale))
            self._touched.difference_update(stale)
            dropped += len(stale)
        return dropped

    async def drop_all(self) -> int:
        """Delete every quota counter, so each is rebuilt from PostgreSQL on next use."""
        dropped = 0
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match="quota:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                dropped += int(await self.redis.delete(*batch))
                batch.clear()
        if batch:
            dropped += int(await self.redis.delete(*batch))
        return dropped

    # --------------------------------------------------------- operations

    async def consume(self, key: str, limit: int, amount: int) -> Decision:
        try:
            # Numbers as strings: the script hands `amount` to INCRBY untouched.
            outcome, value = await self._consume(keys=[key], args=[str(limit), str(amount)])
        except OUTAGE as error:
            self.touched([key])  # it may have counted before the answer was lost
            raise self._fault(error) from error
        except RedisError:
            # The script failed on this counter (e.g. not a number): drop it, so
            # the next use rebuilds it from PostgreSQL; Redis itself is fine.
            await self.forget([key])
            raise
        return Decision(Outcome(int(outcome)), int(value))

    async def forget(self, keys: Sequence[str]) -> None:
        """Drop counters (and their `:at`) whose movement may not match PostgreSQL.

        Used when a write failed after its counters moved, whichever way its
        commit went: deleting is right either way, since the next use rebuilds
        the counter from PostgreSQL under the exclusive lock. If Redis cannot be
        told now, the counters are dropped once it answers again. Never raises.
        """
        if not keys:
            return
        try:
            await self.redis.delete(*keys, *(k + ":at" for k in keys))
        except RedisError as error:
            self.touched(keys)
            if isinstance(error, OUTAGE):
                self._fault(error)
            else:
                log.error("Could not drop counters %s: %s", list(keys), error)

    async def apply(self, deltas: Sequence[CounterDelta]) -> None:
        if not deltas:
            return
        keys = [counter_key(d.tenant, d.metric, d.period_start) for d in deltas]
        args: list[Any] = []
        for d in deltas:
            args += [_op(d.aggregation), str(d.value), str(d.latest_ms)]
        try:
            await self._apply(keys=keys, args=args)
        except OUTAGE as error:
            self.touched(keys)
            raise self._fault(error) from error

    async def seed(self, key: str, value: int, latest_ms: int | None, ttl: int) -> None:
        """Create a counter from PostgreSQL's figure, unless one appeared meanwhile."""
        try:
            await self._seed(
                keys=[key], args=[str(value), "" if latest_ms is None else str(latest_ms), ttl]
            )
        except OUTAGE as error:
            raise self._fault(error) from error

    async def read(self, keys: Sequence[str]) -> list[int | None]:
        """Current values (None where missing), read after this call began.

        Reads that arrive while one is on its way to Redis wait and go together
        in the next single MGET: under load, one round trip serves many
        requests, each still answered from a read made after it arrived.
        """
        if not keys:
            return []
        future: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
        self._reads.append((keys, future))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_pending())
        return await future

    async def _read_pending(self) -> None:
        while self._reads:
            batch, self._reads = self._reads, []
            keys = list(dict.fromkeys(k for wanted, _ in batch for k in wanted))
            try:
                # The command itself: `mget()` adds a layer of argument handling per call.
                values = await self.redis.execute_command("MGET", *keys)  # type: ignore[no-untyped-call]
            except RedisError as error:
                failure = self._fault(error) if isinstance(error, OUTAGE) else error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                continue
            # A counter that is not a number is as good as missing: it is rebuilt.
            found = {k: _number(v) for k, v in zip(keys, values, strict=True)}
            for wanted, future in batch:
                if not future.done():
                    future.set_result([found[k] for k in wanted])

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError as error:
            self._fault(error)
            return False

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "failures": self.failures,
            "last_error": self.last_error,
            "down_for_seconds": None
            if self.down_since is None
            else round(time.monotonic() - self.down_since, 1),
            "pending_rebuilds": len(self._touched),
        }
