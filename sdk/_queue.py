"""The durable usage queue: a SQLite file the events wait in until the API has them.

An event is in the file before `record` returns (committed, WAL, `synchronous
= FULL`), and leaves it only when the API has answered for it: counted, a
duplicate of one counted before, or refused. Refused events are *parked*
(kept in the file with the API's reason), never dropped. A crash between the
API's answer and the delete sends the event again, and the API counts each
transaction id once: exactly once, end to end.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL UNIQUE,
    body           TEXT NOT NULL  -- the event as the API reads it (JSON)
);
CREATE TABLE IF NOT EXISTS parked (
    transaction_id TEXT PRIMARY KEY,
    body           TEXT NOT NULL,
    code           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    parked_at      TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Queued:
    seq: int
    transaction_id: str
    body: str

    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass(frozen=True)
class Parked:
    """An event the API refused, kept with its reason."""

    transaction_id: str
    event: dict[str, Any]
    code: str
    reason: str
    parked_at: dt.datetime


class UsageQueue:
    """Safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # committed survives a power loss too
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.executescript(_SCHEMA)

    def put(self, transaction_id: str, event: Mapping[str, Any]) -> bool:
        """Commit one event; False when its transaction id waits in the queue already."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (transaction_id, body) VALUES (?, ?)",
                (transaction_id, json.dumps(event, separators=(",", ":"))),
            )
            return cursor.rowcount == 1

    def peek(self, limit: int) -> list[Queued]:
        """The oldest events, at most `limit`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, transaction_id, body FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Queued(*row) for row in rows]

    def settle(
        self, done: Iterable[Queued], refused: Iterable[tuple[Queued, str, str]] = ()
    ) -> None:
        """In one transaction: delete what the API has, park what it refused (code, reason)."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row, code, reason in refused:
                    self._db.execute(
                        "INSERT OR REPLACE INTO parked VALUES (?, ?, ?, ?, ?)",
                        (row.transaction_id, row.body, code, reason, now),
                    )
                    self._db.execute("DELETE FROM events WHERE seq = ?", (row.seq,))
                self._db.executemany(
                    "DELETE FROM events WHERE seq = ?", [(row.seq,) for row in done]
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def pending(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM events").fetchone()
        return int(count)

    def parked(self) -> list[Parked]:
        with self._lock:
            rows = self._db.execute(
                "SELECT transaction_id, body, code, reason, parked_at FROM parked "
                "ORDER BY parked_at, transaction_id"
            ).fetchall()
        return [
            Parked(tx, json.loads(body), code, reason, dt.datetime.fromisoformat(at))
            for tx, body, code, reason, at in rows
        ]

    def requeue(self, transaction_ids: Sequence[str]) -> int:
        """Send parked events again (after fixing what refused them); how many."""
        moved = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for tx in transaction_ids:
                    row = self._db.execute(
                        "SELECT body FROM parked WHERE transaction_id = ?", (tx,)
                    ).fetchone()
                    if row is None:
                        continue
                    self._db.execute(
                        "INSERT OR IGNORE INTO events (transaction_id, body) VALUES (?, ?)",
                        (tx, row[0]),
                    )
                    self._db.execute("DELETE FROM parked WHERE transaction_id = ?", (tx,))
                    moved += 1
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return moved

    def close(self) -> None:
        with self._lock:
            self._db.close()
