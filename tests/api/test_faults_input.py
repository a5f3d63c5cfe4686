"""Hostile input: every malformed request gets a 4xx saying what was wrong, and the
well-formed events sent beside it are counted all the same."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from api_harness import ApiServer, World

pytestmark = [pytest.mark.cluster, pytest.mark.faults]


def event(transaction_id: str, **changes: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return {"transaction_id": transaction_id, "metric": "messages", "value": 1, "timestamp": now,
            **changes}  # fmt: skip


HOSTILE_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("NUL in an id", event("a\x00b")),
    ("NUL in a property", event("p", properties={"user": "x\x00y"})),
    ("NUL in a metric", event("m", metric="mess\x00ages")),
    ("a huge value", event("h", value=10**30)),
    ("a float beyond doubles", event("f", value=1e308 * 10)),
    ("a negative value", event("n", value=-5)),
    ("a fractional value", event("q", value=1.5)),
    ("year 1", event("y1", timestamp="0001-01-01T00:00:00Z")),
    ("year 9999", event("y9", timestamp="9999-12-31T23:59:59Z")),
    ("February 30th", event("f30", timestamp="2026-02-30T00:00:00Z")),
    ("no time zone", event("tz", timestamp="2026-11-30T10:00:00")),
    ("a number for a time", event("num", timestamp=10**20)),
    ("a long id", event("x" * 10_000)),
    ("a nested property", event("np", properties={"a": {"b": 1}})),
]


async def test_hostile_events_are_refused_one_by_one_and_the_rest_counted(
    make_world: Callable[..., World], api_server: ApiServer
) -> None:
    world = make_world(limits={"messages": 10**9})
    key = world.issued_key("hostile", scopes=["usage:write", "quota:consume"])
    good = [event(f"good-{n}") for n in range(3)]
    batch = [good[0], *[e for _, e in HOSTILE_EVENTS], *good[1:]]
    async with api_server.client(key) as client:
        answer = await client.post(
            "/v1/usage", content=json.dumps(batch and {"events": batch}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert (error["details"]["accepted"], error["details"]["duplicates"]) == (3, 0)
        refused = {r["index"]: r for r in error["details"]["rejected"]}
        for index, (what, _) in enumerate(HOSTILE_EVENTS, start=1):
            assert index in refused, f"{what} was counted"
            assert refused[index]["message"], what
        quota = (await client.get("/v1/quota")).json()
    assert quota["quotas"]["messages"]["used"] == 3  # only the good ones


BODIES: list[tuple[str, bytes, set[int]]] = [
    ("not UTF-8", b'{"events": [\xff\xfe]}', {400, 422}),
    ("not JSON", b"{events: oops", {400, 422}),
    ("deeply nested", b'{"events": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", {400, 422}),
    ("deeply nested objects", b'{"events": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
     {400, 422}),
    ("a huge number", b'{"events": [{"value": ' + b"9" * 100_000 + b"}]}", {400, 422}),
    ("empty", b"", {400, 422}),
    ("too large", b'{"events": ["' + b"x" * 2_000_000 + b'"]}', {413}),
    ("a lone surrogate", b'{"events": [{"transaction_id": "\\ud800"}]}', {400, 422}),
]  # fmt: skip


async def test_hostile_bodies_get_a_4xx_that_says_what_is_wrong(
    make_world: Callable[..., World], api_server: ApiServer
) -> None:
    world = make_world()
    key = world.issued_key("bodies", scopes=["usage:write", "quota:consume"])
    async with api_server.client(key) as client:
        for what, body, expected in BODIES:
            for path in ("/v1/usage", "/v1/usage/snapshot", "/v1/quota/consume"):
                answer = await client.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
                assert answer.status_code in expected, (what, path, answer.text[:300])
                assert len(answer.json()["error"]["message"]) > 20, (what, path)
