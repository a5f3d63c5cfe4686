"""The instance SDK (`tenantry.sdk`) against the real API: license, usage, quotas, heartbeat.

The usage promise is tested as an operator would see it fail: the API stops while an
instance records, the instance is killed and restarted, the API comes back, and
every event is counted exactly once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import api_harness
import httpx
import pytest
from api_harness import ApiServer, World
from support import Kube, dig, wait_for
from testbed import free_port

from tenantry.license import LicenseState
from tenantry.sdk import ApiKeyRejected, Client, QuotaExceeded

pytestmark = pytest.mark.cluster

INSTANCE = Path(__file__).parent / "sdk_instance.py"
README = Path(__file__).resolve().parents[2] / "sdk" / "README.md"


async def usage(server: ApiServer, world: World) -> dict[str, Any]:
    async with server.admin() as admin:
        answer = await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/usage")
    assert answer.status_code == 200, answer.text
    return answer.json()["metrics"]  # type: ignore[no-any-return]


def noted(progress: Path) -> list[int]:
    return [int(line) for line in progress.read_text().split()] if progress.exists() else []


def queued(state: Path) -> int:
    with sqlite3.connect(f"file:{state / 'usage.sqlite3'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


def instance(server: ApiServer, state: Path, progress: Path, first: int, last: int,
             log: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(INSTANCE), server.url, str(state), str(progress),
             str(first), str(last), "0.02"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def test_every_event_arrives_once_through_an_outage_and_a_crash(
    make_world: Any, start_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = 300
    world: World = make_world(limits={"api_calls": 1_000_000})
    api: ApiServer = start_api()
    state, progress, log = tmp_path / "state", tmp_path / "progress", tmp_path / "instance.log"
    state.mkdir()
    (state / "key").write_text(world.issued_key("instance"))

    first = instance(api, state, progress, 0, events, log)
    wait_for(lambda: len(noted(progress)) >= 100, "the instance to record 100 events")
    api.stop()  # mid-stream: the instance keeps recording, into its queue
    wait_for(lambda: len(noted(progress)) >= 200, "the instance to record 200 events")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    resume = noted(progress)[-1]  # recorded again: the same id counts once
    assert queued(state) > 0, "the outage left nothing queued: it came too late to matter"

    second = instance(api, state, progress, resume, events, log)
    wait_for(lambda: "recorded" in log.read_text(), "the restarted instance to record the rest")
    await asyncio.sleep(2)  # it retries against the stopped API meanwhile
    assert second.poll() is None, log.read_text()
    assert queued(state) >= events - resume  # all it recorded since waits on disk

    # The API back where the instance expects it.
    ports = iter([api.port, api.metrics_port])
    monkeypatch.setattr(api_harness, "free_port", lambda: next(ports))
    api.start()
    assert await asyncio.to_thread(second.wait, 120) == 0, log.read_text()
    assert queued(state) == 0
    counted = (await usage(api, world))["api_calls"]
    assert counted["value"] == events
    assert sum(hour["events"] for hour in counted["hours"]) == events


@pytest.fixture(scope="module")
def world(make_world: Any) -> World:
    return make_world(limits={"api_calls": 1_000_000})


async def test_license_is_fetched_verified_cached_and_kept_offline(
    world: World, api_server: ApiServer, tmp_path: Path
) -> None:
    key = world.issued_key("licensed")
    with Client(api_server.url, key, tmp_path) as client:
        status = client.license()
    assert status.state is LicenseState.VALID
    assert status.claims is not None
    assert status.claims.plan.code == world.plan
    cached = tmp_path / "license.jwt"
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    # No API at all: the cached license still verifies (with the cached keys).
    offline = f"http://127.0.0.1:{free_port()}"
    with Client(offline, key, tmp_path, timeout=1) as client:
        again = client.license()
    assert again.state is LicenseState.VALID
    assert again.claims is not None
    assert again.claims.jti == status.claims.jti


async def test_refused_events_are_parked_and_the_others_counted(
    world: World, api_server: ApiServer, tmp_path: Path
) -> None:
    key = world.issued_key("parker")
    before = (await usage(api_server, world)).get("messages", {}).get("value", 0)
    with Client(api_server.url, key, tmp_path) as client:
        client.record("messages", 5, transaction_id="good-1")
        client.record("no_such_metric", 1, transaction_id="bad-1")
        client.record("messages", 7, transaction_id="good-2")
        client.record("messages", 7, transaction_id="good-2")  # once, whatever the repeats
        assert client.flush(30)
        parked = client.parked()
    assert [(p.transaction_id, p.code) for p in parked] == [("bad-1", "unknown_metric")]
    assert "no_such_metric" in parked[0].reason
    assert (await usage(api_server, world))["messages"]["value"] == before + 12


async def test_a_revoked_key_stops_the_sender_and_keeps_the_events(
    kube: Kube, world: World, api_server: ApiServer, tmp_path: Path
) -> None:
    key = world.issued_key("short-lived")
    kube.kubectl("patch", "apikey", "short-lived", "-n", world.control, "--type", "merge",
                 "-p", '{"spec": {"revoked": true}}')  # fmt: skip
    await asyncio.sleep(1.5)  # revocation takes effect within a second
    with Client(api_server.url, key, tmp_path) as client:
        client.record("messages", 1)
        with pytest.raises(ApiKeyRejected) as refused:
            client.flush(30)
        assert client.pending == 1
    assert refused.value.code == "invalid_api_key"
    assert key not in str(refused.value)


async def test_quota_checks_and_heartbeats(
    make_world: Any, api_server: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limited: World = make_world(limits={"api_calls": 2})
    key = limited.issued_key("gate")
    with Client(api_server.url, key, tmp_path) as client:
        first = client.consume("api_calls", transaction_id="req-1")
        retried = client.consume("api_calls", transaction_id="req-1")
        client.consume("api_calls")
        with pytest.raises(QuotaExceeded) as over:
            client.consume("api_calls")
        quotas = client.quotas()
        beat = client.heartbeat("3.1.0", "degraded", "cache cold", {"devices": 3})
    assert (first.limit, first.used, first.remaining, first.duplicate) == (2, 1, 1, False)
    assert retried.duplicate is True
    assert over.value.status == 429
    assert quotas["quotas"]["api_calls"]["used"] == 2
    assert beat["timeout_seconds"] > 0
    wait_for(lambda: dig(limited.tenant_object(), "status", "instance", "health") == "degraded",
             "the heartbeat in the Tenant's status")  # fmt: skip
    assert key not in caplog.text


def test_readme_example_runs(
    world: World, api_server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "sdk/README.md has no python example"
    monkeypatch.setenv("TENANTRY_API_URL", api_server.url)
    monkeypatch.setenv("TENANTRY_API_KEY", world.issued_key("readme"))
    monkeypatch.setenv("TENANTRY_STATE_DIR", str(tmp_path))
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})  # noqa: S102
    report = httpx.get(
        f"{api_server.url}/admin/tenants/{world.control}/{world.tenant}/instance",
        headers={"Authorization": f"Bearer {api_server.admin_token}"},
    )
    assert report.json()["figures"] == {"devices": 12, "load": "0.75"}
