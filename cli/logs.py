"""Log lines as `tenantry --log-format` asks: `text` for people, `json` (one object a
line) for log collectors.

Both name what a line is about: the Kubernetes object kopf's per-object logger
records (`k8s_ref`: kind, namespace, name), and the context fields a component
puts on its records (the API's `request_id`, anything logged with `extra=`).
A JSON line always has `time` (UTC, ISO 8601), `level`, `logger` and
`message`; context fields never overwrite them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("httpx", "httpx2", "httpcore")
"""One line per HTTP request drowns what the operator did."""

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message", "asctime", "taskName",
    "k8s_ref", "k8s_skip",  # kopf's: the object, read below; whether to post it as an Event
    "settings",  # kopf's too: its whole OperatorSettings, on every object's line
    "color_message",  # uvicorn's: the message again, with terminal colours
}  # fmt: skip


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The object a record is about and the other fields put on it, by name."""
    fields: dict[str, Any] = {}
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict):
        fields.update({key: ref[key] for key in ("kind", "namespace", "name") if ref.get(key)})
    for key, value in vars(record).items():
        if key not in _RECORD_FIELDS and not key.startswith("_"):
            plain = value is None or isinstance(value, str | int | float | bool)
            fields[key] = value if plain else str(value)
    return fields


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: [Kind namespace/name] message [key=value ...]`."""

    names_objects = True  # operator/main.py leaves a formatter that does alone

    def __init__(self) -> None:
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        fields = context(record)
        kind, namespace, name = (fields.pop(key, None) for key in ("kind", "namespace", "name"))
        prefix = ""
        if kind or name:
            where = "/".join(part for part in (namespace, name) if part)
            prefix = f"[{kind or 'object'} {where}] "
        rest = " ".join(f"{key}={value}" for key, value in fields.items())
        if prefix or rest:
            record = logging.makeLogRecord(vars(record))
            record.msg, record.args = prefix + record.getMessage(), None
            if rest:
                record.msg += f" [{rest}]"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the context fields."""

    names_objects = True

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            **context(record),
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def config(level: str, form: str) -> dict[str, Any]:
    """The `logging.config.dictConfig` of every tenantry process; `tenantry api serve`
    hands the same to uvicorn, which applies it in each worker process too."""
    if form not in FORMATS:
        raise ValueError(f"log format {form!r}: use text or json")
    formatter = TextFormatter if form == "text" else JsonFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tenantry": {"()": formatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "tenantry"},
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING"} for name in NOISY},
    }
