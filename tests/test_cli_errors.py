"""The `tenantry` command when things are wrong, and its `--output json`.

Each case runs the installed entry point (`.venv/bin/tenantry`) in a fresh
process, as a user would, against real servers or real closed ports: the
answer must be one line on stderr saying what is wrong and what to do, no
traceback, exit 2 for a wrong command line or setting and 1 for a failure of
something the command needs, and never a password.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import REPO, Kube
from testbed import Postgres

TENANTRY = str(REPO / ".venv" / "bin" / "tenantry")
PASSWORD = "s3cret-never-shown"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home without ~/.kube/config, so only what a case sets is configured."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def tenantry(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    clean.pop("KUBECONFIG", None)
    return subprocess.run(
        [TENANTRY, *args], env={**clean, "HOME": str(home), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The single stderr line of a failed run that exited with `status`."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert result.returncode == status, result.stderr
    return lines[0]


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "a-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    return path


# ------------------------------------------------------------------ Kubernetes


def test_no_kubeconfig(home: Path, tmp_path: Path) -> None:
    line = one_line(tenantry("keys", "rotate", home=home, KUBECONFIG=str(tmp_path / "none")), 1)
    assert line.startswith("tenantry: no Kubernetes configuration (")
    assert line.endswith(
        "set KUBECONFIG to a kubeconfig file, or run in a Pod with a service account"
    )


@pytest.mark.parametrize("command", [["keys", "rotate"], ["operator", "--standalone"]])
def test_unreachable_cluster(
    command: list[str], home: Path, tmp_path: Path, closed_port: int
) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{closed_port}")
    line = one_line(
        tenantry(*command, home=home, KUBECONFIG=str(config), TENANTRY_OPERATOR_HELM="/bin/true"),
        1,
    )
    assert line == (
        f"tenantry: cannot reach Kubernetes at https://127.0.0.1:{closed_port} (connection "
        "refused): start the cluster, or point KUBECONFIG at one that runs"
    )


def test_operator_without_helm(home: Path, tmp_path: Path) -> None:
    line = one_line(
        tenantry("operator", home=home, TENANTRY_OPERATOR_HELM=str(tmp_path / "helm")), 1
    )
    assert line == (
        f"tenantry: no helm executable '{tmp_path / 'helm'}': install helm (make tools builds "
        "it), or set TENANTRY_OPERATOR_HELM to its path"
    )


# ------------------------------------------------------------------ PostgreSQL


def test_database_refusing_connections(home: Path, closed_port: int) -> None:
    url = f"postgresql+psycopg://tenantry:{PASSWORD}@127.0.0.1:{closed_port}/tenantry"
    line = one_line(tenantry("api", "migrate", home=home, TENANTRY_DATABASE_URL=url), 1)
    assert line == (
        f"tenantry: cannot reach PostgreSQL at 127.0.0.1:{closed_port} (connection refused): "
        "start it or set TENANTRY_DATABASE_URL"
    )


def test_database_that_does_not_exist(home: Path, postgres: Postgres) -> None:
    url = postgres.url.rsplit("/", 1)[0] + "/no_such_database"
    line = one_line(tenantry("api", "migrate", home=home, TENANTRY_DATABASE_URL=url), 1)
    assert 'database "no_such_database" does not exist' in line
    assert line.endswith("fix the URL or set TENANTRY_DATABASE_URL")


def test_database_url_of_another_kind(home: Path) -> None:
    url = f"mysql://tenantry:{PASSWORD}@db.example/tenantry"
    line = one_line(tenantry("api", "migrate", home=home, TENANTRY_DATABASE_URL=url), 2)
    assert line == (
        "tenantry: TENANTRY_DATABASE_URL is not a database URL: write "
        "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
    )


# ----------------------------------------------------------------------- Redis


def test_redis_unreachable_when_serving_fails_closed(
    home: Path, tmp_path: Path, postgres: Postgres, closed_port: int
) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1")  # read, not reached
    line = one_line(
        tenantry(
            "api", "serve", home=home, KUBECONFIG=str(config), TENANTRY_ENVIRONMENT="development",
            TENANTRY_DATABASE_URL=postgres.url,
            TENANTRY_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0",
            TENANTRY_REDIS_FAILURE_MODE="fail_closed",
        ),
        1,
    )  # fmt: skip
    assert line == (
        f"tenantry: cannot reach Redis at 127.0.0.1:{closed_port} (connection refused): "
        "start it or set TENANTRY_REDIS_URL"
    )


# --------------------------------------------------------- settings, arguments


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (["operator"], {"TENANTRY_OPERATOR_METRICS_PORT": "eighty"},
         "tenantry: bad setting: TENANTRY_OPERATOR_METRICS_PORT: Input should be a valid "
         "integer, unable to parse string as an integer: fix it, or unset it"),
        (["api", "migrate"], {"TENANTRY_DATABASE_POOL_SIZE": "0"},
         "tenantry: bad setting: TENANTRY_DATABASE_POOL_SIZE: Input should be greater than or "
         "equal to 1: fix it, or unset it"),
        (["api", "serve"], {"TENANTRY_BILLING_DUE_DAYS": "soon"},
         "tenantry: bad setting: TENANTRY_BILLING_DUE_DAYS: Input should be a valid integer, "
         "unable to parse string as an integer: fix it, or unset it"),
        (["operator"], {"TENANTRY_OPERATOR_CHART_PATH": "/nowhere"},
         "tenantry: no chart at /nowhere: set TENANTRY_OPERATOR_CHART_PATH to the "
         "customer-instance chart's folder, or unset it for the packaged one"),
    ],
)  # fmt: skip
def test_bad_setting(command: list[str], env: dict[str, str], expected: str, home: Path) -> None:
    env = {"TENANTRY_ENVIRONMENT": "development", "TENANTRY_OPERATOR_HELM": "/bin/true", **env}
    assert one_line(tenantry(*command, home=home, **env), 2) == expected


def test_placeholder_token_when_serving(home: Path) -> None:
    line = one_line(tenantry("api", "serve", home=home), 2)
    assert line.startswith("tenantry: TENANTRY_ADMIN_TOKEN is empty, a placeholder")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["quote"], "tenantry quote: the following arguments are required: --plan: "
                    "see tenantry quote --help"),
        (["nonsense"], "tenantry: argument command: invalid choice: 'nonsense' (choose from "
                       "'version', 'operator', 'keys', 'crds', 'quote', 'api'): "
                       "see tenantry --help"),
        (["version", "--output", "xml"], "tenantry version: argument --output/-o: invalid "
                                         "choice: 'xml' (choose from 'text', 'json'): "
                                         "see tenantry version --help"),
        (["quote", "--plan", "missing.yaml"], "tenantry quote: cannot read missing.yaml: "
                                              "no such file"),
    ],
)  # fmt: skip
def test_bad_arguments(args: list[str], expected: str, home: Path) -> None:
    assert one_line(tenantry(*args, home=home), 2) == expected


# -------------------------------------------------------------- --output json


def test_version(home: Path) -> None:
    text = tenantry("version", home=home)
    flag = tenantry("--version", home=home)
    data = tenantry("version", "--output", "json", home=home)
    assert text.returncode == flag.returncode == data.returncode == 0
    version = json.loads(data.stdout)["version"]
    assert text.stdout == flag.stdout == f"tenantry {version}\n"


def test_migrate(home: Path, postgres: Postgres) -> None:
    fresh = f"cli_{uuid.uuid4().hex[:8]}"
    with postgres_database(postgres, fresh) as url:
        first = tenantry("api", "migrate", "-o", "json", home=home, TENANTRY_DATABASE_URL=url)
        again = tenantry("api", "migrate", "-o", "json", home=home, TENANTRY_DATABASE_URL=url)
        text = tenantry("api", "migrate", home=home, TENANTRY_DATABASE_URL=url)
    assert (first.returncode, again.returncode, text.returncode) == (0, 0, 0), first.stderr
    applied = json.loads(first.stdout)["applied"]
    assert applied, first.stdout
    assert all(isinstance(name, str) for name in applied)
    assert json.loads(again.stdout) == {"applied": []}
    assert text.stdout == "The schema is up to date.\n"


@contextlib.contextmanager
def postgres_database(server: Postgres, name: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(server.url).set(drivername="postgresql")
    libpq = admin.render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(libpq, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_quote(home: Path) -> None:
    plan = str(REPO / "manifests" / "samples" / "plan-professional.yaml")
    text = tenantry("quote", "--plan", plan, home=home)
    data = tenantry("quote", "--plan", plan, "--output", "json", home=home)
    assert text.returncode == data.returncode == 0, text.stderr + data.stderr
    quote = json.loads(data.stdout)
    assert quote == json.loads(tenantry("quote", "--plan", plan, "--json", home=home).stdout)
    total = text.stdout.splitlines()[-1].split()
    assert total[0] == "total"
    assert total[-1] == quote["currency"]
    assert f"Plan {quote['plan']} " in text.stdout


@pytest.mark.cluster
def test_keys_rotate(home: Path, kube: Kube) -> None:
    namespace = f"cli-keys-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    env = {"KUBECONFIG": str(kube.kubeconfig), "TENANTRY_OPERATOR_NAMESPACE": namespace}
    try:
        data = tenantry("keys", "rotate", "-o", "json", home=home, **env)
        text = tenantry("keys", "rotate", home=home, **env)
        secret = kube.get("secret", "tenantry-signing-keys", namespace)
    finally:
        kube.delete("namespace", namespace)
    assert data.returncode == text.returncode == 0, data.stderr + text.stderr
    rotated = json.loads(data.stdout)
    assert rotated["secret"] == f"{namespace}/tenantry-signing-keys"
    assert isinstance(rotated["dropped"], list)
    first_line = text.stdout.splitlines()[0]
    assert first_line.startswith("New signing key ")
    assert first_line.endswith(f" in Secret {rotated['secret']}.")
    second_kid = first_line.removeprefix("New signing key ").split(" ")[0]
    assert secret is not None
    assert rotated["kid"] != second_kid
