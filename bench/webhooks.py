"""Benchmark of Stripe's webhooks into the API, beside a bare endpoint in the same run.

Run: ``.venv/bin/python bench/webhooks.py [--seconds PER_FIGURE] [--workers N]``

It starts its own PostgreSQL, Redis and stripe-mock (hack/testbed.py), stores
SUBSCRIPTIONS subscriptions as the operator stores them, and runs the API
(``tenantry api serve``, Stripe on: every worker process runs the event worker
too) and a bare FastAPI app whose endpoint only reads the body, each in a
uvicorn subprocess with the same number of workers. No Kubernetes: nothing on
these paths talks to it. Every request is a distinct, signed
``customer.subscription.updated`` event built from stripe-mock's subscription
(Stripe's shape, about 4 KB), for one of the stored subscriptions. The load
comes from bench/ingest.py's raw keep-alive client.

Figures and goals (PASS/MISS printed per goal; the script exits 0):

* acknowledgements per second, closed loop, beside the bare endpoint's answers,
  measured in short turns (API, bare, bare, API, ...: whatever else the machine
  does weighs on both alike): at least half of them. The API's workers run all
  along; they process after a burst of deliveries (see api/stripe/worker.py), so
  the backlog each API turn leaves is processed before the next turn, and weighs
  on neither;
* p99 latency at a fixed rate (open loop): within 2x of the bare endpoint's,
  measured in rounds (the two servers in turn, the order swapped each round);
* the SDK's signature check alone (``stripe.WebhookSignature.verify_header``),
  in-process: under 1% of the time requests take (the webhook's mean latency at
  that rate: time checking over time answering);
* the workers' processing rate while a backlog lasts (no goal).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

import stripe  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from ingest import Connection, closed_loop, percentile  # noqa: E402
from sqlalchemy import text  # noqa: E402
from testbed import Postgres, Redis, StripeMock, free_port  # noqa: E402

from tenantry.core.lifecycle import Terms  # noqa: E402
from tenantry.core.resources import PlanSpec  # noqa: E402
from tenantry.db import subscriptions as subscriptions_repository  # noqa: E402
from tenantry.db.engine import create_engine  # noqa: E402

TENANTRY = str(REPO / ".venv" / "bin" / "tenantry")
PYTHON = str(REPO / ".venv" / "bin" / "python")
SECRET = "whsec_" + secrets.token_hex(16)
SUBSCRIPTIONS = 200
RATE = 400
"""Requests per second of the latency figures: well within both servers' throughput."""
LATENCY_ROUNDS = 4
THROUGHPUT_ROUNDS = 6
"""Turns of each server in the throughput figures: short and many, so that whatever
else the machine does weighs on both alike."""
GOAL_SHARE = 0.5
GOAL_P99_RATIO = 2.0
GOAL_VERIFY_SHARE = 0.01
PLAN = PlanSpec.model_validate(
    {"displayName": "Bench", "price": {"amount": 4900, "currency": "USD", "interval": "month"}}
)
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:{port}"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def sign(body: bytes, at: int) -> str:
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def post(path: str, body: bytes, signature: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nStripe-Signature: {signature}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Stack:
    root: Path
    workers: int
    postgres: Postgres | None = None
    redis: Redis | None = None
    stripe_mock: StripeMock | None = None
    processes: tuple[subprocess.Popen[bytes], ...] = ()
    api_port: int = 0
    bare_port: int = 0
    subscription: dict[str, Any] | None = None  # stripe-mock's fixture
    envelope: dict[str, Any] | None = None
    uids: tuple[str, ...] = ()

    def start(self) -> Stack:
        self.postgres = Postgres(self.root / "postgres").start()
        self.redis = Redis(self.root / "redis").start()
        self.stripe_mock = StripeMock(self.root / "stripe-mock").start()
        client = stripe.StripeClient("sk_test_bench", base_addresses={"api": self.stripe_mock.url})
        self.subscription = json.loads(
            client.v1.subscriptions.retrieve("sub_123").last_response.body
        )
        self.envelope = json.loads(client.v1.events.retrieve("evt_123").last_response.body)
        kubeconfig = self.root / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG.replace("{port}", str(free_port())))
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "TENANTRY_DATABASE_URL": self.postgres.url,
            "TENANTRY_REDIS_URL": self.redis.url,
            "TENANTRY_ENVIRONMENT": "production",
            "TENANTRY_ADMIN_TOKEN": secrets.token_hex(24),
            "TENANTRY_INTROSPECTION_TOKEN": secrets.token_hex(24),
            "TENANTRY_DATABASE_POOL_SIZE": "20",
            "TENANTRY_BILLING_RUN_INTERVAL": "0",
            "TENANTRY_STRIPE_API_KEY": "sk_test_bench",
            "TENANTRY_STRIPE_API_BASE": self.stripe_mock.url,
            "TENANTRY_STRIPE_WEBHOOK_SECRET": SECRET,
        }
        subprocess.run([TENANTRY, "api", "migrate"], env=env, check=True, capture_output=True)
        self.uids = asyncio.run(self._subscriptions())
        self.api_port, self.bare_port = free_port(), free_port()
        log = (self.root / "api.log").open("ab")
        api = subprocess.Popen(
            [TENANTRY, "--log-level", "WARNING", "api", "serve", "--host", "127.0.0.1",
             "--port", str(self.api_port), "--workers", str(self.workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        bare = subprocess.Popen(
            [PYTHON, __file__, "--serve-bare", str(self.bare_port), "--workers", str(self.workers)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.processes = (api, bare)
        for port in (self.api_port, self.bare_port):
            self._wait_http(port)
        return self

    async def _subscriptions(self) -> tuple[str, ...]:
        assert self.postgres is not None
        engine = create_engine(self.postgres.url)
        started = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        uids = tuple(str(uuid.uuid4()) for _ in range(SUBSCRIPTIONS))
        async with engine.begin() as conn:
            for uid in uids:
                await subscriptions_repository.save_terms(
                    conn,
                    Terms(uid=uid, namespace="bench", name=f"s-{uid[:8]}", tenant_uid=uid,
                          tenant_name=f"t-{uid[:8]}", plan_name="bench", plan=PLAN,
                          started_at=started, anchor_day=started.day),
                )  # fmt: skip
        await engine.dispose()
        return uids

    def _wait_http(self, port: int) -> None:
        import urllib.request

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"server on port {port} did not start; see {self.root / 'api.log'}")

    def events(self, count: int) -> list[bytes]:
        """`count` distinct signed subscription events, spread over the subscriptions;
        each subscription's statuses flip in the order of their `created`."""
        assert self.subscription is not None
        assert self.envelope is not None
        made = []
        now = int(time.time())
        statuses = ("active", "past_due")
        for i in range(count):
            uid = self.uids[i % len(self.uids)]
            turn = i // len(self.uids)
            status, previous = statuses[turn % 2], statuses[(turn + 1) % 2]
            obj = {**self.subscription, "id": f"sub_{uid[:8]}{uid[9:13]}", "status": status,
                   "metadata": {"tenantry_subscription_uid": uid}}  # fmt: skip
            data = {"object": obj, "previous_attributes": {"status": previous}}
            event = {**self.envelope, "id": f"evt_{uuid.uuid4().hex[:24]}",
                     "type": "customer.subscription.updated", "created": now - count + i,
                     "data": data}  # fmt: skip
            body = json.dumps(event).encode()
            made.append(post("/webhooks/stripe", body, sign(body, now)))
        return made

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        for part in (self.stripe_mock, self.redis, self.postgres):
            if part is not None:
                part.stop()


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(p for child in children.split() for p in process_tree(int(child)))]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def to_bare(requests: list[bytes]) -> list[bytes]:
    return [r.replace(b"POST /webhooks/stripe", b"POST /bare", 1) for r in requests]


def expect(status: int, body: bytes) -> None:
    if status not in (200, 202):
        raise SystemExit(f"unexpected answer {status}: {body[:300]!r}")


async def open_loop(
    port: int, requests: list[bytes], rate: int, connections: int = 32
) -> list[float]:
    """Send `requests` one every 1/rate s, whatever the answers; latency (ms) of each,
    from when it is written (or waits for a free connection) to when its answer is read."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []

    async def one(data: bytes) -> None:
        queued = time.perf_counter()
        conn = await idle.get()
        status, body = await conn.send(data)
        latencies.append((time.perf_counter() - queued) * 1000)
        expect(status, body)
        idle.put_nowait(conn)

    tasks = []
    start = time.perf_counter() + 0.05
    for i, data in enumerate(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(data)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return latencies


def verify_seconds(stack: Stack, calls: int = 5000, repeats: int = 5) -> float:
    """Seconds of one SDK signature check of a request's body, in this process: the best
    of a few rounds, as timeit does, so that other work on the machine weighs least."""
    request = stack.events(1)[0]
    head, body = request.split(b"\r\n\r\n", 1)
    header = next(
        line.split(b": ", 1)[1].decode()
        for line in head.split(b"\r\n")
        if line.startswith(b"Stripe-Signature")
    )
    payload = body.decode()
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            stripe.WebhookSignature.verify_header(payload, header, SECRET, 300)
        rounds.append((time.perf_counter() - started) / calls)
    return min(rounds)


async def drain_rate(url: str) -> tuple[int, float]:
    """Wait until the workers have processed every pending event: (events, seconds)."""
    engine = create_engine(url)
    pending = "SELECT count(*) FROM stripe_events WHERE state = 'pending'"
    async with engine.connect() as conn:
        backlog = int(await conn.scalar(text(pending)) or 0)
        started = time.perf_counter()
        left = backlog
        while left:
            await asyncio.sleep(0.1)
            await conn.rollback()
            left = int(await conn.scalar(text(pending)) or 0)
        elapsed = time.perf_counter() - started
        unhandled = await conn.scalar(
            text("SELECT count(*) FROM stripe_events WHERE state <> 'handled'")
        )
    await engine.dispose()
    if unhandled:
        raise SystemExit(f"{unhandled} events were not handled; see the API's log")
    return backlog, elapsed


async def turns(
    stack: Stack, requests: list[bytes], seconds: float, connections: int = 64
) -> dict[str, float]:
    """Acknowledgements per second and the bare endpoint's answers per second, measured in
    short turns (A B B A A B ...), with the CPU each costs; and the workers' processing
    rate. Each turn of the API sends events of its own (a replay would cost less than a
    new event); the backlog it leaves is processed, and timed, before the next turn, so
    that it weighs on neither."""
    assert stack.postgres is not None
    assert stack.postgres.service is not None
    api = process_tree(stack.processes[0].pid)
    bare = process_tree(stack.processes[1].pid)
    postgres = process_tree(stack.postgres.service.process.pid)
    totals = dict.fromkeys(("api_n", "api_s", "api_cpu", "pg_cpu", "api_client_cpu", "bare_n",
                            "bare_s", "bare_cpu", "bare_client_cpu", "backlog", "drain_s"),
                           0.0)  # fmt: skip
    turn = seconds / 2 / THROUGHPUT_ROUNDS
    share = len(requests) // THROUGHPUT_ROUNDS

    async def api_turn(events: list[bytes]) -> None:
        before = cpu_seconds(api), cpu_seconds(postgres), time.process_time()
        sent, elapsed = await closed_loop(stack.api_port, events, connections, turn, expect)
        totals["api_n"] += sent
        totals["api_s"] += elapsed
        totals["api_cpu"] += cpu_seconds(api) - before[0]
        totals["pg_cpu"] += cpu_seconds(postgres) - before[1]
        totals["api_client_cpu"] += time.process_time() - before[2]
        backlog, drained = await drain_rate(stack.postgres.url)
        totals["backlog"] += backlog
        totals["drain_s"] += drained

    async def bare_turn(events: list[bytes]) -> None:
        before = cpu_seconds(bare), time.process_time()
        sent, elapsed = await closed_loop(stack.bare_port, events, connections, turn, expect)
        totals["bare_n"] += sent
        totals["bare_s"] += elapsed
        totals["bare_cpu"] += cpu_seconds(bare) - before[0]
        totals["bare_client_cpu"] += time.process_time() - before[1]

    for round_ in range(THROUGHPUT_ROUNDS):  # the order swapped each round
        events = requests[round_ * share : (round_ + 1) * share]
        if round_ % 2:
            await bare_turn(to_bare(events))
            await api_turn(events)
        else:
            await api_turn(events)
            await bare_turn(to_bare(events))
    return {
        "webhook_per_s": totals["api_n"] / totals["api_s"],
        "bare_per_s": totals["bare_n"] / totals["bare_s"],
        "webhook_api_cpu_ms": totals["api_cpu"] / totals["api_n"] * 1000,
        "webhook_pg_cpu_ms": totals["pg_cpu"] / totals["api_n"] * 1000,
        "bare_cpu_ms": totals["bare_cpu"] / totals["bare_n"] * 1000,
        "api_client_cpu_ms": totals["api_client_cpu"] / totals["api_n"] * 1000,
        "bare_client_cpu_ms": totals["bare_client_cpu"] / totals["bare_n"] * 1000,
        "processed_per_s": totals["backlog"] / totals["drain_s"],
    }


async def run(stack: Stack, seconds: float) -> dict[str, Any]:
    assert stack.postgres is not None
    figures: dict[str, Any] = {}
    warm = stack.events(500)
    await closed_loop(stack.api_port, warm, 8, 5, expect)
    await closed_loop(stack.bare_port, to_bare(warm), 8, 5, expect)
    await drain_rate(stack.postgres.url)
    # In rounds, each server in turn and the order swapped each round: whatever else the
    # machine does weighs on both alike. Each round's events are new to the API.
    figures["bare_latencies"], figures["webhook_latencies"] = [], []
    for round_ in range(LATENCY_ROUNDS):
        requests = stack.events(int(RATE * seconds / LATENCY_ROUNDS))
        bare = open_loop(stack.bare_port, to_bare(requests), RATE)
        hook = open_loop(stack.api_port, requests, RATE)
        for key, measure in (("bare", bare), ("webhook", hook))[:: 1 if round_ % 2 else -1]:
            figures[f"{key}_latencies"] += await measure
        await drain_rate(stack.postgres.url)
    figures.update(await turns(stack, stack.events(int(2500 * seconds)), seconds))
    figures["verify_s"] = verify_seconds(stack)
    return figures


def report(f: dict[str, Any], workers: int) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    share = f["webhook_per_s"] / f["bare_per_s"]
    hook_p50, hook_p99 = (
        percentile(f["webhook_latencies"], 0.5),
        percentile(f["webhook_latencies"], 0.99),
    )
    bare_p50, bare_p99 = percentile(f["bare_latencies"], 0.5), percentile(f["bare_latencies"], 0.99)
    verify_ms = f["verify_s"] * 1000
    # A share of the time requests take: the time spent checking signatures over the time
    # spent answering, a ratio of sums, so of the mean latency (not of the median).
    hook_mean = sum(f["webhook_latencies"]) / len(f["webhook_latencies"])
    verify_share = verify_ms / hook_mean
    print(f"API workers: {workers}; machine: {os.cpu_count()} cores")
    print(f"POST /webhooks/stripe (acknowledged) {f['webhook_per_s']:>10,.0f} requests/s")
    print(f"bare endpoint, same bodies           {f['bare_per_s']:>10,.0f} requests/s")
    print(f"  webhook share of bare              {share:>10.1%}")
    api_cpu, pg_cpu = f["webhook_api_cpu_ms"], f["webhook_pg_cpu_ms"]
    print(f"CPU per request: webhook {api_cpu:.3f} ms in the API and {pg_cpu:.3f} ms in "
          f"PostgreSQL; bare {f['bare_cpu_ms']:.3f} ms")  # fmt: skip
    # On the same cores: what the load client spends weighs on both throughputs alike.
    print(f"  the load client's, per request:  webhook {f['api_client_cpu_ms']:.3f} ms, "
          f"bare {f['bare_client_cpu_ms']:.3f} ms")  # fmt: skip
    print(f"at {RATE}/s: webhook p50 {hook_p50:.2f} ms, mean {hook_mean:.2f} ms, "
          f"p99 {hook_p99:.2f} ms; "
          f"bare p50 {bare_p50:.2f} ms, p99 {bare_p99:.2f} ms")  # fmt: skip
    print(f"signature check (SDK) alone          {verify_ms * 1000:>10.1f} µs "
          f"({verify_share:.2%} of the webhook's mean latency, "
          f"{verify_ms / f['webhook_api_cpu_ms']:.1%} of its CPU in the API)")  # fmt: skip
    print(f"workers' processing, with a backlog  {f['processed_per_s']:>10,.0f} events/s")
    print()
    print(f"{verdict(share >= GOAL_SHARE)}  acknowledgements >= {GOAL_SHARE:.0%} of the bare "
          "endpoint's throughput")  # fmt: skip
    print(f"{verdict(hook_p99 <= GOAL_P99_RATIO * bare_p99)}  webhook p99 within "
          f"{GOAL_P99_RATIO:g}x of the bare endpoint's at {RATE}/s")  # fmt: skip
    print(f"{verdict(verify_share < GOAL_VERIFY_SHARE)}  signature check < "
          f"{GOAL_VERIFY_SHARE:.0%} of a request's time")  # fmt: skip


def serve_bare(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "webhooks:bare_app", factory=True, host="127.0.0.1", port=port, workers=workers,
        log_level="warning", access_log=False, app_dir=str(Path(__file__).parent),
    )  # fmt: skip


def bare_app() -> FastAPI:
    """The baseline: a bare FastAPI endpoint that reads the body and answers."""
    app = FastAPI()

    @app.post("/bare")
    async def bare(request: Request) -> dict[str, bool]:
        await request.body()
        return {"received": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="Seconds per figure.")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server.")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare, args.workers)
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
