"""Stripe as the tests play it: stripe-mock's own objects, wrapped and signed as Stripe does.

Events are stripe-mock's event envelope around stripe-mock's objects (Stripe's
shapes), signed with Stripe's scheme v1 (`t=<ts>,v1=<HMAC-SHA256 of "t.body">`)
and posted to a real API process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
from api_harness import ApiServer, World
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import Kube
from support import secret as remember
from testbed import StripeMock

SECRET = remember("whsec_" + secrets.token_hex(16))


def sign(body: bytes, secret: str = SECRET, at: int | None = None) -> str:
    """Stripe's signature scheme v1."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def fetch_objects(stripe_mock: StripeMock) -> dict[str, dict[str, Any]]:
    """stripe-mock's fixture objects, fetched with the SDK: Stripe's own shapes."""
    client = stripe.StripeClient("sk_test_123", base_addresses={"api": stripe_mock.url})
    v1 = client.v1
    fetched = {
        "event": v1.events.retrieve("evt_123"),
        "subscription": v1.subscriptions.retrieve("sub_123"),
        "invoice": v1.invoices.retrieve("in_123"),
        "customer": v1.customers.retrieve("cus_123"),
        "payment_intent": v1.payment_intents.retrieve("pi_123"),
        "checkout_session": v1.checkout.sessions.retrieve("cs_123"),
    }
    # The JSON as sent: the SDK's objects turn decimal strings into Decimals.
    return {kind: json.loads(obj.last_response.body) for kind, obj in fetched.items()}


class Stripe:
    """Builds, signs and sends events as Stripe would."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    def obj(self, kind: str, **changes: Any) -> dict[str, Any]:
        made = json.loads(json.dumps(self.objects[kind]))
        made["id"] = f"{made['id'].split('_')[0]}_{uuid.uuid4().hex[:14]}"
        made.update(changes)
        return made

    def event(
        self, kind: str, obj: dict[str, Any], *, created: int | None = None,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        envelope = json.loads(json.dumps(self.objects["event"]))
        envelope.update(
            id=f"evt_{uuid.uuid4().hex[:24]}", type=kind,
            created=int(time.time()) if created is None else created,
            data={"object": obj, **({"previous_attributes": previous} if previous else {})},
        )  # fmt: skip
        return envelope

    @staticmethod
    async def send(
        api: ApiServer, event: dict[str, Any] | bytes, *, secret: str = SECRET,
        signed_at: int | None = None,
    ) -> httpx.Response:  # fmt: skip
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            return await client.post(
                "/webhooks/stripe", content=body,
                headers={"Stripe-Signature": sign(body, secret, signed_at),
                         "Content-Type": "application/json"},
            )  # fmt: skip


def stripe_env(stripe_mock: StripeMock, database: str, name: str) -> dict[str, str]:
    """An API with Stripe on, against stripe-mock; `name` tells its connections apart."""
    return {
        "TENANTRY_STRIPE_API_KEY": "sk_test_123",
        "TENANTRY_STRIPE_WEBHOOK_SECRET": SECRET,
        "TENANTRY_STRIPE_API_BASE": stripe_mock.url,
        # Which process a connection belongs to, in pg_stat_activity.
        "TENANTRY_DATABASE_URL": f"{database}?application_name={name}",
        "TENANTRY_BILLING_FINALIZE_GRACE": "0",
    }


async def row(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).first()


async def settled(engine: AsyncEngine, event_id: str, within: float = 30) -> Any:
    """The event's row once the worker is done with it."""
    deadline = time.monotonic() + within
    while True:
        found = await row(engine, "SELECT * FROM stripe_events WHERE id = :id", id=event_id)
        if found is not None and found.state != "pending":
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"event {event_id} still pending: {found}")
        await asyncio.sleep(0.2)


async def subscription_uid(kube: Kube, engine: AsyncEngine, world: World) -> str:
    """The Subscription's uid, once the operator has stored its terms."""
    obj = kube.get("subscription", world.tenant, world.control)
    assert obj is not None
    uid = str(obj["metadata"]["uid"])
    for _ in range(150):
        if await row(engine, "SELECT 1 FROM subscriptions WHERE uid = :u", u=uid):
            return uid
        await asyncio.sleep(0.2)
    raise AssertionError(f"the operator stored no terms for {world.key}")


@dataclasses.dataclass
class Call:
    method: str
    path: str  # after /v1/
    key: str | None  # Idempotency-Key
    params: dict[str, str]  # form-encoded, as sent: "metadata[tenantry_invoice_id]" ...
    answer: dict[str, Any] | None = None


class Recording(stripe.AIOHTTPClient):  # type: ignore[misc]
    """The SDK's own HTTP client, recording each request; requests matching `faults`
    ("POST invoiceitems") are refused by Stripe (`refuse`: a 500) or made in Stripe
    with the answer lost on the way back (`lose`). `recorded` gives an answer of
    stripe-mock's the state a stateful Stripe would have ("GET setup_intents/seti_1":
    changes to its object)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.faults: dict[str, str] = {}
        self.recorded: dict[str, dict[str, Any]] = {}

    async def request_async(
        self, method: str, url: str, headers: Any, post_data: Any = None
    ) -> Any:
        path = url.split("/v1/", 1)[-1].split("?")[0]
        form = post_data.decode() if isinstance(post_data, bytes) else post_data or ""
        call = Call(method.upper(), path, headers.get("Idempotency-Key"), dict(parse_qsl(form)))
        self.calls.append(call)
        fault = next(
            (f for p, f in self.faults.items() if f"{call.method} {path}".startswith(p)), None
        )
        if fault == "refuse":
            body = {"error": {"type": "api_error", "message": "Stripe had a moment."}}
            return json.dumps(body).encode(), 500, {}
        content, status, answer_headers = await super().request_async(
            method, url, headers, post_data
        )
        if fault == "lose":
            raise stripe.APIConnectionError("The answer was lost on its way back.")
        call.answer = json.loads(content)
        changes = next(
            (c for p, c in self.recorded.items() if f"{call.method} {path}".startswith(p)), None
        )
        if changes is not None:
            call.answer = {**call.answer, **changes}
            content = json.dumps(call.answer).encode()
        return content, status, answer_headers

    def about(self, invoice_id: str) -> list[Call]:
        """The requests made for Tenantry's invoice: their keys name it."""
        return [c for c in self.calls if c.key and invoice_id in c.key]

    def posts(self, invoice_id: str, path: str) -> list[Call]:
        return [c for c in self.about(invoice_id) if c.method == "POST" and c.path == path]
