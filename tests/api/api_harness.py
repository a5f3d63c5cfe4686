"""What the API tests share: the service in a subprocess, provisioned tenants, small helpers.

Imported by tests/api/conftest.py and by the test modules (this folder is on sys.path).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from support import REPO, Kube, condition, dig, is_ready, wait_for
from support import secret as remember
from testbed import free_port

from tenantry.core.periods import BillingCycle, Interval, Period

API = "tenantry.io/v1alpha1"
TENANTRY = str(REPO / ".venv" / "bin" / "tenantry")


@dataclass
class ApiServer:
    """`tenantry api serve` in a subprocess, with tokens of its own."""

    env: dict[str, str]
    log: Path
    port: int = 0
    metrics_port: int = 0
    command: tuple[str, ...] = ("api", "serve")  # global options may come first
    process: subprocess.Popen[bytes] | None = None
    admin_token: str = field(default_factory=lambda: secrets.token_hex(24))
    introspection_token: str = field(default_factory=lambda: secrets.token_hex(24))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        remember(self.admin_token)
        remember(self.introspection_token)
        self.port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "TENANTRY_ADMIN_TOKEN": self.admin_token,
            "TENANTRY_INTROSPECTION_TOKEN": self.introspection_token,
            "TENANTRY_API_METRICS_PORT": str(self.metrics_port),
            **self.env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [TENANTRY, *self.command, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        wait_for(self._alive, "the API's /healthz", timeout=30, interval=0.1)
        return self

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the API exited:\n{self.tail()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def client(
        self, key: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            base_url=self.url, headers={**auth, **(headers or {})}, timeout=30, **kwargs
        )

    async def metrics(self) -> str:
        """The metrics of all its workers, from the metrics port."""
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        answer.raise_for_status()
        return answer.text

    def admin(self) -> httpx.AsyncClient:
        return self.client(self.admin_token)

    def gateway(self) -> httpx.AsyncClient:
        return self.client(self.introspection_token)


PLAN_METRICS = [
    {"name": "api_calls", "aggregation": "count"},
    {"name": "messages", "aggregation": "sum"},
    {"name": "devices", "aggregation": "max"},
    {"name": "storage_bytes", "aggregation": "latest"},
    {"name": "active_users", "aggregation": "unique_count", "field": "user"},
]


@dataclass
class World:
    """A provisioned tenant of its own plan, in a control namespace of its own."""

    kube: Kube
    control: str
    tenant: str
    plan: str
    target: str

    @property
    def key(self) -> str:
        return f"{self.control}/{self.tenant}"

    @property
    def uid(self) -> str:
        tenant = self.tenant_object()
        assert tenant is not None
        return str(tenant["metadata"]["uid"])

    def period(self, at: dt.datetime | None = None) -> Period:
        """The tenant's billing period holding `at` (now), from the cycle in its status."""
        cycle = dig(self.tenant_object(), "status", "billingCycle")
        assert cycle, "the operator has not written status.billingCycle"
        return BillingCycle(
            dt.datetime.fromisoformat(cycle["start"]), Interval(cycle["interval"]),
            cycle["anchorDay"],
        ).period_at(at or dt.datetime.now(dt.UTC))  # fmt: skip

    def counter_key(self, metric: str) -> str:
        """The Redis quota counter of `metric` this period."""
        return f"quota:{self.uid}:{metric}:{self.period().key}"

    def tenant_object(self) -> dict[str, Any] | None:
        return self.kube.get("tenant", self.tenant, self.control)

    def apikey(self, name: str | None = None, **spec: Any) -> dict[str, Any]:
        """Apply an ApiKey for this tenant; its document."""
        name = name or f"key-{uuid.uuid4().hex[:6]}"
        document = {
            "apiVersion": API,
            "kind": "ApiKey",
            "metadata": {"name": name, "namespace": self.control},
            "spec": {"tenantRef": {"name": self.tenant}, **spec},
        }
        self.kube.apply(document)
        return document

    def issued_key(self, name: str | None = None, timeout: float = 30, **spec: Any) -> str:
        """Apply an ApiKey and wait until it is Ready; the plaintext from its Secret."""
        name = self.apikey(name, **spec)["metadata"]["name"]
        # Ready and the Secret's name, read from one status (written in one patch).
        obj = wait_for(
            lambda: (
                (o := self.kube.get("apikey", name, self.control))
                and is_ready(o)
                and dig(o, "status", "secretRef")
                and o
            ),
            f"ApiKey {name} to be Ready, naming its Secret",
            timeout,
        )
        namespace, secret = obj["status"]["secretRef"].split("/")
        return remember(secret_key(self.kube, namespace, secret))


def secret_key(kube: Kube, namespace: str, name: str) -> str:
    secret = kube.get("secret", name, namespace)
    assert secret is not None, f"Secret {namespace}/{name} is missing"
    return base64.b64decode(secret["data"]["api-key"]).decode()


def ready_condition(obj: dict[str, Any] | None) -> tuple[str, str] | None:
    ready = condition(obj, "Ready")
    return (ready["status"], ready["reason"]) if ready else None


def now_iso(offset: float = 0) -> str:
    moment = time.time() + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + "Z"


def replicas(kube: Kube, world: World) -> int | None:
    """The tenant's instance Deployment's replicas: 0 while it is suspended."""
    deployment = kube.get("deployment", "instance-customer-instance", world.target)
    return None if deployment is None else int(deployment["spec"]["replicas"])


async def bill(api: ApiServer, world: World) -> list[dict[str, Any]]:
    """A billing run for the world's tenant, then its invoices as the API lists them."""
    async with api.admin() as admin:
        run = await admin.post(
            "/v1/admin/billing-runs",
            json={"tenant": {"namespace": world.control, "name": world.tenant}},
        )
        assert run.status_code == 200, run.text
        listed = await admin.get(f"/v1/admin/tenants/{world.control}/{world.tenant}/invoices")
    assert listed.status_code == 200, listed.text
    return listed.json()["invoices"]  # type: ignore[no-any-return]
