"""Webhooks out, end to end: the real operator and API enqueue, the API delivers to a
receiver in this process, signed; refusals are retried with backoff, the log shows every
attempt, an admin queues a failed delivery again, usage thresholds go out once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
from api_harness import ApiServer, World, now_iso
from support import Kube

from tenantry.api.outbound.settings import WebhookSettings
from tenantry.core import outbound

pytestmark = pytest.mark.cluster

T = TypeVar("T")
SUFFIX = uuid.uuid4().hex[:6]
# name, path at the receiver, events; `suite` is the endpoint the session's operator
# enqueues its events for (tests/conftest.py).
ENDPOINTS = [
    (f"inv-{SUFFIX}", "/inv", ["invoice.*"]),
    (f"flaky-{SUFFIX}", "/flaky", ["invoice.finalized"]),
    (f"down-{SUFFIX}", "/down", ["invoice.finalized"]),
    (f"usage-{SUFFIX}", "/usage", ["usage.*"]),
    ("suite", "/suite", ["subscription.*", "tenant.*"]),
]
SECRETS = {path: f"whsec_{path.strip('/')}_{uuid.uuid4().hex}" for _, path, _ in ENDPOINTS}
NAMES = {path: name for name, path, _ in ENDPOINTS}
MAX_ATTEMPTS = 3


# ------------------------------------------------------------------ the receiver


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def event_id(self) -> str:
        return self.headers["tenantry-event-id"]


class Receiver:
    """An HTTP server on its own thread (so tests that block do not stall it): records
    every request; a path in `down` answers 503, one in `fail_first` answers 500 to the
    first so many attempts of each event."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.down: set[str] = set()
        self.fail_first: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(receiver) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    earlier = sum(
                        1 for r in receiver.received
                        if r.path == self.path and r.event_id == headers.get("tenantry-event-id")
                    )  # fmt: skip
                    status = 200
                    if self.path in receiver.down:
                        status = 503
                    elif earlier < receiver.fail_first.get(self.path, 0):
                        status = 500
                    receiver.received.append(Received(self.path, headers, body, status))
                answer = b"ok" if status == 200 else b"not now"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def at(self, path: str, event_type: str | None = None, **about: str) -> list[Received]:
        """What `path` received, of `event_type`, about the objects named in `about`
        (e.g. invoice=<id>: `data.invoice.id`; tenant=<uid>: `data.tenant.uid`)."""
        with self.lock:
            found = [r for r in self.received if r.path == path]
        return [
            r for r in found
            if (event_type is None or r.event["type"] == event_type)
            and all(_about(r.event["data"], kind) == value for kind, value in about.items())
        ]  # fmt: skip


def _about(data: dict[str, Any], kind: str) -> str | None:
    thing = data.get(kind) or {}
    return thing.get("id") or thing.get("uid")


async def eventually(check: Callable[[], T], what: str, within: float = 30) -> T:
    """Poll without blocking the event loop until `check` returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def webhook_env(receiver: Receiver) -> dict[str, str]:
    endpoints = [
        {"name": name, "url": receiver.url + path, "secret": SECRETS[path], "events": events}
        for name, path, events in ENDPOINTS
    ]
    return {
        "TENANTRY_WEBHOOKS": json.dumps(endpoints),
        # Retries in fractions of a second, three attempts at most.
        "TENANTRY_WEBHOOKS_RETRY_BASE": "0.2",
        "TENANTRY_WEBHOOKS_RETRY_CAP": "1",
        "TENANTRY_WEBHOOKS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "TENANTRY_WEBHOOKS_POLL_INTERVAL": "0.1",
        # An invoice is final (and numbered) in the run that drafts it.
        "TENANTRY_BILLING_FINALIZE_GRACE": "0",
    }


@pytest.fixture(scope="module")
def api(start_api: Callable[..., ApiServer], receiver: Receiver) -> ApiServer:
    receiver.fail_first["/flaky"] = 2
    receiver.down.add("/down")
    return start_api(**webhook_env(receiver))


@pytest.fixture(scope="module")
def replica(start_api: Callable[..., ApiServer], receiver: Receiver, api: ApiServer) -> ApiServer:
    """A second replica with the same endpoints: both enqueue, both deliver."""
    return start_api(**webhook_env(receiver))


def check_signed(received: Received) -> None:
    """Signed with the endpoint's own secret over the raw body, sent just now."""
    timestamp = outbound.verify(
        SECRETS[received.path], received.headers["tenantry-signature"], received.body
    )
    assert abs(time.time() - timestamp) < 60


