"""Helpers for tests that drive a real cluster the way a user does: kubectl and helm."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tenantry import license as lic

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent

SECRETS: set[str] = set()
"""Every credential the suite has handled (tokens, API keys, licenses, webhook secrets):
no log of the suite may contain one (checked as the session ends, tests/conftest.py)."""


def secret(value: str) -> str:
    """Remember a credential, and give it back."""
    SECRETS.add(value)
    return value


DRIFT_INTERVAL = 3.0
"""Seconds between the operator's drift repairs in the tests."""
SUBSCRIPTION_INTERVAL = 1.0
"""Seconds between the operator's passes over each Subscription in the tests: a
subscription's state follows a moved clock within seconds."""


def b64url(data: bytes) -> str:
    """Unpadded base64url, as in JOSE."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


NOT_YET: tuple[type[Exception], ...] = (LookupError, TypeError, AttributeError, StopIteration)
"""What a check raises while what it reads is still being written: a key or an item
that is not there yet (KeyError, IndexError, `next` without a default), or a None
where a mapping will be (TypeError, AttributeError)."""


def wait_for(check: Callable[[], T], what: str, timeout: float = 30, interval: float = 0.2) -> T:
    """Poll until `check` returns something truthy; fail saying what never happened.

    A check that raises one of NOT_YET has not succeeded *yet*, and polling goes
    on; one that still raises at the deadline fails with that error's type and
    message (and the error as the cause). Anything else a check raises, such as
    the AssertionError of a failed kubectl or of a process that exited, fails at
    once. `check` runs at least once, and once more after the last sleep.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    error: Exception | None = None
    raised = False
    while True:
        try:
            last = check()
        except NOT_YET as exc:
            error, raised = exc, True
        else:
            if last:
                return last
            raised = False
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    failure = f"timed out after {timeout}s waiting for {what}"
    if error is None:
        raise AssertionError(f"{failure}; last saw {last!r}")
    raised_text = f"{type(error).__name__}: {error}"
    if raised:
        raise AssertionError(f"{failure}; the check still raised {raised_text}") from error
    raise AssertionError(
        f"{failure}; last saw {last!r} (an earlier check raised {raised_text})"
    ) from error


