"""Benchmark of the API's hot paths, each beside a baseline measured in the same run.

Run: ``.venv/bin/python bench/ingest.py [--seconds PER_FIGURE] [--workers N]``

It starts its own PostgreSQL, Redis and control plane (hack/testbed.py), one
Tenant on one Plan (status set by hand: no operator), one API key, the API
(``tenantry api serve``) and a bare FastAPI app that only echoes, each in a
uvicorn subprocess with the same number of workers. The load comes from a
small keep-alive HTTP/1.1 client on raw sockets, so the client costs little
of the machine's two cores.

Figures and goals (PASS/MISS printed per goal; the script exits 0):

* Batched ingestion, 100 events a request with 10% replays, in events per
  second, beside a raw ``COPY`` of the same rows into the same table:
  at least 50,000 events/s, and at least 15% of COPY's rate.
* Single-event POSTs beside the bare echo endpoint (requests per second; no goal).
* Introspection at a fixed rate (open loop: requests are sent on schedule
  whatever the answers): p99 under 2 ms; and its throughput, closed loop, at
  least 70% of the bare endpoint's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from fastapi import FastAPI, Request  # noqa: E402
from testbed import ControlPlane, Postgres, Redis, free_port  # noqa: E402

TENANTRY = str(REPO / ".venv" / "bin" / "tenantry")
PYTHON = str(REPO / ".venv" / "bin" / "python")
BATCH = 100
REPLAY_SHARE = 0.10
GOAL_EVENTS = 50_000
GOAL_COPY_SHARE = 0.15
GOAL_P99_MS = 2.0
GOAL_INTROSPECTION_SHARE = 0.70
INTROSPECTION_RATE = 1000
TENANT_NAMESPACE, TENANT_NAME, PLAN = "bench", "acme", "bench-plan"

METRICS = [
    {"name": "api_calls", "aggregation": "count"},
    {"name": "messages", "aggregation": "sum"},
    {"name": "devices", "aggregation": "max"},
    {"name": "storage_bytes", "aggregation": "latest"},
    {"name": "active_users", "aggregation": "unique_count", "field": "user"},
]


# ----------------------------------------------------------------- the client


class Connection:
    """One keep-alive HTTP/1.1 connection; requests are pre-encoded bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def request(path: str, body: bytes, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{auth}\r\n"
    )
    return head.encode() + body


async def closed_loop(
    port: int, requests: list[bytes], connections: int, seconds: float,
    check: Callable[[int, bytes], None] = lambda status, body: None,
) -> tuple[int, float]:  # fmt: skip
    """Send `requests` in order over `connections`, until done or `seconds`; (count, elapsed)."""
    pool = [await Connection.open(port) for _ in range(connections)]
    cursor = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(conn: Connection) -> None:
        nonlocal cursor, sent
        while cursor < len(requests) and time.perf_counter() < deadline:
            data = requests[cursor]
            cursor += 1
            status, body = await conn.send(data)
            check(status, body)
            sent += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    elapsed = time.perf_counter() - started
    for conn in pool:
        conn.close()
    return sent, elapsed


async def open_loop(
    port: int, data: bytes, rate: int, seconds: float, connections: int = 32
) -> list[float]:
    """Send one request every 1/rate s, whatever the answers; latency (ms) of each.

    Latency runs from when the request is written (the event loop's timers are
    millisecond-coarse, so "when it was due" would add the client's own lateness)
    to when its answer is read; a request that finds all connections busy counts
    its wait for one too.
    """
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []

    async def one() -> None:
        queued = time.perf_counter()
        conn = await idle.get()
        status, body = await conn.send(data)
        latencies.append((time.perf_counter() - queued) * 1000)
        assert status == 200, body
        idle.put_nowait(conn)

    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -------------------------------------------------------------------- the stack


