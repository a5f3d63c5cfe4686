"""`make dev`: the whole of Tenantry on this machine, until Ctrl-C.

Starts the local control plane, PostgreSQL, Redis and stripe-mock (Stripe is
on, against it), installs the CRDs, runs the API service and the operator as
their commands (`tenantry api serve`, `tenantry operator`), applies the
samples, waits for the sample Tenant to be Ready and prints what to type next.
Ctrl-C, a closed terminal, SIGTERM or any failure midway (a prerequisite
missing, a server that does not start) stops everything it started, in
reverse order. State and logs live in .tenantry/dev/ (`TENANTRY_DEV_DIR`
moves .tenantry elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from testbed import (
    REPO,
    ControlPlane,
    Postgres,
    Redis,
    Service,
    StripeMock,
    TestbedError,
    ensure_tools,
    spawn,
)

ROOT = Path(os.environ.get("TENANTRY_DEV_DIR") or REPO / ".tenantry").absolute()
STATE = ROOT / "dev"
KUBECONFIG = ROOT / "kubeconfig"
DEV_ENV = ROOT / "dev.env"
"""What a person or a script needs to call the running API: `source .tenantry/dev.env`."""
API_PORT = int(os.environ.get("TENANTRY_DEV_API_PORT", "8000"))
TENANTRY = str(REPO / ".venv" / "bin" / "tenantry")


def kubectl(*args: str) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(KUBECONFIG), *args],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def wait_http(url: str, what: str, service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise TestbedError(f"{what} exited; see {service.log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TestbedError(f"{what} did not answer {url} within {timeout:.0f}s; see {service.log}")


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


PREREQUISITES = {
    "kubectl": "install kubectl (Debian: apt-get install kubernetes-client; or "
    "https://kubernetes.io/docs/tasks/tools/)",
}


def missing_prerequisites() -> list[str]:
    return [f"{name} not found: {how}" for name, how in PREREQUISITES.items()
            if shutil.which(name) is None]  # fmt: skip


def say(message: str, error: bool = False) -> None:
    """Print, unless the terminal or pipe is gone: stopping the servers matters more."""
    with contextlib.suppress(OSError):
        print(message, file=sys.stderr if error else sys.stdout, flush=True)


def main() -> int:
    for problem in missing_prerequisites():
        say(f"make dev: {problem}", error=True)
    if missing_prerequisites():
        return 1
    tools = ensure_tools("etcd", "kube-apiserver", "kube-controller-manager", "helm", "stripe-mock")
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    started: list[ControlPlane | Postgres | Redis | Service | StripeMock] = []

    def stop_all(*_: object) -> None:
        # A second Ctrl-C, or a closed terminal, must not abandon running servers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        say("\nStopping…")
        for thing in reversed(started):
            thing.stop()
        KUBECONFIG.unlink(missing_ok=True)
        DEV_ENV.unlink(missing_ok=True)
        say("Stopped everything make dev started.")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        say("Starting the control plane (etcd, kube-apiserver, kube-controller-manager)…")
        plane = ControlPlane(STATE / "cluster")
        started.append(plane)
        plane.start()
        shutil.copy(plane.kubeconfig, KUBECONFIG)
        say("Starting PostgreSQL and Redis…")
        postgres = Postgres(STATE / "postgres")
        started.append(postgres)
        postgres.start()
        redis = Redis(STATE / "redis")
        started.append(redis)
        redis.start()
        say("Starting stripe-mock (Stripe's own mock server)…")
        stripe_mock = StripeMock(STATE / "stripe-mock")
        started.append(stripe_mock)
        stripe_mock.start()
        webhook_secret = f"whsec_{secrets.token_hex(24)}"

        kubectl("apply", "-f", str(REPO / "crds"))
        kubectl("wait", "--for", "condition=Established", "crd", "--all", "--timeout=60s")

        admin_token = secrets.token_urlsafe(24)
        env = {
            "KUBECONFIG": str(KUBECONFIG),
            "TENANTRY_ENVIRONMENT": "development",
            "TENANTRY_DATABASE_URL": postgres.url,
            "TENANTRY_REDIS_URL": redis.url,
            "TENANTRY_ADMIN_TOKEN": admin_token,
            "TENANTRY_INTROSPECTION_TOKEN": secrets.token_urlsafe(24),
            "TENANTRY_OPERATOR_HELM": str(tools["helm"]),
            "TENANTRY_OPERATOR_DATABASE_URL": postgres.url,
            # Stripe on, against stripe-mock: sync out, webhooks in, invoice items.
            "TENANTRY_STRIPE_API_KEY": "sk_test_tenantry_dev",
            "TENANTRY_STRIPE_API_BASE": stripe_mock.url,
            "TENANTRY_STRIPE_WEBHOOK_SECRET": webhook_secret,
            "TENANTRY_OPERATOR_STRIPE_API_KEY": "sk_test_tenantry_dev",
            "TENANTRY_OPERATOR_STRIPE_API_BASE": stripe_mock.url,
            "TENANTRY_BILLING_SELLER_NAME": "Example SaaS Ltd",
            "TENANTRY_BILLING_SELLER_COUNTRY": "DE",
        }
        say(f"Starting the API service on http://127.0.0.1:{API_PORT}…")
        api = spawn(
            "api",
            [TENANTRY, "api", "serve", "--host", "127.0.0.1", "--port", str(API_PORT)],
            STATE,
            env,
        )
        started.append(api)
        wait_http(f"http://127.0.0.1:{API_PORT}/readyz", "the API service", api)
        DEV_ENV.write_text(
            "# Written by `make dev` for this session; removed when it stops.\n"
            f"export TENANTRY_API_URL=http://127.0.0.1:{API_PORT}\n"
            f"export TENANTRY_ADMIN_TOKEN={admin_token}\n"
            f"export TENANTRY_STRIPE_WEBHOOK_SECRET={webhook_secret}\n"
            f"export STRIPE_MOCK_URL={stripe_mock.url}\n"
            f"export KUBECONFIG={KUBECONFIG}\n"
        )
        DEV_ENV.chmod(0o600)
        say("Starting the operator…")
        operator = spawn(
            "operator",
            [TENANTRY, "operator", "--standalone", "--liveness", "http://127.0.0.1:8081/healthz"],
            STATE,
            env,
        )
        started.append(operator)
        wait_http("http://127.0.0.1:8081/healthz", "the operator", operator)

        kubectl("apply", "-f", str(REPO / "manifests" / "samples"))
        say("Applied manifests/samples; waiting for Tenant customers/acme…")
        kubectl(
            "wait", "-n", "customers", "tenant/acme", "--for", "condition=Ready", "--timeout=90s"
        )
        kube = f"kubectl --kubeconfig {shown(KUBECONFIG)}"
        say(
            f"""
