"""Helpers for tests that drive a real cluster the way a user does: kubectl and helm."""

from __future__ import annotations

import base64
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
DRIFT_INTERVAL = 3.0
"""Seconds between the operator's drift repairs in the tests."""


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


def is_ready(obj: dict[str, Any] | None) -> bool:
    ready = condition(obj, "Ready")
    return bool(ready and ready["status"] == "True")


class OperatorProcess:
    """`tenantry operator` as a user runs it, in a subprocess with its own log."""

    def __init__(self, kube: Kube, log: Path, env: dict[str, str]) -> None:
        self.kube = kube
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        from testbed import free_port

        self.port = free_port()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "tenantry"), "operator", "--standalone",
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


def subscription(name: str, namespace: str, tenant_name: str, plan_name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Subscription",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tenantRef": {"name": tenant_name}, "planRef": {"name": plan_name}},
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


def provision(kube: Kube, names: dict[str, str], **tenant_spec: Any) -> dict[str, Any]:
    kube.apply(
        plan(names["plan"]),
        subscription(names["tenant"], names["control"], names["tenant"], names["plan"]),
        tenant(names["tenant"], names["control"], **tenant_spec),
    )
    return ready_tenant(kube, names)


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
