"""`make image`'s OCI archive, unpacked and run as the image's user would run it.

The image is built by `make image` (hack/image.sh), which rebuilds only when
its inputs changed, so the suite pays for a build once per change of the
sources or the lock file. Its layers are unpacked into a directory and its
entrypoint run there under chroot as user 10001: `tenantry --version`, helm
and the packaged chart, then the API against the session's PostgreSQL, Redis
and control plane until /healthz and /readyz answer.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import REPO, Kube, wait_for
from testbed import Redis, free_port

pytestmark = pytest.mark.cluster  # builds with mmdebstrap, runs the API against the test bed

UID = 10001
VENV = "/opt/tenantry/venv"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
"""Found on this machine's PATH: the processes get the image's."""


@dataclass
class Image:
    archive: Path
    config: dict[str, Any]
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The image's environment (its config's Env), as a runtime would set it."""
        pairs = (item.split("=", 1) for item in self.config["config"].get("Env", []))
        return {**dict(pairs), **extra}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHROOT, f"--userspec={UID}:{UID}", str(self.root), *args],
            env=self.env(**env), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


def blob(archive: tarfile.TarFile, digest: str) -> bytes:
    member = archive.extractfile(f"./blobs/{digest.replace(':', '/')}")
    assert member is not None, digest
    return member.read()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    assert os.geteuid() == 0, "the image test runs as root (mmdebstrap, chroot)"
    started = time.monotonic()
    build = subprocess.run(["make", "-s", "image"], cwd=REPO, capture_output=True, text=True,
                           timeout=1800, check=False)  # fmt: skip
    assert build.returncode == 0, f"make image failed:\n{build.stdout}{build.stderr}"
    print(f"\nmake image: {time.monotonic() - started:.0f} s\n{build.stderr.strip()}")
    archive_path = next((REPO / "build" / "image").glob("tenantry-*.oci.tar"))
    root = tmp_path_factory.mktemp("image") / "root"
    root.mkdir()
    with tarfile.open(archive_path) as archive:
        index = json.loads(blob_or_file(archive, "./index.json"))
        manifest = json.loads(blob(archive, index["manifests"][0]["digest"]))
        config = json.loads(blob(archive, manifest["config"]["digest"]))
        for layer in manifest["layers"]:
            data = blob(archive, layer["digest"])
            subprocess.run(["tar", "-xzf", "-", "-C", str(root)], input=data, check=True)
    # What a container runtime provides: device nodes (the image ships none).
    for name, minor in (("null", 3), ("zero", 5), ("urandom", 9)):
        node = root / "dev" / name
        node.parent.mkdir(exist_ok=True)
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        node.chmod(0o666)
    try:
        yield Image(archive_path, config, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def blob_or_file(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    assert member is not None, name
    return member.read()


def test_the_image_is_linux_amd64_non_root_with_the_tenantry_entrypoint(image: Image) -> None:
    size = image.archive.stat().st_size / 2**20
    print(f"\n{image.archive.name}: {size:.0f} MB")
    assert (image.config["os"], image.config["architecture"]) == ("linux", "amd64")
    config = image.config["config"]
    assert config["Entrypoint"] == [f"{VENV}/bin/tenantry"]
    assert config["User"] == f"{UID}:{UID}"
    passwd = (image.root / "etc" / "passwd").read_text()
    assert re.search(rf"^tenantry:x:{UID}:{UID}:", passwd, re.M), passwd


def test_tenantry_and_helm_run_from_the_image(image: Image) -> None:
    version = image.run(f"{VENV}/bin/tenantry", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "tenantry 0.1.0"
    helm = image.run("/usr/local/bin/helm", "version", "--short")
    assert helm.returncode == 0, helm.stderr
    assert helm.stdout.startswith("v3."), helm.stdout
    # The operator finds the customer-instance chart inside the package.
    chart = image.run(f"{VENV}/bin/python", "-c", "from tenantry.operator.settings import "
                      "OperatorSettings as S; print(S().chart_path)")  # fmt: skip
    assert chart.returncode == 0, chart.stderr
    path = chart.stdout.strip()
    assert path.startswith(f"{VENV}/lib/"), path
    assert (image.root / path.lstrip("/") / "Chart.yaml").is_file()


def test_the_image_installs_exactly_the_locked_versions(image: Image) -> None:
    locks = (REPO / "constraints.txt", REPO / "hack" / "image-constraints.txt")
    text = "\n".join(lock.read_text() for lock in locks)
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, re.M))
    pins = {name.lower().replace("_", "-"): v for name, v in pins.items()}
    site = next((image.root / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
    installed = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        text = metadata.read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", text, re.M)[1].strip()  # type: ignore[index]
        installed[name.lower().replace("_", "-")] = re.search(r"^Version: (.+)$", text, re.M)[1]  # type: ignore[index]
    assert installed.pop("tenantry") == "0.1.0"
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"installed but locked nowhere: {unpinned}"
    drift = {n: (v, pins[n]) for n, v in installed.items() if pins[n] != v}
    assert not drift, drift
    assert "pip" not in installed
    assert "pytest" not in installed


def test_both_builds_install_the_same_locked_requirements() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    script = (REPO / "hack" / "image.sh").read_text()
    # The same install step, from the same lock file, of the same Debian packages.
    for text in (dockerfile, script):
        assert "image-venv.sh" in text
        assert "constraints.txt" in text
        assert "image-constraints.txt" in text
        assert "image-packages.txt" in text
    assert re.search(r"RUN sh /tmp/build/image-venv\.sh /tmp/build/wheels "
                     r"/tmp/build/constraints\.txt \\\s+/tmp/build/image-constraints\.txt",
                     dockerfile)  # fmt: skip
    assert "'tenantry[server]'" in (REPO / "hack" / "image-venv.sh").read_text()
    assert "--no-index" in (REPO / "hack" / "image-venv.sh").read_text()
    helm = re.search(r"^HELM_VERSION=(\S+)$",
                     (REPO / "hack" / "install-tools.sh").read_text(), re.M)  # fmt: skip
    assert helm
    assert f"ARG HELM_VERSION={helm[1]}" in dockerfile
    assert 'ENTRYPOINT ["/opt/tenantry/venv/bin/tenantry"]' in dockerfile
    assert "USER 10001:10001" in dockerfile


def test_the_api_serves_healthz_from_the_image(
    image: Image, kube: Kube, database: str, redis_server: Redis
) -> None:
    kubeconfig = image.root / "tmp" / "kubeconfig"
    shutil.copy(kube.kubeconfig, kubeconfig)
    os.chown(kubeconfig, UID, UID)
    port = free_port()
    log = image.root / "tmp" / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CHROOT, f"--userspec={UID}:{UID}", str(image.root), f"{VENV}/bin/tenantry",
             "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
            env=image.env(
                KUBECONFIG="/tmp/kubeconfig",
                TENANTRY_DATABASE_URL=database,
                TENANTRY_REDIS_URL=redis_server.url,
                TENANTRY_ADMIN_TOKEN=secrets.token_hex(24),
                TENANTRY_INTROSPECTION_TOKEN=secrets.token_hex(24),
            ),
        )  # fmt: skip

    def healthz() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the API exited with {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthz, "the image's API /healthz", timeout=60, interval=0.2)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready", ready.text
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
