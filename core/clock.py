"""The time every part of Tenantry asks for: the system's, or the system's moved forward.

Billing moves through trials, periods and due dates that take weeks. Tests
(and people trying Tenantry out) move time forward instead of waiting: with
`TENANTRY_CLOCK_OFFSET_FILE` set, the operator and the API both add the number
of seconds that file holds to the system time. Never set it in production.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

Clock = Callable[[], dt.datetime]

OFFSET_FILE_ENV = "TENANTRY_CLOCK_OFFSET_FILE"


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class OffsetFileClock:
    """System time plus the seconds in a file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._offset = dt.timedelta()

    def offset(self) -> dt.timedelta:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return dt.timedelta()
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            text = self.path.read_text().strip()
            self._offset = dt.timedelta(seconds=float(text or 0))
            self._stamp = stamp
        return self._offset

    def __call__(self) -> dt.datetime:
        return system_clock() + self.offset()


def from_environment() -> Clock:
    """The system clock, or an offset clock when `TENANTRY_CLOCK_OFFSET_FILE` is set."""
    path = os.environ.get(OFFSET_FILE_ENV)
    return OffsetFileClock(Path(path)) if path else system_clock