async def first_invoice(api: ApiServer, world: World) -> dict[str, Any]:
    """Bill the tenant until the operator has stored its terms and its invoice exists."""
    path = f"/v1/admin/tenants/{world.control}/{world.tenant}/invoices"
    async with api.admin() as client:
        for _ in range(60):
            run = await client.post(
                "/v1/admin/billing-runs",
                json={"tenant": {"namespace": world.control, "name": world.tenant}},
            )
            assert run.status_code == 200, run.text
            listed = (await client.get(path)).json()["invoices"]
            if listed:
                return listed[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.5)
    raise AssertionError(f"no invoice for {world.key}")


async def deliveries_of(api: ApiServer, event_id: str) -> dict[str, dict[str, Any]]:
    """The log's deliveries of one event, by endpoint name."""
    async with api.admin() as admin:
        page = await admin.get("/v1/admin/webhook-deliveries", params={"limit": 100})
    assert page.status_code == 200, page.text
    return {d["endpoint"]: d for d in page.json()["deliveries"] if d["eventId"] == event_id}


async def logged(api: ApiServer, event_id: str, path: str, state: str) -> dict[str, dict[str, Any]]:
    """The log's deliveries of one event once the one to `path` is in `state`."""
    deadline = time.monotonic() + 30
    while True:
        log = await deliveries_of(api, event_id)
        if log.get(NAMES[path], {}).get("state") == state:
            return log
        assert time.monotonic() < deadline, f"the delivery to {path} never got {state}: {log}"
        await asyncio.sleep(0.2)


# ------------------------------------------------------------------ tests


def test_settings_never_repeat_a_refused_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    weak = {"name": "crm", "url": "https://crm.example/", "secret": "hunter2", "events": ["*"]}
    monkeypatch.setenv("TENANTRY_WEBHOOKS", json.dumps([weak]))
    with pytest.raises(ValueError, match="at least 24 characters") as refused:
        WebhookSettings()
    assert "hunter2" not in str(refused.value)


async def test_a_finalized_invoice_is_delivered_signed_once_and_retried_where_refused(
    make_world: Callable[..., World], api: ApiServer, receiver: Receiver
) -> None:
    world = make_world()
    invoice = await first_invoice(api, world)
    assert invoice["status"] == "open"

    [sent] = await eventually(
        lambda: receiver.at("/inv", "invoice.finalized", invoice=invoice["id"]),
        "invoice.finalized at the CRM endpoint",
    )
    check_signed(sent)
    event = sent.event
    assert list(event) == ["id", "type", "created", "data"]
    assert event["type"] == "invoice.finalized"
    assert sent.headers["tenantry-event-id"] == event["id"]
    delivery_id = sent.headers["tenantry-delivery-id"]
    assert str(uuid.UUID(delivery_id)) == delivery_id
    assert sent.headers["content-type"] == "application/json"
    async with api.admin() as admin:
        shown = (await admin.get(f"/v1/admin/invoices/{invoice['id']}")).json()
    assert event["data"] == {"invoice": shown}  # the invoice as the admin API shows it

    # Refused twice (HTTP 500), delivered on the third attempt: one event id throughout.
    def at_flaky() -> list[Received]:
        return [r for r in receiver.at("/flaky") if r.event_id == event["id"]]

    await eventually(lambda: len(at_flaky()) >= 3, "three attempts at the flaky endpoint")
    attempts = at_flaky()
    assert [a.status for a in attempts] == [500, 500, 200]
    assert {a.headers["tenantry-delivery-id"] for a in attempts} == {
        attempts[0].headers["tenantry-delivery-id"]
    }
    for attempt in attempts:
        check_signed(attempt)
        assert attempt.body == sent.body

    # Always refused: failed after MAX_ATTEMPTS, and the log says so.
    log = await logged(api, event["id"], "/down", "failed")
    inv, flaky, down = log[NAMES["/inv"]], log[NAMES["/flaky"]], log[NAMES["/down"]]
    assert (inv["state"], inv["attempts"], inv["lastStatus"]) == ("delivered", 1, 200)
    assert (flaky["state"], flaky["attempts"], flaky["lastStatus"]) == ("delivered", 3, 200)
    assert flaky["deliveredAt"] is not None
    assert flaky["nextAttemptAt"] is None
    assert (down["state"], down["attempts"], down["lastStatus"]) == ("failed", MAX_ATTEMPTS, 503)
    assert down["lastError"] == "HTTP 503: not now"
    assert down["url"] == receiver.url + "/down"
    assert down["payload"] == event
    assert flaky["id"] == attempts[0].headers["tenantry-delivery-id"]
    assert len(receiver.at("/down", "invoice.finalized", invoice=invoice["id"])) == MAX_ATTEMPTS

    # An admin queues it again once the endpoint is back: delivered, same event.
    receiver.down.discard("/down")
    async with api.admin() as admin:
        again = await admin.post(f"/v1/admin/webhook-deliveries/{down['id']}/retry")
        assert again.status_code == 200, again.text
        assert (again.json()["state"], again.json()["attempts"]) == ("pending", 0)
        await logged(api, event["id"], "/down", "delivered")
        delivered = await admin.post(f"/v1/admin/webhook-deliveries/{down['id']}/retry")
        assert delivered.status_code == 409
        assert delivered.json()["error"]["code"] == "delivery_already_delivered"
        for unknown in (str(uuid.uuid4()), "INV-000001"):
            missing = await admin.post(f"/v1/admin/webhook-deliveries/{unknown}/retry")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "delivery_not_found"
    last = receiver.at("/down", "invoice.finalized", invoice=invoice["id"])[-1]
    assert (last.status, last.event_id) == (200, event["id"])
    check_signed(last)

    # Paid in full: invoice.paid to the endpoint of invoice.*, not to those of finalized only.
    async with api.admin() as admin:
        paid = await admin.post(
            f"/v1/admin/invoices/{invoice['id']}/payments",
            json={"amount": invoice["amountDue"], "method": "bank_transfer", "reference": "tx-1"},
        )
        assert paid.json()["status"] == "paid", paid.text
    [paid_event] = await eventually(
        lambda: receiver.at("/inv", "invoice.paid", invoice=invoice["id"]), "invoice.paid"
    )
    assert paid_event.event["data"]["invoice"]["status"] == "paid"
    await asyncio.sleep(1.5)  # nothing more comes
    assert len(receiver.at("/inv", "invoice.finalized", invoice=invoice["id"])) == 1
    assert len(receiver.at("/inv", "invoice.paid", invoice=invoice["id"])) == 1
    assert not receiver.at("/flaky", "invoice.paid")


