"""Page cursors: opaque to clients, they name the last item of the previous page.

A cursor is `<UTC timestamp>_<uuid>` (`20261101T000000.000000Z_9f1c...`): lists ordered
by a time and an id, newest first, resume strictly after it, so items added meanwhile
never shift the pages. URL-safe as is.
"""

from __future__ import annotations

import datetime as dt
import uuid

from tenantry.api.errors import Unprocessable

_FORMAT = "%Y%m%dT%H%M%S.%fZ"


def encode(moment: dt.datetime, item_id: str) -> str:
    return f"{moment.astimezone(dt.UTC):{_FORMAT}}_{item_id}"


def decode(raw: str | None) -> tuple[dt.datetime, str] | None:
    """The (time, id) a cursor names; None for the first page; 422 if this API did not
    give it."""
    if raw is None:
        return None
    moment, _, item_id = raw.partition("_")
    try:
        return dt.datetime.strptime(moment, _FORMAT).replace(tzinfo=dt.UTC), str(uuid.UUID(item_id))
    except ValueError:
        raise Unprocessable(
            f"cursor={raw!r} is not a cursor this API gave: pass `nextCursor` from the previous "
            "page as is.",
            code="invalid_cursor",
        ) from None