@dataclass
class Stack:
    root: Path
    workers: int
    postgres: Postgres | None = None
    redis: Redis | None = None
    plane: ControlPlane | None = None
    processes: tuple[subprocess.Popen[bytes], ...] = ()
    api_port: int = 0
    echo_port: int = 0
    key: str = ""
    introspection_token: str = ""

    def start(self) -> Stack:
        self.postgres = Postgres(self.root / "postgres").start()
        self.redis = Redis(self.root / "redis").start()
        self.plane = ControlPlane(self.root / "control-plane").start()
        kubeconfig = str(self.plane.kubeconfig)
        kubectl = ["kubectl", "--kubeconfig", kubeconfig]
        subprocess.run([*kubectl, "apply", "-f", str(REPO / "crds")], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([*kubectl, "wait", "--for", "condition=Established", "crd", "--all",
                        "--timeout=60s"], check=True, capture_output=True)  # fmt: skip
        objects = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TENANT_NAMESPACE}},
            {"apiVersion": "tenantry.io/v1alpha1", "kind": "Plan", "metadata": {"name": PLAN},
             "spec": {"displayName": "Bench", "price": {"amount": 0, "currency": "USD"},
                      "limits": {"api_calls": -1, "messages": 10**12}, "metrics": METRICS,
                      "usageMaxAgeDays": 35}},
            {"apiVersion": "tenantry.io/v1alpha1", "kind": "Tenant",
             "metadata": {"name": TENANT_NAME, "namespace": TENANT_NAMESPACE},
             "spec": {"displayName": "Acme", "billingEmail": "b@acme.example", "paused": True}},
        ]  # fmt: skip
        subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects}).encode(),
            check=True, capture_output=True)  # fmt: skip
        # No operator here: the status it would write is set by hand.
        subprocess.run([*kubectl, "patch", "tenant", TENANT_NAME, "-n", TENANT_NAMESPACE,
                        "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"namespace": "tenant-acme", "plan": PLAN}})],
                       check=True, capture_output=True)  # fmt: skip
        env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "TENANTRY_DATABASE_URL": self.postgres.url,
            "TENANTRY_REDIS_URL": self.redis.url,
            "TENANTRY_ENVIRONMENT": "production",
            "TENANTRY_ADMIN_TOKEN": secrets.token_hex(24),
            "TENANTRY_INTROSPECTION_TOKEN": (token := secrets.token_hex(24)),
            "TENANTRY_DATABASE_POOL_SIZE": "20",
        }
        self.introspection_token = token
        subprocess.run([TENANTRY, "api", "migrate"], env=env, check=True, capture_output=True)
        self.key = asyncio.run(self._insert_key())
        self.api_port, self.echo_port = free_port(), free_port()
        log = (self.root / "api.log").open("ab")
        api = subprocess.Popen(
            [TENANTRY, "--log-level", "WARNING", "api", "serve", "--host", "127.0.0.1",
             "--port", str(self.api_port), "--workers", str(self.workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        echo = subprocess.Popen(
            [PYTHON, __file__, "--serve-echo", str(self.echo_port),
             "--workers", str(self.workers)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.processes = (api, echo)
        for port in (self.api_port, self.echo_port):
            self._wait_http(port)
        return self

    async def _insert_key(self) -> str:
        from sqlalchemy.ext.asyncio import create_async_engine

        from tenantry.core import keyformat
        from tenantry.db import apikeys as repository

        assert self.postgres is not None
        key = keyformat.generate()
        engine = create_async_engine(self.postgres.url)
        async with engine.begin() as conn:
            await repository.insert_key(
                conn, resource_uid=str(uuid.uuid4()), resource_namespace=TENANT_NAMESPACE,
                resource_name="bench", tenant_namespace=TENANT_NAMESPACE, tenant_name=TENANT_NAME,
                tenant_uid=None,
                key_prefix=keyformat.display_prefix(key), key_hash=keyformat.hash_key(key),
                scopes=["usage:write", "license:read", "quota:consume"], expires_at=None,
            )  # fmt: skip
        await engine.dispose()
        return key

    def _wait_http(self, port: int) -> None:
        import urllib.request

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"server on port {port} did not start; see {self.root / 'api.log'}")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        for part in (self.plane, self.redis, self.postgres):
            if part is not None:
                part.stop()


# ------------------------------------------------------------------ workloads


def events(count: int, start: int, now: dt.datetime, label: str = "ev") -> list[dict[str, Any]]:
    made = []
    for i in range(start, start + count):
        metric = METRICS[i % len(METRICS)]["name"]
        at = now - dt.timedelta(seconds=i % 3600)
        made.append({
            "transaction_id": f"{label}-{i}",
            "metric": metric,
            "value": 1 + i % 50,
            "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "properties": {"user": f"u{i % 1000}", "region": "eu"},
        })  # fmt: skip
    return made


def batches(count: int, key: str, label: str = "ev") -> list[bytes]:
    """`count` requests of BATCH events; REPLAY_SHARE of each repeats events of 40 batches back."""
    now = dt.datetime.now(dt.UTC)
    fresh = int(BATCH * (1 - REPLAY_SHARE))
    made: list[list[dict[str, Any]]] = []
    for b in range(count):
        batch = events(fresh, b * fresh, now, label)
        if b >= 40:
            batch += made[b - 40][: BATCH - fresh]
        else:
            batch += events(BATCH - fresh, 10**9 + b * BATCH, now, label)
        made.append(batch)
    return [request("/v1/usage", json.dumps({"events": b}).encode(), key) for b in made]


def copy_rows(count: int) -> bytes:
    now = dt.datetime.now(dt.UTC)
    lines = []
    for e in events(count, 0, now):
        properties = json.dumps(e["properties"])
        lines.append(f"bench/copy\t{e['transaction_id']}\t{e['metric']}\t{e['value']}\t"
                     f"{e['timestamp']}\t{properties}\n")  # fmt: skip
    return "".join(lines).encode()


async def bench_copy(url: str, rows: int) -> float:
    """Rows per second of a raw COPY into usage_events (the same table, its indexes)."""
    import psycopg

    data = copy_rows(rows)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        started = time.perf_counter()
        async with conn.cursor() as cursor:
            sql = ("COPY usage_events (tenant, transaction_id, metric, value, ts, properties)"
                   " FROM STDIN")  # fmt: skip
            async with cursor.copy(sql) as copy:
                for offset in range(0, len(data), 1 << 20):
                    await copy.write(data[offset : offset + (1 << 20)])
        await conn.commit()
        return rows / (time.perf_counter() - started)


def expect(status: int, body: bytes) -> None:
    if status != 200:
        raise SystemExit(f"unexpected answer {status}: {body[:300]!r}")


async def alternate(
    a: tuple[int, list[bytes]], b: tuple[int, list[bytes]], seconds: float, connections: int = 64
) -> tuple[float, float]:
    """Requests per second of two servers, measured in turns (A B A B) so that any
    background work on the machine weighs on both alike."""
    done = {0: [0, 0.0], 1: [0, 0.0]}
    for _ in range(2):
        for which, (port, requests) in enumerate((a, b)):
            sent, elapsed = await closed_loop(port, requests, connections, seconds / 4, expect)
            done[which][0] += sent
            done[which][1] += elapsed
    return done[0][0] / done[0][1], done[1][0] / done[1][1]


async def run(stack: Stack, seconds: float) -> dict[str, Any]:
    """The figures, quietest first: COPY last, as it leaves the most work behind."""
    assert stack.postgres is not None
    figures: dict[str, Any] = {}

    body = json.dumps({"apiKey": stack.key}).encode()
    introspect = request("/internal/api-keys/introspect", body, stack.introspection_token)
    echo = request("/echo", body)
    await closed_loop(stack.api_port, [introspect] * 500, 8, 5)  # warm-up
    await closed_loop(stack.echo_port, [echo] * 500, 8, 5)
    latencies = await open_loop(stack.api_port, introspect, INTROSPECTION_RATE, seconds / 2)
    figures["introspection_p50_ms"] = percentile(latencies, 0.50)
    figures["introspection_p99_ms"] = percentile(latencies, 0.99)
    many = int(20_000 * seconds)
    figures["introspection_per_s"], figures["echo_per_s"] = await alternate(
        (stack.api_port, [introspect] * many), (stack.echo_port, [echo] * many), seconds
    )

    now = dt.datetime.now(dt.UTC)
    single = [
        request("/v1/usage", json.dumps({"events": [e]}).encode(), stack.key)
        for e in events(int(5000 * seconds), 0, now, "single")
    ]
    echo_single = [r.replace(b"POST /v1/usage", b"POST /echo") for r in single]
    figures["single_requests_per_s"], figures["echo_single_requests_per_s"] = await alternate(
        (stack.api_port, single), (stack.echo_port, echo_single), seconds
    )

    requests = batches(int(GOAL_EVENTS * 2.5 * seconds / BATCH), stack.key)
    duplicates = 0
    accepted = 0

    def tally(status: int, body: bytes) -> None:
        nonlocal duplicates, accepted
        expect(status, body)
        answer = json.loads(body)
        accepted += answer["accepted"]
        duplicates += answer["duplicates"]

    await closed_loop(stack.api_port, batches(50, stack.key, "warm-up"), 4, 10)
    sent, elapsed = await closed_loop(stack.api_port, requests, 48, seconds, tally)
    figures["batched_events_per_s"] = sent * BATCH / elapsed
    figures["batched_duplicate_share"] = duplicates / max(1, accepted + duplicates)

    figures["copy_rows_per_s"] = await bench_copy(stack.postgres.url, 400_000)
    return figures


def report(f: dict[str, Any], workers: int) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    copy_share = f["batched_events_per_s"] / f["copy_rows_per_s"]
    intro_share = f["introspection_per_s"] / f["echo_per_s"]
    print(f"API workers: {workers}; machine: {os.cpu_count()} cores")
    print(f"raw COPY into usage_events        {f['copy_rows_per_s']:>12,.0f} rows/s")
    print(f"batched ingestion (100/request)   {f['batched_events_per_s']:>12,.0f} events/s "
          f"({f['batched_duplicate_share']:.0%} replays)")  # fmt: skip
    print(f"  share of raw COPY               {copy_share:>12.1%}")
    print(f"single-event POST /v1/usage       {f['single_requests_per_s']:>12,.0f} requests/s")
    print(f"bare echo endpoint                {f['echo_single_requests_per_s']:>12,.0f} requests/s"
          f"  (single-event POSTs at "
          f"{f['single_requests_per_s'] / f['echo_single_requests_per_s']:.0%})")  # fmt: skip
    p50, p99 = f["introspection_p50_ms"], f["introspection_p99_ms"]
    print(f"introspection at {INTROSPECTION_RATE}/s             p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"introspection throughput          {f['introspection_per_s']:>12,.0f} requests/s")
    print(f"bare echo, same body              {f['echo_per_s']:>12,.0f} requests/s")
    print(f"  introspection share of echo     {intro_share:>12.1%}")
    print()
    print(f"{verdict(f['batched_events_per_s'] >= GOAL_EVENTS)}  batched ingestion >= "
          f"{GOAL_EVENTS:,} events/s")  # fmt: skip
    print(f"{verdict(copy_share >= GOAL_COPY_SHARE)}  batched ingestion >= "
          f"{GOAL_COPY_SHARE:.0%} of raw COPY")  # fmt: skip
    print(f"{verdict(f['introspection_p99_ms'] < GOAL_P99_MS)}  introspection p99 < "
          f"{GOAL_P99_MS} ms at {INTROSPECTION_RATE}/s")  # fmt: skip
    print(f"{verdict(intro_share >= GOAL_INTROSPECTION_SHARE)}  introspection throughput >= "
          f"{GOAL_INTROSPECTION_SHARE:.0%} of the bare endpoint")  # fmt: skip


def serve_echo(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "ingest:echo_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        app_dir=str(Path(__file__).parent),
    )


def echo_app() -> FastAPI:
    """The baseline: a bare FastAPI endpoint that returns the JSON it was sent."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="Seconds per figure.")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server.")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        serve_echo(args.serve_echo, args.workers)
        return 0
    root = Path(tempfile.mkdtemp(prefix="tenantry-bench-"))
    stack = Stack(root, args.workers)
    started = time.monotonic()
    try:
        stack.start()
        print(f"(stack up in {time.monotonic() - started:.0f} s)", flush=True)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        figures = asyncio.run(run(stack, args.seconds))
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(figures, args.workers)
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
