"""Each request's id: taken from `X-Request-Id` or made, returned, and in its log lines.

Invariant: every HTTP response carries `X-Request-Id`, and every log record
made while its request is handled (by any logger, tasks it started included)
carries the same id as `record.request_id`. A client's id is kept only when it
is 1 to MAX_LENGTH safe characters (letters, digits, `._:=+/-`); anything else
is replaced, never echoed, so a header cannot forge or break a log line.
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-Id"
MAX_LENGTH = 128
_SAFE = re.compile(rf"[A-Za-z0-9._:=+/-]{{1,{MAX_LENGTH}}}")

current: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id(given: str | None) -> str:
    """The client's id if it is safe to log and return; a new one otherwise."""
    if given is not None and _SAFE.fullmatch(given):
        return given
    return os.urandom(16).hex()  # as random as a UUID's 122 bits, at a quarter of the cost


class RequestId:
    """Sets the request's id for its log lines and returns it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        label_log_records()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = request_id(given.decode("latin-1") if given is not None else None)
        token = current.set(rid)

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if any(k == b"x-request-id" for k, _ in headers):
                    headers = [(k, v) for k, v in headers if k != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            current.reset(token)


def label_log_records() -> None:
    """Give log records made during a request its id (once per process)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "labels_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        rid = current.get()
        if rid is not None:
            record.request_id = rid
        return record

    factory.labels_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
