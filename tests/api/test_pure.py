"""The pure cores, without any server: key format, event judging, periods, settings."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tenantry import license as lic
from tenantry.api.quotas.service import over_quota
from tenantry.api.settings import ApiSettings, InsecureSettings
from tenantry.api.tenants.catalog import Plan
from tenantry.api.usage.schemas import UsageEvent
from tenantry.api.usage.validation import judge, parse_batch
from tenantry.core import keyformat
from tenantry.core.periods import CALENDAR_MONTHS, Period
from tenantry.core.resources import METRIC_PATTERN, Aggregation, ApiKeySpec, PlanSpec
from tenantry.core.usage import HourlyTotals, period_value
from tenantry.db.apikeys import KeyRow
from tenantry.operator.apikey import readiness

NOW = dt.datetime(2030, 3, 15, 12, 0, tzinfo=dt.UTC)


def plan() -> Plan:
    return Plan(
        name="pro",
        spec=PlanSpec.model_validate({
            "displayName": "Professional",
            "price": {"amount": 100, "currency": "USD"},
            "limits": {"calls": 10},
            "usageMaxAgeDays": 10,
            "metrics": [{"name": "calls", "aggregation": "count"},
                        {"name": "users", "aggregation": "unique_count", "field": "user"}],
        }),
    )  # fmt: skip


def test_keys_carry_a_checksum_that_catches_typos() -> None:
    key = keyformat.generate()
    assert key.startswith("tnty_")
    assert len(key) == keyformat.KEY_LENGTH == 43
    assert keyformat.is_well_formed(key)
    assert keyformat.generate() != key
    for position in range(5, len(key)):
        typo = key[:position] + ("a" if key[position] != "a" else "b") + key[position + 1 :]
        assert not keyformat.is_well_formed(typo), position
    assert not keyformat.is_well_formed(key[:-1])
    assert not keyformat.is_well_formed("ghp_" + key[4:])
    assert not keyformat.is_well_formed(key[:20] + "!" + key[21:])
    assert keyformat.hash_key(key) == keyformat.hash_key(key)
    assert len(keyformat.hash_key(key)) == 64
    assert keyformat.display_prefix(key) == key[:13]


def test_events_are_judged_one_by_one() -> None:
    at = "2030-03-15T11:00:00Z"
    events = [
        {"transaction_id": "a", "metric": "calls", "value": 1, "timestamp": at},
        {"transaction_id": "b", "metric": "calls", "value": 1.0, "timestamp": at},
        {"transaction_id": "c", "metric": "calls", "value": 1, "timestamp": 1900000000},
        {"transaction_id": "d", "metric": "users", "value": 1, "timestamp": at,
         "properties": {"user": True}},
        {"transaction_id": "e", "metric": "calls", "value": 1, "timestamp": "2030-03-01T11:00:00Z"},
    ]  # fmt: skip
    body = json.dumps({"events": events}).encode()
    parsed, malformed = parse_batch(body)
    assert [r.index for r in malformed] == [1, 2]
    assert [r.transaction_id for r in malformed] == ["b", "c"]
    good, bad = judge(parsed, plan(), NOW, dt.timedelta(minutes=5))
    assert [e.transaction_id for e in good] == ["a"]
    assert [(r.index, r.code) for r in bad] == [(3, "missing_property"), (4, "timestamp_too_old")]


def test_a_metric_name_that_no_plan_can_declare_is_refused_by_the_schema() -> None:
    at = "2030-03-15T11:00:00Z"
    events = [{"transaction_id": f"t{n}", "metric": name, "value": 1, "timestamp": at}
              for n, name in enumerate(["", "Calls", "9lives", "calls"])]  # fmt: skip
    parsed, malformed = parse_batch(json.dumps({"events": events}).encode())
    assert [index for index, _ in parsed] == [3]
    assert [(r.index, r.code) for r in malformed] == [(0, "invalid_event"), (1, "invalid_event"),
                                                      (2, "invalid_event")]  # fmt: skip
    assert all(METRIC_PATTERN in r.message for r in malformed)
    # The served OpenAPI says so, for generated clients.
    assert UsageEvent.model_json_schema()["properties"]["metric"]["pattern"] == METRIC_PATTERN


def test_tenants_without_a_subscription_count_in_utc_months() -> None:
    moment = dt.datetime(2030, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert CALENDAR_MONTHS.period_at(moment) == Period(
        dt.datetime(2029, 12, 1, tzinfo=dt.UTC), dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    )


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [(Aggregation.COUNT, 30), (Aggregation.SUM, 30), (Aggregation.UNIQUE_COUNT, 30),
     (Aggregation.MAX, 20), (Aggregation.LATEST, 7)],
)  # fmt: skip
def test_period_value_by_aggregation(aggregation: Aggregation, expected: int) -> None:
    totals = HourlyTotals("m", aggregation, total=30, maximum=20, latest=7, latest_at=NOW)
    assert period_value(totals) == expected


def test_over_quota_has_the_license_guard_shape() -> None:
    march = Period(dt.datetime(2030, 3, 1, tzinfo=dt.UTC), dt.datetime(2030, 4, 1, tzinfo=dt.UTC))
    error = over_quota(plan(), "calls", 10, 10, 1, march, NOW)
    guard = lic.Entitlements(limits={"calls": 10}, plan_code="pro", plan_name="Professional")
    with pytest.raises(lic.LimitExceeded) as refused:
        guard.check_limit("calls", 10)
    assert error.status_code == 429
    assert set(refused.value.details) <= set(error.details)
    assert error.details["plan"] == refused.value.details["plan"]
    assert error.details["resets_at"].startswith("2030-04-01")


def test_placeholder_tokens_are_refused_outside_development() -> None:
    with pytest.raises(InsecureSettings, match="TENANTRY_ADMIN_TOKEN"):
        ApiSettings(environment="production").refuse_placeholders()
    with pytest.raises(InsecureSettings, match="TENANTRY_INTROSPECTION_TOKEN"):
        ApiSettings(admin_token="a" * 32, introspection_token="short").refuse_placeholders()
    ApiSettings(environment="development").refuse_placeholders()
    ApiSettings(admin_token="a" * 32, introspection_token="b" * 32).refuse_placeholders()
    with pytest.raises(ValueError, match="less than or equal to 1"):
        ApiSettings(key_cache_ttl=2)


def test_apikey_readiness() -> None:
    row = KeyRow(
        id=1, resource_uid="u", resource_namespace="c", resource_name="k", tenant_namespace="c",
        tenant_name="t", tenant_uid="uid-t", key_prefix="tnty_abcdefgh", key_hash="0" * 64,
        scopes=frozenset(), expires_at=None, revoked_at=None, created_at=NOW, last_used_at=None,
    )  # fmt: skip
    spec = ApiKeySpec.model_validate({"tenantRef": {"name": "t"}})
    assert readiness(row, spec, "ns/k", True, NOW)[:2] == (True, "Active")
    assert readiness(row, spec, "ns/k", False, NOW)[:2] == (False, "SecretMissing")
    expired = KeyRow(**{**row.__dict__, "expires_at": NOW})
    assert readiness(expired, spec, "ns/k", True, NOW)[:2] == (False, "Expired")
    revoked = KeyRow(**{**row.__dict__, "revoked_at": NOW})
    unrevoked = ApiKeySpec.model_validate({"tenantRef": {"name": "t"}, "revoked": False})
    ok, reason, message = readiness(revoked, unrevoked, "ns/k", True, NOW)
    assert (ok, reason) == (False, "Revoked")
    assert "permanent" in message


def test_events_carry_whole_numbers_only() -> None:
    with pytest.raises(ValueError, match="integer"):
        UsageEvent.model_validate(
            {
                "transaction_id": "a",
                "metric": "m",
                "value": True,
                "timestamp": "2030-01-01T00:00:00Z",
            }
        )


def test_snapshot_ignores_figures_of_unique_count_metrics() -> None:
    from tenantry.api.usage.schemas import Snapshot
    from tenantry.api.usage.service import snapshot_events

    metered = Plan(
        name="gauges",
        spec=PlanSpec.model_validate({
            "displayName": "Gauges",
            "price": {"amount": 100, "currency": "USD"},
            "metrics": [{"name": "devices", "aggregation": "unique_count", "field": "device"},
                        {"name": "messages", "aggregation": "sum"}],
        }),
    )  # fmt: skip
    snapshot = Snapshot.model_validate_json(json.dumps({
        "snapshot_id": "s1", "timestamp": "2030-03-15T11:00:00Z", "active_devices": 3,
        "messages": 7, "bytes": 9,
    }))  # fmt: skip
    events, ignored = snapshot_events(snapshot, metered)
    assert [(e.metric, e.value) for e in events] == [("messages", 7)]
    assert ignored == ["active_devices", "bytes"]
    good, bad = judge(list(enumerate(events)), metered, NOW, dt.timedelta(seconds=60))
    assert (len(good), bad) == (1, [])


def test_events_that_postgres_cannot_store_are_refused_one_by_one() -> None:
    from tenantry.api.usage.schemas import MAX_VALUE

    at = "2030-03-15T11:00:00Z"
    events = [
        {"transaction_id": "a", "metric": "calls", "value": 1, "timestamp": at,
         "properties": {"note": "fine"}},
        {"transaction_id": "b", "metric": "calls", "value": 1, "timestamp": at,
         "properties": {"note": "a\x00b"}},
        {"transaction_id": "c", "metric": "calls", "value": 1, "timestamp": at,
         "properties": {"k\x00": 1}},
        {"transaction_id": "d", "metric": "calls", "value": MAX_VALUE + 1, "timestamp": at},
    ]  # fmt: skip
    good, bad = parse_batch(json.dumps({"events": events}).encode())
    assert [e.transaction_id for _, e in good] == ["a"]
    assert [(r.index, r.code) for r in bad] == [(1, "invalid_event"), (2, "invalid_event"),
                                                 (3, "invalid_event")]  # fmt: skip
    assert "NUL" in bad[0].message
    # An hour of a tenant's largest events stays far below bigint's 2^63 - 1.
    assert MAX_VALUE * 1_000_000 < 2**63 - 1


@pytest.mark.parametrize("failure", ["refused", "unreachable"])
async def test_kubernetes_failures_are_the_service_unavailable(failure: str) -> None:
    import httpx2
    from lightkube.core.exceptions import ApiError as KubeApiError

    from tenantry.api.errors import Unavailable
    from tenantry.api.tenants.kube import Kube

    request = httpx2.Request("GET", "https://kube.invalid/apis")

    class Client:
        async def get(self, *_: object, **__: object) -> object:
            if failure == "unreachable":
                raise httpx2.ConnectError("connection refused", request=request)
            response = httpx2.Response(
                500, request=request,
                json={"kind": "Status", "code": 500, "message": "etcdserver: timeout"},
            )  # fmt: skip
            raise KubeApiError(request=request, response=response)

    kube = Kube(Client())  # type: ignore[arg-type]
    for read in (kube.tenant("ns", "t"), kube.plan("p"), kube.secret("ns", "s")):
        with pytest.raises(Unavailable) as raised:
            await read
        assert raised.value.status_code == 503
        assert raised.value.code == "kubernetes_unavailable"
        assert raised.value.headers == {"Retry-After": "1"}


async def test_recovery_drops_counters_touched_while_it_probed() -> None:
    from tenantry.api.quotas.counters import Counters

    class FakeRedis:
        def __init__(self) -> None:
            self.deleted: list[str] = []

        def register_script(self, _: str) -> None:
            return None

        async def ping(self) -> bool:
            counters.touched(["quota:t:m:late"])  # a request written to PostgreSQL meanwhile
            return True

        async def delete(self, *keys: str) -> int:
            self.deleted += keys
            return len(keys)

    redis = FakeRedis()
    counters = Counters(redis, probe_interval=0)  # type: ignore[arg-type]
    counters.up = False
    counters.touched(["quota:t:m:early"])
    assert await counters.available()
    assert counters.status()["pending_rebuilds"] == 0
    assert set(redis.deleted) >= {"quota:t:m:early", "quota:t:m:late", "quota:t:m:late:at"}