@dataclass
class Kube:
    kubeconfig: Path
    helm_binary: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.kubectl(*args)
        return json.loads(out) if out.strip() else None

    def delete(
        self, kind: str, name: str, namespace: str | None = None, wait: bool = False
    ) -> None:
        args = ["delete", kind, name, "--ignore-not-found", f"--wait={str(wait).lower()}"]
        if namespace:
            args += ["-n", namespace]
        self.kubectl(*args)

    def helm(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.helm_binary), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def releases(self, namespace: str, *, all_states: bool = False) -> list[dict[str, Any]]:
        """`helm list`: the latest revision of each release in `namespace`.

        Plain `helm list` shows only deployed and failed releases, so a release
        being installed or upgraded (pending-install, pending-upgrade) is missing
        from it until helm is done; `all_states` (`helm list --all`) shows every
        release whatever its status.
        """
        args = ["list", "-n", namespace, "-o", "json"]
        if all_states:
            args.append("--all")
        return json.loads(self.helm(*args) or "[]")  # type: ignore[no-any-return]

    def release(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The latest revision of release `name` whatever its status, None when there is none.

        Check `status` ("deployed", "pending-upgrade", "failed"...) before
        trusting the rest: mid-upgrade, `revision` is already the new one.
        `revision` is a string, as helm prints it.
        """
        return next(
            (r for r in self.releases(namespace, all_states=True) if r.get("name") == name), None
        )


def dig(obj: Any, *path: str | int) -> Any:
    """`obj[path[0]][path[1]]...`, or None where a step is missing or null: an
    object read while it is still being written, in a wait's check."""
    for step in path:
        if isinstance(obj, dict):
            obj = obj.get(step)
        elif isinstance(obj, list) and isinstance(step, int) and -len(obj) <= step < len(obj):
            obj = obj[step]
        else:
            return None
    return obj


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return item  # type: ignore[no-any-return]
    return None


def reason(obj: dict[str, Any] | None, type_: str) -> str | None:
    """The reason of condition `type_`, None while there is none."""
    found = condition(obj, type_)
    return found["reason"] if found else None


def is_ready(obj: dict[str, Any] | None) -> bool:
    ready = condition(obj, "Ready")
    return bool(ready and ready["status"] == "True")


class OperatorProcess:
    """`tenantry operator` as a user runs it, in a subprocess with its own log."""

    def __init__(
        self, kube: Kube, log: Path, env: dict[str, str], args: tuple[str, ...] = ("--standalone",)
    ) -> None:
        self.kube = kube
        self.log = log
        self.env = env
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        from testbed import free_port

        self.port = free_port()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "tenantry"), "operator", *self.args,
                 "--liveness", f"http://127.0.0.1:{self.port}/healthz"],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kube.kubeconfig), **self.env},
            )  # fmt: skip
        wait_for(self._alive, "the operator's liveness endpoint", timeout=60)

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class FixedClock:
    """A clock for in-process services: it says `now` until a test moves it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Clock:
    """The offset the suite's operator and API add to the system time, in the file
    TENANTRY_CLOCK_OFFSET_FILE names (see core/clock.py). Moving it moves time for
    every process that reads the file; the `clock` fixture puts it back after a test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> dt.timedelta:
        text = self.path.read_text().strip() if self.path.exists() else ""
        return dt.timedelta(seconds=float(text or 0))

    def now(self) -> dt.datetime:
        """The time the operator and the API see."""
        return dt.datetime.now(dt.UTC) + self.offset()

    def set(self, offset: dt.timedelta | float) -> None:
        """Make the processes see the system time plus `offset` (seconds, or a timedelta)."""
        seconds = offset.total_seconds() if isinstance(offset, dt.timedelta) else float(offset)
        before = self.path.stat().st_mtime_ns if self.path.exists() else 0
        scratch = self.path.with_name(self.path.name + ".new")
        scratch.write_text(f"{seconds}\n")
        # Readers re-read the file when its mtime or size changes: two writes within
        # the file system's timestamp granularity must still differ in mtime.
        stamp = max(time.time_ns(), before + 1)
        os.utime(scratch, ns=(stamp, stamp))
        os.replace(scratch, self.path)

    def advance(self, days: float = 0, seconds: float = 0) -> None:
        self.set(self.offset() + dt.timedelta(days=days, seconds=seconds))

    def move_past(self, moment: dt.datetime, by: dt.timedelta = dt.timedelta(minutes=1)) -> None:
        """Set the offset so that the processes' time is `by` after `moment`."""
        self.set(moment + by - dt.datetime.now(dt.UTC))


