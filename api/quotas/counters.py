"""Quota counters in Redis: `quota:<tenant>:<metric>:<YYYY-MM>`.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.api.usage.periods import period_bounds
from tenantry.api.usage.repository import CounterDelta
from tenantry.operator.resources import Aggregation

log = logging.getLogger("tenantry.api.quotas")

KEEP_AFTER_PERIOD = dt.timedelta(days=40)
"""Counters outlive their month by this much: late reports still find them."""

_CONSUME = """
local v = redis.call('GET', KEYS[1])
if not v then return {-1, 0} end
v = tonumber(v)
local limit, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit >= 0 and v + amount > limit then return {0, v} end
return {1, redis.call('INCRBY', KEYS[1], amount)}
"""

# Per key: op, value, time (ms). Counters that do not exist are left alone:
# the rebuild that creates them reads PostgreSQL, which has these events.
_APPLY = """
for i, key in ipairs(KEYS) do
  local op, v, at = ARGV[3*i-2], tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local current = redis.call('GET', key)
  if current then
    if op == 'add' then
      redis.call('INCRBY', key, v)
    elseif op == 'max' then
      if v > tonumber(current) then redis.call('SET', key, v, 'KEEPTTL') end
    elseif op == 'latest' then
      local seen = tonumber(redis.call('GET', key .. ':at') or '-1')
      if at >= seen then
        redis.call('SET', key, v, 'KEEPTTL')
        redis.call('SET', key .. ':at', at, 'KEEPTTL')
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


def counter_key(tenant: str, metric: str, period: str) -> str:
    return f"quota:{tenant}:{metric}:{period}"


def _op(aggregation: Aggregation) -> str:
    if aggregation == Aggregation.MAX:
        return "max"
    if aggregation == Aggregation.LATEST:
        return "latest"
    return "add"


def expiry_seconds(period: str, now: dt.datetime) -> int:
    _, end = period_bounds(period)
    return max(60, int((end + KEEP_AFTER_PERIOD - now).total_seconds()))


class Counters:
    def __init__(self, redis: Redis, probe_interval: float = 1.0) -> None:
        self.redis = redis
        self.probe_interval = probe_interval
        self.up = True
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
        self.last_error = f"{type(error).__name__}: {error}"
        if self.up:
            self.up = False
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
            stale = list(self._touched)
            try:
                await self.redis.ping()
                if stale:
                    await self.redis.delete(*stale, *(k + ":at" for k in stale))
            except RedisError as error:
                self.last_error = f"{type(error).__name__}: {error}"
                return False
            self._touched.difference_update(stale)
            self.up = True
            down = time.monotonic() - (self.down_since or time.monotonic())
            self.down_since = None
            log.warning(
                "Redis is reachable again after %.1f s; dropped %d counters written meanwhile, "
                "rebuilt from PostgreSQL on next use",
                down,
                len(stale),
            )
            return True

    # --------------------------------------------------------- operations

    async def consume(self, key: str, limit: int, amount: int) -> Decision:
        try:
            outcome, value = await self._consume(keys=[key], args=[limit, amount])
        except RedisError as error:
            self.touched([key])  # it may have counted before the answer was lost
            raise self._fault(error) from error
        return Decision(Outcome(int(outcome)), int(value))

    async def undo(self, key: str, amount: int) -> None:
        """Give back an admission whose transaction then failed."""
        try:
            await self.redis.decrby(key, amount)
        except RedisError as error:
            self.touched([key])
            raise self._fault(error) from error

    async def apply(self, deltas: Sequence[CounterDelta]) -> None:
        if not deltas:
            return
        keys = [counter_key(d.tenant, d.metric, d.period) for d in deltas]
        args: list[Any] = []
        for d in deltas:
            args += [_op(d.aggregation), d.value, d.latest_ms]
        try:
            await self._apply(keys=keys, args=args)
        except RedisError as error:
            self.touched(keys)
            raise self._fault(error) from error

    async def seed(self, key: str, value: int, latest_ms: int | None, ttl: int) -> None:
        """Create a counter from PostgreSQL's figure, unless one appeared meanwhile."""
        try:
            await self._seed(keys=[key], args=[value, "" if latest_ms is None else latest_ms, ttl])
        except RedisError as error:
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
                down = self._fault(error)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(down)
                continue
            found = {k: None if v is None else int(v) for k, v in zip(keys, values, strict=True)}
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
