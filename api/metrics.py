"""The API's Prometheus metrics, counted in every worker and summed across them.

Invariant: under `tenantry api serve`, each worker process writes its metrics
to files in PROMETHEUS_MULTIPROC_DIR (a directory the serve command makes
before any worker starts and removes when it ends), and the metrics port,
served by the serve command's own process (api/cli.py, which defines no
metric of its own), adds up the files of every worker that ever ran: a scrape
sees the whole service, whichever worker took each request. A worker that
ends cleanly marks itself dead, which drops its gauges (counters and histograms
keep their totals); one killed keeps its last gauges until serving ends. The
public port serves no metrics.

tenantry_api_request_duration_seconds{method, route, status}
    one observation per HTTP request, by route template (`/v1/admin/invoices/
    {invoice_id}`, never the raw path; `unmatched` when no route matched)
tenantry_api_usage_events_total{outcome}
    usage events: accepted, duplicate, rejected
tenantry_api_quota_requests_total{outcome}
    quota checks: admitted, refused (over quota)
tenantry_api_counted_in_database_total
    units counted in PostgreSQL alone while Redis was unreachable
tenantry_api_status_writes_total
    usage summaries written to Tenant status
tenantry_api_redis_up
    1 when every worker's last Redis call succeeded, 0 when one's failed
tenantry_api_redis_failures_total
    Redis calls that failed
tenantry_api_billing_run_duration_seconds{trigger, result}
    billing runs (trigger: schedule, admin; result: succeeded, failed)
tenantry_api_invoices_finalized_total
    invoices finalized by billing runs
tenantry_api_stripe_events_received_total{delivery}
    verified Stripe webhook deliveries stored: new, duplicate (a replay)
tenantry_api_stripe_events_processed_total{result}
    Stripe events processed: handled, ignored, retried, failed
tenantry_api_stripe_event_lag_seconds
    from Stripe's creating an event to its processing here
tenantry_api_stripe_events_pending, tenantry_api_stripe_oldest_pending_event_age_seconds
    the stored events still to be processed, and how long the oldest has waited,
    as a worker last counted them (every BACKLOG_INTERVAL seconds)
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name; any other is `other`, so no client can add label values."""
BACKLOG_INTERVAL = 15.0
"""Seconds between two counts of the pending Stripe events, per worker."""

REQUEST_SECONDS = Histogram(
    "tenantry_api_request_duration_seconds",
    "HTTP requests by method, route template and status, with their duration.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
USAGE_EVENTS = Counter(
    "tenantry_api_usage_events", "Usage events by outcome (accepted, duplicate, rejected).",
    ["outcome"],
)  # fmt: skip
QUOTA_REQUESTS = Counter(
    "tenantry_api_quota_requests", "Quota checks by outcome (admitted, refused).", ["outcome"]
)
COUNTED_IN_DATABASE = Counter(
    "tenantry_api_counted_in_database",
    "Units counted in PostgreSQL alone while Redis was unreachable.",
)
STATUS_WRITES = Counter("tenantry_api_status_writes", "Usage summaries written to Tenant status.")
REDIS_UP = Gauge(
    "tenantry_api_redis_up",
    "Whether Redis answered the last call (1) or not (0); the lowest of the live workers.",
    multiprocess_mode="livemin",
)
REDIS_FAILURES = Counter("tenantry_api_redis_failures", "Redis calls that failed.")
BILLING_RUN_SECONDS = Histogram(
    "tenantry_api_billing_run_duration_seconds",
    "Billing runs by trigger (schedule, admin) and result (succeeded, failed).",
    ["trigger", "result"],
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
)
INVOICES_FINALIZED = Counter(
    "tenantry_api_invoices_finalized", "Invoices finalized (numbered and issued) by billing runs."
)
STRIPE_EVENTS_RECEIVED = Counter(
    "tenantry_api_stripe_events_received",
    "Verified Stripe webhook deliveries stored, by delivery (new, duplicate).",
    ["delivery"],
)
STRIPE_EVENTS_PROCESSED = Counter(
    "tenantry_api_stripe_events_processed",
    "Stripe events processed, by result (handled, ignored, retried, failed).",
    ["result"],
)
STRIPE_EVENT_LAG = Histogram(
    "tenantry_api_stripe_event_lag_seconds",
    "Seconds from Stripe's creating an event to its processing here.",
    buckets=(1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
STRIPE_EVENTS_PENDING = Gauge(
    "tenantry_api_stripe_events_pending",
    "Stored Stripe events still to be processed (retries waiting included).",
    multiprocess_mode="livemax",
)
STRIPE_OLDEST_PENDING = Gauge(
    "tenantry_api_stripe_oldest_pending_event_age_seconds",
    "Seconds the oldest pending Stripe event has waited since it was received (0: none).",
    multiprocess_mode="livemax",
)


_RECEIVED = {True: "new", False: "duplicate"}


def stripe_event_received(new: bool) -> None:
    _child(STRIPE_EVENTS_RECEIVED, _RECEIVED[new]).inc()


_children: dict[tuple[object, tuple[str, ...]], Any] = {}
"""Each metric's child per label values: `labels()` looks them up under a lock, with
its arguments checked, and the request path counts on every request. The label values
are bounded (routes, methods, statuses, outcomes), and so is this."""


def _child(metric: Any, *values: str) -> Any:
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def summing_across_workers() -> bool:
    """Whether this process writes its metrics where the metrics port reads them."""
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


def worker_stopped() -> None:
    """Drop this worker's gauges from the sum: its counters and histograms stay."""
    if summing_across_workers():
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class RequestMetrics:
    """Times every HTTP request and counts it by route template and status.

    Wraps the whole application, error handling included, so a request that
    failed counts with the 500 it was answered with."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            # The router writes the matched route into the scope it was given.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            _child(REQUEST_SECONDS, method, route, str(status)).observe(
                time.perf_counter() - started
            )
