"""Session fixtures: real servers, started here, never skipped.

The control plane is the local one from hack/testbed.py unless
TENANTRY_TEST_KUBECONFIG points at another real cluster (kind, k3d).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    DRIFT_INTERVAL,
    REPO,
    SECRETS,
    SUBSCRIPTION_INTERVAL,
    Clock,
    Kube,
    OperatorProcess,
)
from testbed import ControlPlane, Postgres, Redis, StripeMock, ensure_tools, free_port


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """As the session ends: no log any server wrote (operator, API, control plane,
    PostgreSQL, Redis, stripe-mock) holds a credential the suite handled."""
    yield
    secrets = [s.encode() for s in SECRETS if len(s) >= 16]
    leaks = []
    for log in sorted(tmp_path_factory.getbasetemp().rglob("*.log")):
        content = log.read_bytes()
        leaks += [f"{log.name}: {s[:8].decode()}..." for s in secrets if s in content]
    assert not leaks, f"credentials in logs: {leaks}"


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    return ensure_tools("etcd", "kube-apiserver", "kube-controller-manager", "helm", "stripe-mock")


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, tools: dict[str, Path]
) -> Iterator[ControlPlane | None]:
    """The suite's own control plane; None with TENANTRY_TEST_KUBECONFIG (a cluster of
    yours, which the fault tests that restart kube-apiserver refuse to touch)."""
    if os.environ.get("TENANTRY_TEST_KUBECONFIG"):
        yield None
        return
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane | None, tools: dict[str, Path]) -> Kube:
    external = os.environ.get("TENANTRY_TEST_KUBECONFIG")
    kubeconfig = Path(external) if external else control_plane.kubeconfig  # type: ignore[union-attr]
    cluster = Kube(kubeconfig=kubeconfig, helm_binary=tools["helm"])
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for", "condition=Established", "crd", "-l", "", "--all",
                    "--timeout=60s")  # fmt: skip
    return cluster


@pytest.fixture(scope="session")
def database(postgres: Postgres) -> str:
    """The session's PostgreSQL with Tenantry's schema, migrated as a user would."""
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "tenantry"), "api", "migrate"],
        env={**os.environ, "TENANTRY_DATABASE_URL": postgres.url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return postgres.url


@pytest.fixture(scope="session")
def clock_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file whose seconds the operator and the API add to the system time
    (pass it as TENANTRY_CLOCK_OFFSET_FILE); tests move it through `clock`."""
    path = tmp_path_factory.mktemp("clock") / "offset"
    Clock(path).set(0)
    return path


@pytest.fixture
def clock(clock_file: Path) -> Iterator[Clock]:
    """Time as the suite's processes see it, to move forward; back to the system's
    after the test, since the other tests share the operator."""
    moved = Clock(clock_file)
    try:
        yield moved
    finally:
        moved.set(0)


@pytest.fixture(scope="session")
def operator(
    kube: Kube, database: str, clock_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """`tenantry operator`, recording API key hashes, license history and subscription
    terms in `database`, on the suite's clock."""
    process = OperatorProcess(
        kube,
        tmp_path_factory.mktemp("operator") / "operator.log",
        {
            "TENANTRY_OPERATOR_HELM": str(kube.helm_binary),
            "TENANTRY_OPERATOR_METRICS_PORT": str(free_port()),
            "TENANTRY_OPERATOR_DRIFT_INTERVAL": str(DRIFT_INTERVAL),
            "TENANTRY_OPERATOR_SUBSCRIPTION_INTERVAL": str(SUBSCRIPTION_INTERVAL),
            "TENANTRY_OPERATOR_DATABASE_URL": database,
            "TENANTRY_CLOCK_OFFSET_FILE": str(clock_file),
            # Webhooks out: the operator enqueues its events for endpoint `suite`; an API
            # configured with it delivers them (tests/api/test_outbound_webhooks.py).
            "TENANTRY_WEBHOOKS": '[{"name": "suite", "url": "http://127.0.0.1:9/", "events":'
            ' ["subscription.*", "tenant.*"], "secret": "suite-operator-webhook-secret"}]',
        },
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A real PostgreSQL server of the session's own; `.url` for SQLAlchemy (psycopg)."""
    server = Postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A real Redis server; tests may stop and restart it (`.stop()`, `.start(port=...)`)."""
    server = Redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stripe_mock(
    tmp_path_factory: pytest.TempPathFactory, tools: dict[str, Path]
) -> Iterator[StripeMock]:
    """Stripe's own stripe-mock; `.url` is its HTTP API base."""
    server = StripeMock(tmp_path_factory.mktemp("stripe-mock"))
    try:
        yield server.start()
    finally:
        server.stop()
