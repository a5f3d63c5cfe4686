"""`pip install .[server]` alone, no dev extra: the API starts and is ready.

The suite itself runs from `.venv`, which has the dev extra too, so a runtime
dependency declared only in `dev` would go unnoticed there. Here the service
runs from a virtualenv of its own with `.[server]` alone, pinned by
constraints.txt, against the session's PostgreSQL, Redis and control plane.

That virtualenv's dependencies are cached in ~/.cache/tenantry/venvs, keyed by
pyproject.toml, constraints.txt and the interpreter; the project itself is
installed on top of them, not editable and without dependencies, from a copy
of today's sources at every run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import REPO, Kube, wait_for
from testbed import Redis, free_port

pytestmark = pytest.mark.cluster

CONSTRAINTS = REPO / "constraints.txt"
VENVS = Path.home() / ".cache" / "tenantry" / "venvs"
READY = "tenantry-deps-ready"
"""Marker file of a complete cached virtualenv; its mtime is the last use."""
UNUSED_FOR = 14 * 24 * 3600
"""Cached virtualenvs unused for this long (seconds) are removed."""
DEV_ONLY = ("pytest", "mypy", "ruff", "jwcrypto")
"""Distributions only the dev extra brings."""


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=900, cwd=cwd, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def copy_sources(target: Path) -> Path:
    """What `pip install .` reads, without the checkout's build/ and *.egg-info."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    target.mkdir(parents=True)
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy2(REPO / name, target / name)
    for folder in pyproject["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(
            REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target


def cache_key() -> str:
    digest = hashlib.sha256()
    for part in ((REPO / "pyproject.toml").read_bytes(), CONSTRAINTS.read_bytes(),
                 f"{sys.version}|{sys.platform}|{sys.base_prefix}".encode()):  # fmt: skip
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def prune(keep: Path) -> None:
    """Remove cached virtualenvs nobody used for a while (and nobody is using now)."""
    for venv in VENVS.iterdir():
        marker = venv / READY
        if venv == keep or not venv.is_dir():
            continue
        if marker.exists() and time.time() - marker.stat().st_mtime < UNUSED_FOR:
            continue
        with venv.with_suffix(".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(venv, ignore_errors=True)
        venv.with_suffix(".lock").unlink(missing_ok=True)


@pytest.fixture
def server_venv(tmp_path: Path) -> Iterator[Path]:
    """A virtualenv with `.[server]` alone and today's Tenantry, held (locked) for the test."""
    sources = copy_sources(tmp_path / "src")
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / cache_key()
    python = venv / "bin" / "python"
    with venv.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / READY).exists():
            shutil.rmtree(venv, ignore_errors=True)
            run(sys.executable, "-m", "venv", "--upgrade-deps", venv)
            run(python, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, f"{sources}[server]")
            run(python, "-m", "pip", "uninstall", "-q", "-y", "tenantry")
            (venv / READY).touch()
            prune(keep=venv)
        # The project as it is now: its dependencies cannot have changed (the
        # key covers pyproject.toml), its sources may have.
        run(python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", sources)
        (venv / READY).touch()
        yield venv


def test_a_server_only_install_serves_readyz(
    server_venv: Path, kube: Kube, database: str, redis_server: Redis, tmp_path: Path
) -> None:
    python = server_venv / "bin" / "python"
    installed = run(python, "-m", "pip", "list", "--format=freeze").lower()
    dev = [name for name in DEV_ONLY if f"\n{name}==" in f"\n{installed}"]
    assert not dev, f"the server-only virtualenv has dev packages: {dev}"
    location = run(python, "-c", "import tenantry.api.app as m; print(m.__file__)", cwd=tmp_path)
    assert location.startswith(str(server_venv)), f"Tenantry imported from {location}"
    version = run(server_venv / "bin" / "tenantry", "--version", cwd=tmp_path)
    assert version.strip() == "tenantry 0.1.0", version
    # The operator's chart is package data: no CHART_PATH needed.
    chart = run(python, "-c", "from tenantry.operator.settings import OperatorSettings as S; "
                "print(S().chart_path)", cwd=tmp_path).strip()  # fmt: skip
    assert chart.startswith(str(server_venv)), f"the chart is read from {chart}"
    assert (Path(chart) / "Chart.yaml").is_file()
    assert (Path(chart) / "templates" / "deployment.yaml").is_file()

    port = free_port()
    # Nothing of this process's environment may point the server at `.venv`.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("TENANTRY_")
    }
    env = {
        **inherited,
        "KUBECONFIG": str(kube.kubeconfig),
        "TENANTRY_ENVIRONMENT": "production",
        "TENANTRY_DATABASE_URL": database,
        "TENANTRY_REDIS_URL": redis_server.url,
        "TENANTRY_ADMIN_TOKEN": secrets.token_hex(24),
        "TENANTRY_INTROSPECTION_TOKEN": secrets.token_hex(24),
    }
    log = tmp_path / "api.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(server_venv / "bin" / "tenantry"), "api", "serve",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip

    def healthz() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the API exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        # It serves once start-up (migrations, Redis, Kubernetes client) is done.
        wait_for(healthz, "the server-only API's /healthz", timeout=60, interval=0.2)
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        body = response.json()
        assert (body["status"], body["database"], body["redis"]) == ("ready", "ok", "ok"), body
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