async def test_usage_crossing_80_and_100_percent_of_a_limit_is_sent_once_per_threshold(
    make_world: Callable[..., World], api: ApiServer, replica: ApiServer, receiver: Receiver
) -> None:
    world = make_world(limits={"api_calls": 10, "messages": 100})
    key = world.issued_key(scopes=["quota:consume", "usage:write"])
    replicas = [api, replica]
    clients = [r.client(key) for r in replicas]
    try:
        # Racing requests through both replicas: 12 quota checks for a limit of 10, and
        # 10 reports of 10 messages for a limit of 100.
        checks = [
            clients[i % 2].post("/v1/quota/consume", json={"metric": "api_calls"})
            for i in range(12)
        ]
        events = [
            {"transaction_id": f"m{i}", "metric": "messages", "value": 10, "timestamp": now_iso()}
            for i in range(10)
        ]
        reports = [
            clients[i % 2].post("/v1/usage", json={"events": [event]})
            for i, event in enumerate(events)
        ]
        answers = await asyncio.gather(*checks, *reports)
    finally:
        for client in clients:
            await client.aclose()
    statuses = sorted(a.status_code for a in answers[:12])
    assert statuses == [200] * 10 + [429] * 2
    assert all(a.status_code == 200 for a in answers[12:]), [a.text for a in answers[12:]]

    def crossings() -> list[Received]:
        return receiver.at("/usage", "usage.threshold_crossed", tenant=world.uid)

    await eventually(lambda: len(crossings()) >= 4, "four threshold crossings")
    await asyncio.sleep(3)  # both replicas have checked again by now: nothing more comes
    sent = crossings()
    assert len(sent) == 4
    assert len({r.event_id for r in sent}) == 4
    seen = {(r.event["data"]["metric"], r.event["data"]["threshold"]) for r in sent}
    assert seen == {("api_calls", 80), ("api_calls", 100), ("messages", 80), ("messages", 100)}
    for received in sent:
        check_signed(received)
        data = received.event["data"]
        assert data["tenant"] == {"namespace": world.control, "name": world.tenant,
                                  "uid": world.uid}  # fmt: skip
        assert data["plan"] == world.plan
        assert data["limit"] == {"api_calls": 10, "messages": 100}[data["metric"]]
        assert data["used"] * 100 >= data["threshold"] * data["limit"]
        period = world.period()
        assert (data["period"]["start"], data["period"]["end"]) == tuple(
            outbound.iso(t) for t in (period.start, period.end)
        )
    # The endpoint of invoice.* never gets usage events.
    assert all(r.event["type"].startswith("invoice.") for r in receiver.at("/inv"))
    async with api.admin() as admin:
        listed = await admin.get(
            "/v1/admin/webhook-deliveries", params={"event_type": "usage.*", "limit": 100}
        )
    endpoints = {d["endpoint"] for d in listed.json()["deliveries"]}
    assert endpoints == {NAMES["/usage"]}