Tenantry is running.

  {kube} get tenants,subscriptions,apikeys -A
  {kube} get plans
  {kube} describe tenant -n customers acme
  {kube} get all,secrets -n tenant-acme
  curl -s http://127.0.0.1:{API_PORT}/readyz
  curl -s http://127.0.0.1:{API_PORT}/v1/license/jwks.json

An instance's API key: {kube} get secret -n tenant-acme acme-instance -o jsonpath='{{.data}}'
Admin token (this session only): {admin_token}, also in {shown(DEV_ENV)}:
  source {shown(DEV_ENV)}
  curl -s -H "Authorization: Bearer $TENANTRY_ADMIN_TOKEN" \\
    $TENANTRY_API_URL/v1/admin/tenants/customers/acme/invoices
Logs: {shown(STATE)}/{{operator,api,kube-apiserver,postgres,redis}}.log

Press Ctrl-C to stop everything."""
        )
        while True:
            for service in (api, operator):
                if service.process.poll() is not None:
                    raise TestbedError(f"{service.name} exited; see {service.log}")
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    except (TestbedError, subprocess.CalledProcessError, OSError) as error:
        detail = error.stderr if isinstance(error, subprocess.CalledProcessError) else error
        say(f"make dev: {detail}", error=True)
        return 1
    finally:  # whatever ended it, an error of any kind included
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
