"""`make dev` (hack/dev.py) leaves nothing running when it cannot finish.

It runs in a state folder of its own (`TENANTRY_DEV_DIR`) with a marker in its
environment, which every server it starts inherits; afterwards no process on
the machine may still carry the marker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.cluster  # starts the real servers

DEV = REPO / "hack" / "dev.py"


def run_dev(tmp_path: Path, path: str) -> tuple[subprocess.CompletedProcess[str], str]:
    marker = uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, str(DEV)],
        env={**os.environ, "PATH": path, "TENANTRY_DEV_DIR": str(tmp_path / "dev-root"),
             "TENANTRY_DEV_MARKER": marker, "TENANTRY_DEV_API_PORT": "0"},
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )  # fmt: skip
    return result, marker


def still_running(marker: str) -> list[str]:
    """The command lines of the processes whose environment holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"TENANTRY_DEV_MARKER={marker}".encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


def test_a_missing_prerequisite_is_named_before_anything_starts(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result, marker = run_dev(tmp_path, str(empty))
    assert result.returncode == 1
    assert result.stderr.startswith("make dev: kubectl not found: install kubectl"), result.stderr
    assert not (tmp_path / "dev-root" / "dev").exists()
    assert still_running(marker) == []


def test_a_failure_midway_stops_what_was_started(tmp_path: Path) -> None:
    # A kubectl that fails: the control plane, PostgreSQL, Redis and stripe-mock are
    # up by the time it is first used.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kubectl").write_text("#!/bin/sh\necho 'kubectl: broken on purpose' >&2\nexit 1\n")
    (fake / "kubectl").chmod(0o755)
    result, marker = run_dev(tmp_path, f"{fake}:{os.environ['PATH']}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Starting stripe-mock" in result.stdout
    assert "make dev: kubectl: broken on purpose" in result.stderr
    assert "Stopped everything make dev started." in result.stdout
    assert still_running(marker) == []
    assert not (tmp_path / "dev-root" / "kubeconfig").exists()
