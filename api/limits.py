"""The largest body any route reads: refused by its declared length before a route runs.

Routes that read their body themselves (usage, webhooks, signup) count the bytes
as they come as well (`read_body`), for bodies sent without a length.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

DRAIN = 16 * 1024 * 1024
"""Up to this much of a refused body is read and dropped, for the client's sake."""


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                drained = await self._drain(receive, int(declared))
                await self._refuse(send, int(declared), keep_alive=drained)
                return
        await self.app(scope, receive, send)

    async def _drain(self, receive: Receive, size: int) -> bool:
        """Read what was sent (up to DRAIN bytes), so the client, still sending, reads the
        answer instead of a reset connection; True if it was all read."""
        if size > DRAIN:
            return False
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return bool(message["type"] == "http.request")

    async def _refuse(self, send: Send, size: int, keep_alive: bool) -> None:
        body = json.dumps({"error": {
            "code": "payload_too_large",
            "message": f"The body is {size} bytes; the limit is {self.limit} "
                       "(TENANTRY_MAX_BODY_BYTES). Send less at a time.",
            "details": {"limit_bytes": self.limit},
        }}).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *([] if keep_alive else [(b"connection", b"close")]),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
