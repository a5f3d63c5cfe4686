"""Package-level promises of the instance SDK, and its parts that need no API."""

from __future__ import annotations

import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tenantry.sdk import backoff
from tenantry.sdk._client import figures_on_the_wire, usage_event
from tenantry.sdk._queue import UsageQueue


def test_importing_the_sdk_pulls_in_no_server_dependency() -> None:
    # A fresh interpreter, so modules imported by other tests do not count.
    code = (
        "import sys, tenantry.sdk\n"
        "server = {'kopf', 'fastapi', 'starlette', 'sqlalchemy', 'kubernetes', 'lightkube',"
        " 'psycopg', 'redis', 'uvicorn', 'httpx2', 'aiohttp', 'stripe', 'yaml', 'jinja2',"
        " 'pydantic_settings', 'tenantry.operator', 'tenantry.api', 'tenantry.db',"
        " 'tenantry.core', 'tenantry.cli'}\n"
        "print(sorted(m for m in sys.modules if m in server or m.split('.')[0] in server\n"
        "             or '.'.join(m.split('.')[:2]) in server))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (30, 60.0)]:
        delays = [backoff(failures, 0.5, 60.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not one value
        assert min(delays) < ceiling * 0.2


def test_a_wrong_event_raises_at_record_time() -> None:
    with pytest.raises(TypeError, match="int"):
        usage_event("api_calls", 1.5, "tx", None, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        usage_event("api_calls", True, "tx", None, None)
    with pytest.raises(ValueError, match="snake_case"):
        usage_event("API Calls", 1, "tx", None, None)
    with pytest.raises(ValueError, match="transaction_id"):
        usage_event("api_calls", 1, "has space", None, None)
    with pytest.raises(TypeError, match="Decimal"):
        figures_on_the_wire({"load": 0.75})
    assert figures_on_the_wire({"load": Decimal("0.75"), "devices": 3}) == {
        "load": "0.75",
        "devices": 3,
    }


def test_the_queue_keeps_events_until_settled_and_parks_refusals(tmp_path: Path) -> None:
    queue = UsageQueue(tmp_path / "usage.sqlite3")
    assert queue.put("a", {"transaction_id": "a"})
    assert queue.put("b", {"transaction_id": "b"})
    assert not queue.put("a", {"transaction_id": "a"})  # queued already: once
    a, b = queue.peek(10)
    queue.settle([a], [(b, "unknown_metric", "not metered")])
    assert queue.pending() == 0
    (parked,) = queue.parked()
    assert (parked.transaction_id, parked.code) == ("b", "unknown_metric")
    assert parked.event == {"transaction_id": "b"}
    queue.close()
    # Durable: another process (here, another connection) finds what was left.
    again = UsageQueue(tmp_path / "usage.sqlite3")
    assert again.requeue(["b"]) == 1
    assert [row.transaction_id for row in again.peek(10)] == ["b"]
    again.close()
