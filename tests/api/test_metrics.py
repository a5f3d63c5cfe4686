"""The API's metrics on their own port, summed over its workers; its request ids and
JSON log lines, as `tenantry --log-format json api serve --workers 2` writes them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_harness import ApiServer, World, now_iso
from prometheus_client.parser import text_string_to_metric_families
from support import Kube
from testbed import Redis

pytestmark = pytest.mark.cluster

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture(scope="module")
def two_workers(
    kube: Kube, database: str, redis_server: Redis, clock_file: Path, tmp_path_factory: Any
) -> Iterator[ApiServer]:
    """`tenantry --log-format json api serve --workers 2 --access-log`; its temporary
    files (the metrics directory) under the server's own TMPDIR."""
    folder = tmp_path_factory.mktemp("api-workers")
    (folder / "tmp").mkdir()
    server = ApiServer(
        {
            "KUBECONFIG": str(kube.kubeconfig),
            "TENANTRY_ENVIRONMENT": "production",
            "TENANTRY_DATABASE_URL": database,
            "TENANTRY_REDIS_URL": redis_server.url,
            "TENANTRY_CLOCK_OFFSET_FILE": str(clock_file),
            "TENANTRY_BILLING_RUN_INTERVAL": "0",
            "TMPDIR": str(folder / "tmp"),
        },
        folder / "api.log",
        command=("--log-format", "json", "api", "serve", "--workers", "2", "--access-log"),
    )
    try:
        yield server.start()
    finally:
        server.stop()


async def test_the_metrics_port_sums_what_every_worker_counted(
    make_world: Any, two_workers: ApiServer
) -> None:
    world: World = make_world(limits={"api_calls": 1})
    key = world.issued_key("metered")
    server = two_workers
    before = samples(await server.metrics())

    async def probe() -> int:
        # A connection each, so that both workers take some.
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return (await client.get("/healthz")).status_code

    assert await asyncio.gather(*(probe() for _ in range(60))) == [200] * 60
    events = [
        {"transaction_id": uuid.uuid4().hex, "metric": "messages", "value": 1,
         "timestamp": now_iso()}
        for _ in range(5)
    ]  # fmt: skip
    async with server.client(key) as client:
        assert (await client.post("/v1/usage", json={"events": events})).status_code == 200
        assert (await client.post("/v1/usage", json={"events": events[:2]})).status_code == 200
        quota = [await client.post("/v1/quota/consume", json={"metric": "api_calls"})
                 for _ in range(3)]  # fmt: skip
        assert [q.status_code for q in quota] == [200, 429, 429]
        assert (await client.get("/nowhere/secret-path-7")).status_code == 404
    async with server.admin() as admin:
        missing = await admin.get(f"/v1/admin/invoices/{uuid.uuid4()}")
        assert missing.status_code == 404
    async with server.client() as client:  # served ahead of the router, counted all the same
        assert (await client.post("/webhooks/stripe", content=b"{}")).status_code == 503
    after = samples(await server.metrics())

    # Both workers counted, and the port adds them up: every request is there once.
    workers = {p.stem.rsplit("_", 1)[1] for p in _metrics_directory(server).glob("*.db")}
    assert len(workers) == 2, workers
    requests = "tenantry_api_request_duration_seconds_count"
    assert moved(before, after, requests, method="GET", route="/healthz", status="200") == 60
    assert moved(before, after, "tenantry_api_usage_events_total", outcome="accepted") == 5
    assert moved(before, after, "tenantry_api_usage_events_total", outcome="duplicate") == 2
    assert moved(before, after, "tenantry_api_quota_requests_total", outcome="admitted") == 1
    assert moved(before, after, "tenantry_api_quota_requests_total", outcome="refused") == 2
    assert moved(before, after, requests, method="POST", route="/v1/quota/consume",
                 status="429") == 2  # fmt: skip
    # Routes by their template, never the raw path.
    assert moved(before, after, requests, method="GET", route="/v1/admin/invoices/{invoice_id}",
                 status="404") == 1  # fmt: skip
    assert moved(before, after, requests, method="GET", route="unmatched", status="404") == 1
    assert moved(before, after, requests, method="POST", route="/webhooks/stripe",
                 status="503") == 1  # fmt: skip
    assert "secret-path-7" not in await server.metrics()
    assert after[("tenantry_api_redis_up", frozenset())] == 1
    # The public port serves none.
    async with server.client() as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_requests_carry_their_id_into_the_answer_and_the_logs(
    two_workers: ApiServer,
) -> None:
    async with two_workers.client() as client:
        given = await client.get("/healthz", headers={"X-Request-Id": "trace-42.a:b"})
        forged = await client.get("/healthz", headers={"X-Request-Id": 'x" level=ERROR'})
        too_long = await client.get("/readyz", headers={"X-Request-Id": "a" * 129})
        made = await client.get("/nowhere")
    assert given.headers["x-request-id"] == "trace-42.a:b"
    for answer in (forged, too_long, made):  # refused or missing: one of ours instead
        assert len(answer.headers["x-request-id"]) == 32
        assert answer.headers["x-request-id"] != "a" * 129
    ids = {a.headers["x-request-id"] for a in (given, forged, too_long, made)}
    assert len(ids) == 4

    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in two_workers.log.read_text().splitlines() if line]

    # Every line is one JSON object; the access lines name their request.
    lines = await asyncio.to_thread(_wait_for_ids, logged, ids)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    started = [line for line in lines if line["message"].startswith("API service started")]
    assert len(started) == 2  # one line per worker, in JSON too
    assert 'x" level=ERROR' not in two_workers.log.read_text()


def _wait_for_ids(logged: Any, ids: set[str]) -> list[dict[str, Any]]:
    from support import wait_for

    def complete() -> list[dict[str, Any]] | None:
        lines = logged()
        seen = {line.get("request_id") for line in lines if line["logger"] == "uvicorn.access"}
        return lines if ids <= seen else None

    result: list[dict[str, Any]] = wait_for(complete, "the access lines of the requests", 10)
    return result


def test_the_metrics_directory_is_removed_when_serving_ends(
    kube: Kube, database: str, redis_server: Redis, clock_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "tmp").mkdir()
    server = ApiServer(
        {
            "KUBECONFIG": str(kube.kubeconfig),
            "TENANTRY_DATABASE_URL": database,
            "TENANTRY_REDIS_URL": redis_server.url,
            "TENANTRY_BILLING_RUN_INTERVAL": "0",
            "TMPDIR": str(tmp_path / "tmp"),
        },
        tmp_path / "api.log",
    ).start()
    try:
        directory = _metrics_directory(server)
        assert httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").status_code == 200
    finally:
        server.stop()
    assert not directory.exists()


def _metrics_directory(server: ApiServer) -> Path:
    tmp = Path(server.env["TMPDIR"])
    (directory,) = tmp.glob("tenantry-api-metrics-*")
    return directory
