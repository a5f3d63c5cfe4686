"""Key lookup: checksum first, then a short-lived cache in front of PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from tenantry.core import keyformat
from tenantry.db import apikeys as repo
from tenantry.db.apikeys import KeyRow

log = logging.getLogger("tenantry.api.keys")


class KeyCache:
    """Key rows by hash, each reused for at most `ttl` seconds (never more than 1 s).

    That bound is what makes a revoked key stop within a second on every
    replica without any invalidation message. Unknown hashes are cached too,
    so a client hammering with a wrong key costs one query a TTL. A key in use
    is re-read in the background once half its TTL has passed, so requests
    seldom wait for PostgreSQL; none is ever served a row older than the TTL.
    """

    def __init__(self, engine: AsyncEngine, ttl: float) -> None:
        assert 0 < ttl <= 1.0
        self.engine = engine
        self.ttl = ttl
        self._entries: dict[str, tuple[KeyRow | None, float]] = {}
        self._loading: dict[str, asyncio.Future[KeyRow | None]] = {}

    async def get(self, key_hash: str) -> KeyRow | None:
        entry = self._entries.get(key_hash)
        if entry is not None:
            age = time.monotonic() - entry[1]
            if age < self.ttl:
                if age >= self.ttl / 2 and key_hash not in self._loading:
                    self._start(key_hash).add_done_callback(_quiet)
                return entry[0]
        future = self._loading.get(key_hash) or self._start(key_hash)
        return await asyncio.shield(future)

    def _start(self, key_hash: str) -> asyncio.Future[KeyRow | None]:
        future = asyncio.ensure_future(self._load(key_hash))
        self._loading[key_hash] = future
        return future

    async def _load(self, key_hash: str) -> KeyRow | None:
        try:
            started = time.monotonic()
            async with self.engine.connect() as conn:
                row = await repo.find_by_hash(conn, key_hash)
            if len(self._entries) > 100_000:
                self._entries.clear()  # a flood of made-up keys must not grow memory for ever
            # Stamped with the start of the read: the row is no fresher than that.
            self._entries[key_hash] = (row, started)
            return row
        finally:
            self._loading.pop(key_hash, None)


def _quiet(future: asyncio.Future[KeyRow | None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("Failed to re-read an API key", exc_info=future.exception())


class LastUsed:
    """When each key was last used, written in batches: not a write per request."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pending: dict[int, dt.datetime] = {}

    def note(self, key_id: int, at: dt.datetime) -> None:
        self._pending[key_id] = at

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with self.engine.begin() as conn:
                await repo.record_last_used(conn, pending)
        except Exception:
            log.warning("Failed to record %d keys' last use", len(pending), exc_info=True)
            for key_id, at in pending.items():
                self._pending.setdefault(key_id, at)


@dataclass(frozen=True)
class Answer:
    body: bytes
    key_id: int
    tenant: str
    generation: int
    until: float


class Answers:
    """Introspection answers per key hash, reused for a fraction of a second.

    A gateway asks before every request it serves, mostly about the same few
    keys; rebuilding the answer (key, tenant, plan, a Redis read) each time
    would cost more than everything else the call does. An answer is dropped
    as soon as this replica writes usage or quota for its tenant, so only
    other replicas' writes can be up to `ttl` late. Revocation stays within a
    second: settings keep `ttl` plus the key cache's TTL at or below 1 s.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._answers: dict[str, Answer] = {}
        self._generations: dict[str, int] = {}
        self._refreshing: set[str] = set()

    def get(self, key_hash: str) -> Answer | None:
        answer = self._answers.get(key_hash)
        if (
            answer is None
            or time.monotonic() >= answer.until
            or self._generations.get(answer.tenant, 0) != answer.generation
        ):
            return None
        return answer

    def refresh_due(self, key_hash: str, answer: Answer) -> bool:
        """True once per answer past half its life: rebuild it before anyone waits for it."""
        if answer.until - time.monotonic() > self.ttl / 2 or key_hash in self._refreshing:
            return False
        self._refreshing.add(key_hash)
        return True

    def refreshed(self, key_hash: str) -> None:
        self._refreshing.discard(key_hash)

    def drop(self, key_hash: str) -> None:
        self._answers.pop(key_hash, None)

    def generation(self, tenant: str) -> int:
        """Read before the figures an answer holds: a write after it makes the answer stale."""
        return self._generations.get(tenant, 0)

    def put(
        self,
        key_hash: str,
        body: bytes,
        key_id: int,
        tenant: str,
        generation: int,
        expires: dt.datetime | None,
    ) -> None:
        if self.ttl <= 0:
            return
        until = time.monotonic() + self.ttl
        if expires is not None:
            until = min(
                until, time.monotonic() + (expires - dt.datetime.now(dt.UTC)).total_seconds()
            )
        if len(self._answers) > 100_000:
            self._answers.clear()
        self._answers[key_hash] = Answer(body, key_id, tenant, generation, until)

    def changed(self, tenant: str) -> None:
        """This replica wrote usage or quota for `tenant`: its answers are stale."""
        self._generations[tenant] = self._generations.get(tenant, 0) + 1


async def lookup(cache: KeyCache, presented: str, now: dt.datetime) -> KeyRow | None:
    """The active key row for a presented key, or None (unknown, revoked, expired alike).

    Rows are found by the hash's index; the hash is then compared in constant
    time, so timing tells nothing about how close a guess came.
    """
    key_hash = keyformat.hash_key(presented)
    row = await cache.get(key_hash)
    if row is None or not hmac.compare_digest(row.key_hash, key_hash) or not row.active(now):
        return None
    return row