def events(kube: Kube, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    """The Events about one object, as `kubectl get events` lists them."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    out = kube.kubectl("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json")
    return json.loads(out)["items"]  # type: ignore[no-any-return]


def event_reasons(kube: Kube, namespace: str, kind: str, name: str) -> list[str]:
    return [event["reason"] for event in events(kube, namespace, kind, name)]


# ----------------------------------------------------------- Tenantry objects

API = "tenantry.io/v1alpha1"


def plan(name: str, devices: int = 50, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {
            "displayName": name.title(),
            "price": {"amount": 9900, "currency": "USD", "interval": "month"},
            "features": {"ota_updates": True, "data_export": False},
            "limits": {"devices": devices, "users": -1},
            **spec,
        },
    }


def tenant(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Tenant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"displayName": f"{name} Inc", "billingEmail": f"billing@{name}.example", **spec},
    }


def subscription(
    name: str, namespace: str, tenant_name: str, plan_name: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Subscription",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tenantRef": {"name": tenant_name}, "planRef": {"name": plan_name}, **spec},
    }


def unique_names(kube: Kube) -> dict[str, str]:
    """Unique names, and a control namespace of the test's own."""
    suffix = uuid.uuid4().hex[:6]
    control = f"customers-{suffix}"
    kube.kubectl("create", "namespace", control)
    return {
        "control": control,
        "tenant": f"acme-{suffix}",
        "plan": f"pro-{suffix}",
        "target": f"tenant-acme-{suffix}",
    }


def get_tenant(kube: Kube, names: dict[str, str]) -> dict[str, Any] | None:
    return kube.get("tenant", names["tenant"], names["control"])


def ready_tenant(kube: Kube, names: dict[str, str], timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: (t := get_tenant(kube, names)) and is_ready(t) and t,
        f"Tenant {names['tenant']} to be Ready",
        timeout,
    )


def license_secret(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return kube.get("secret", "tenantry-license", namespace)


def decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def license_claims(kube: Kube, namespace: str) -> dict[str, Any] | None:
    """The claims of the license in a tenant namespace's Secret, unverified (the
    signature is tested on its own); None while there is none."""
    stored = license_secret(kube, namespace)
    if not stored or "license.jwt" not in (stored.get("data") or {}):
        return None
    token = secret(decoded(stored, "license.jwt"))
    return json.loads(unb64url(token.split(".")[1]))  # type: ignore[no-any-return]


def provision(kube: Kube, names: dict[str, str], **tenant_spec: Any) -> dict[str, Any]:
    """A Plan, a Subscription and a Tenant, Ready with a license issued from the
    Subscription's status: one issued before the Subscription had a status is
    re-issued once it has, and a test comparing license ids must not see that."""
    kube.apply(
        plan(names["plan"]),
        subscription(names["tenant"], names["control"], names["tenant"], names["plan"]),
        tenant(names["tenant"], names["control"], **tenant_spec),
    )
    period = wait_for(
        lambda: dig(
            kube.get("subscription", names["tenant"], names["control"]), "status", "currentPeriod"
        ),
        f"Subscription {names['tenant']} to have a current period",
    )
    period_end = int(dt.datetime.fromisoformat(period["end"]).timestamp())
    return wait_for(
        lambda: (
            (t := get_tenant(kube, names))
            and is_ready(t)
            and (claims := license_claims(kube, names["target"]))
            and claims["jti"] == dig(t, "status", "license", "id")
            and claims["subscription"].get("currentPeriodEnd") == period_end
            and t
        ),
        f"Tenant {names['tenant']} to hold a license of its Subscription's current period",
    )


def published_keys(kube: Kube) -> lic.KeySet:
    """The public keys of every signing key the operator keeps (its Secret)."""
    secret = kube.get("secret", "tenantry-signing-keys", "tenantry-system")
    assert secret is not None, "the operator created no signing-key Secret"
    data = {key: decoded(secret, key) for key in secret["data"]}
    return lic.KeyRing.from_secret_data(data).public_keys()


def service_account_kubeconfig(kube: Kube, account: str, path: Path) -> Path:
    """A kubeconfig acting as a ServiceAccount of manifests/deploy (applied here)."""
    deploy = REPO / "manifests" / "deploy"
    kube.kubectl("apply", "-f", str(deploy / "00-namespace.yaml"), "-f", str(deploy / "rbac.yaml"))
    token = kube.kubectl(
        "create", "token", account, "-n", "tenantry-system", "--duration=1h"
    ).strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def apply_tenants(kube: Kube, count: int) -> list[dict[str, str]]:
    """`count` Tenants, each with its Subscription, on one new Plan, in one control namespace."""
    first = unique_names(kube)
    control, plan_name = first["control"], first["plan"]
    tenants = [
        {**first, "tenant": f"{first['tenant']}-{i}", "target": f"{first['target']}-{i}"}
        for i in range(count)
    ]
    documents = [plan(plan_name)]
    for names in tenants:
        documents.append(subscription(names["tenant"], control, names["tenant"], plan_name))
        documents.append(tenant(names["tenant"], control))
    kube.apply(*documents)
    return tenants


def all_ready(kube: Kube, tenants: list[dict[str, str]], timeout: float = 120) -> None:
    """Wait until every Tenant is Ready with its license issued and stored."""
    for names in tenants:
        wait_for(
            lambda names=names: (
                (t := get_tenant(kube, names))
                and is_ready(t)
                and dig(t, "status", "license", "id")
                and license_secret(kube, names["target"])
            ),
            f"Tenant {names['tenant']} to be Ready",
            timeout,
        )