async def test_subscription_and_tenant_events_come_from_the_operator(
    make_world: Callable[..., World], api: ApiServer, receiver: Receiver, kube: Kube
) -> None:
    world = make_world()
    subscription = kube.get("subscription", world.tenant, world.control)
    assert subscription is not None
    uid = subscription["metadata"]["uid"]

    def changes() -> list[Received]:
        return receiver.at("/suite", "subscription.state_changed", subscription=uid)

    [started] = await eventually(changes, "the subscription's first state", within=90)
    check_signed(started)
    data = started.event["data"]
    assert data["previousState"] is None
    assert data["state"] in ("active", "trialing")
    assert data["tenant"] == {"namespace": world.control, "name": world.tenant, "uid": world.uid}
    assert (data["plan"], data["currency"]) == (world.plan, "USD")
    [ready] = await eventually(
        lambda: receiver.at("/suite", "tenant.ready", tenant=world.uid), "tenant.ready", 90
    )
    assert ready.event["data"]["instanceNamespace"] == world.target

    kube.delete("subscription", world.tenant, world.control)
    await eventually(lambda: len(changes()) >= 2, "the subscription's cancellation", 90)
    canceled = changes()[1].event["data"]
    assert (canceled["previousState"], canceled["state"]) == (data["state"], "canceled")
    assert canceled["endedAt"] is not None
    [suspended] = await eventually(
        lambda: receiver.at("/suite", "tenant.suspended", tenant=world.uid),
        "tenant.suspended",
        90,
    )
    assert suspended.event["data"]["subscriptionState"] == "canceled"
    await asyncio.sleep(1)
    # The operator's passes repeat; each change is one event, delivered once.
    assert len(changes()) == 2
    for event_type in ("tenant.ready", "tenant.suspended"):
        sent = receiver.at("/suite", event_type, tenant=world.uid)
        assert len({r.event_id for r in sent}) == len(sent)


async def test_the_delivery_log_pages_and_filters(
    make_world: Callable[..., World], api: ApiServer, receiver: Receiver
) -> None:
    world = make_world()
    await eventually(
        lambda: receiver.at("/suite", "tenant.ready", tenant=world.uid), "tenant.ready", 90
    )
    async with api.admin() as admin:
        first = (await admin.get("/v1/admin/webhook-deliveries", params={"limit": 2})).json()
        assert len(first["deliveries"]) == 2
        assert first["nextCursor"]
        second = (
            await admin.get(
                "/v1/admin/webhook-deliveries", params={"limit": 2, "cursor": first["nextCursor"]}
            )
        ).json()
        assert second["deliveries"]
        assert not {d["id"] for d in first["deliveries"]} & {d["id"] for d in second["deliveries"]}
        assert [d["createdAt"] for d in first["deliveries"] + second["deliveries"]] == sorted(
            (d["createdAt"] for d in first["deliveries"] + second["deliveries"]), reverse=True
        )
        tenants = (
            await admin.get(
                "/v1/admin/webhook-deliveries",
                params={"event_type": "tenant.*", "state": "delivered", "limit": 100},
            )
        ).json()["deliveries"]
        assert tenants
        assert {d["eventType"] for d in tenants} <= {"tenant.ready", "tenant.suspended"}
        assert {d["state"] for d in tenants} == {"delivered"}
        assert any(d["payload"]["data"]["tenant"]["uid"] == world.uid for d in tenants)
        bad_cursor = await admin.get("/v1/admin/webhook-deliveries", params={"cursor": "x"})
        assert bad_cursor.status_code == 422
        assert bad_cursor.json()["error"]["code"] == "invalid_cursor"
        bad_state = await admin.get("/v1/admin/webhook-deliveries", params={"state": "lost"})
        assert bad_state.status_code == 422
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        assert (await anonymous.get("/v1/admin/webhook-deliveries")).status_code == 401
