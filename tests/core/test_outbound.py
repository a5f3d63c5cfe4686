"""Webhooks out, the pure part: the signature (checked against independent HMACs and
Stripe's own verifier), wildcard subscriptions, endpoints, event ids, retry delays."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest
import stripe
from pydantic import TypeAdapter, ValidationError

from tenantry.core import outbound
from tenantry.core.outbound import Endpoint, Endpoints, SignatureError

SECRET = "whsec_test_secret_0123456789abcdef"
PAYLOAD = b'{"id":"evt","type":"invoice.paid"}'
NOW = 1_700_000_000


def test_the_signature_is_an_hmac_sha256_of_timestamp_dot_body() -> None:
    # Computed outside Python: printf '%s' '1700000000.<body>' | openssl dgst -sha256 -hmac ...
    assert outbound.sign(SECRET, NOW, PAYLOAD) == (
        "t=1700000000,v1=675c848930be76ba1c7b2327c1a69c59866a31ba8c4759726e16083e46d6ceae"
    )
    body = json.dumps({"id": "x", "data": {"amount": 4900, "name": "Acme GmbH"}}).encode()
    expected = hmac.new(SECRET.encode(), b"1712345678." + body, hashlib.sha256).hexdigest()
    assert outbound.sign(SECRET, 1_712_345_678, body) == f"t=1712345678,v1={expected}"


def test_stripes_own_verifier_accepts_our_signature() -> None:
    header = outbound.sign(SECRET, int(dt.datetime.now(dt.UTC).timestamp()), PAYLOAD)
    assert stripe.WebhookSignature.verify_header(PAYLOAD.decode(), header, SECRET, tolerance=300)


def test_verify_accepts_the_signed_body_and_returns_its_timestamp() -> None:
    header = outbound.sign(SECRET, NOW, PAYLOAD)
    assert outbound.verify(SECRET, header, PAYLOAD, now=NOW + 10) == NOW
    # While a secret is rotated a header may carry several signatures: one match is enough.
    rotated = f"t={NOW},v1={'0' * 64},{header.split(',')[1]}"
    assert outbound.verify(SECRET, rotated, PAYLOAD, now=NOW) == NOW


@pytest.mark.parametrize(
    ("secret", "header", "payload", "now", "problem"),
    [
        ("whsec_another_secret_0123456789ab", None, PAYLOAD, NOW, "no v1 signature matches"),
        (SECRET, None, PAYLOAD + b" ", NOW, "no v1 signature matches"),
        (SECRET, None, PAYLOAD, NOW + 301, "more than 300 s"),
        (SECRET, None, PAYLOAD, NOW - 301, "more than 300 s"),
        (SECRET, "v1=abc", PAYLOAD, NOW, "needs t="),
        (SECRET, f"t={NOW}", PAYLOAD, NOW, "needs t="),
        (SECRET, "t=soon,v1=abc", PAYLOAD, NOW, "not a number"),
    ],
)
def test_verify_refuses(
    secret: str, header: str | None, payload: bytes, now: int, problem: str
) -> None:
    with pytest.raises(SignatureError, match=problem):
        outbound.verify(secret, header or outbound.sign(SECRET, NOW, PAYLOAD), payload, now=now)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("invoice.*", "invoice.paid", True),
        ("invoice.*", "invoice.payment_failed", True),
        ("invoice.*", "usage.threshold_crossed", False),
        ("*", "tenant.suspended", True),
        ("*.paid", "invoice.paid", True),
        ("invoice.paid", "invoice.paid", True),
        ("invoice.paid", "invoice.paid.late", False),
        ("invoice.paid", "invoiceXpaid", False),  # the dot is a dot, not "any character"
        ("invoice.", "invoice.paid", False),
        ("tenant.*", "subscription.state_changed", False),
    ],
)
def test_wildcard_matching(pattern: str, event_type: str, expected: bool) -> None:
    assert outbound.matches(pattern, event_type) is expected


def endpoint(**fields: object) -> Endpoint:
    return Endpoint.model_validate(
        {"name": "crm", "url": "https://crm.example/hooks", "secret": SECRET,
         "events": ["invoice.*"], **fields}
    )  # fmt: skip


def test_an_endpoint_wants_what_its_patterns_match() -> None:
    crm = endpoint(events=["invoice.*", "subscription.state_changed"])
    assert crm.wants(outbound.INVOICE_FINALIZED)
    assert crm.wants(outbound.SUBSCRIPTION_STATE_CHANGED)
    assert not crm.wants(outbound.USAGE_THRESHOLD_CROSSED)
    assert not crm.wants(outbound.TENANT_READY)
    assert SECRET not in repr(crm)
    assert SECRET not in str(crm.model_dump())


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"events": ["invoices.*"]}, "matches no event Tenantry sends"),
        ({"events": []}, "at least 1 item"),
        ({"secret": "short"}, "the secret needs at least 24 characters"),
        ({"url": "ftp://crm.example/"}, "must be http:// or https://"),
        ({"url": "https:///path"}, "must be http:// or https://"),
        ({"name": "CRM system"}, "should match pattern"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_a_wrong_endpoint_is_refused_saying_why(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        endpoint(**fields)


def test_endpoint_names_are_unique() -> None:
    adapter: TypeAdapter[tuple[Endpoint, ...]] = TypeAdapter(Endpoints)
    one = {"name": "crm", "url": "http://127.0.0.1:1/", "secret": SECRET, "events": ["*"]}
    assert len(adapter.validate_json(json.dumps([one, {**one, "name": "erp"}]))) == 2
    with pytest.raises(ValidationError, match="repeated: crm"):
        adapter.validate_json(json.dumps([one, one]))


def test_an_event_keyed_by_what_it_is_about_has_one_id() -> None:
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    first = outbound.event(outbound.INVOICE_PAID, {"n": 1}, at, key="inv-1")
    again = outbound.event(outbound.INVOICE_PAID, {"n": 2}, at, key="inv-1")
    assert first.id == again.id
    assert outbound.event(outbound.INVOICE_FINALIZED, {}, at, key="inv-1").id != first.id
    unkeyed = {outbound.event(outbound.INVOICE_PAID, {}, at).id for _ in range(2)}
    assert len(unkeyed) == 2
    assert first.body() == {
        "id": first.id, "type": "invoice.paid", "created": "2026-11-01T00:00:00Z",
        "data": {"n": 1},
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown event type"):
        outbound.event("invoice.lost", {}, at)


def test_retries_back_off_exponentially_up_to_a_cap_with_jitter() -> None:
    delays = [outbound.retry_delay(n, base=10, cap=300, jitter=0) for n in range(1, 8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert outbound.retry_delay(3, base=10, cap=300, jitter=1) == pytest.approx(32)


@pytest.mark.parametrize(
    ("limit", "used", "expected"),
    [
        (1000, 799, ()),
        (1000, 800, (80,)),
        (1000, 999, (80,)),
        (1000, 1000, (80, 100)),
        (1000, 5000, (80, 100)),
        (5, 4, (80,)),
        (3, 2, ()),  # 66 %
        (-1, 10**9, ()),  # unlimited
        (0, 0, ()),
    ],
)
def test_thresholds_reached(limit: int, used: int, expected: tuple[int, ...]) -> None:
    assert outbound.crossed(limit, used) == expected
